"""The embedded digits (UCI Optical Recognition of Handwritten Digits, CC BY
4.0; `keras_spela/datasets/data/digits.npz`) and the same digits pasted on a
larger canvas: small offline image tasks with the project's fixed split."""

import functools
import importlib.resources

import numpy as np

DIGITS_NUM_CLASSES = 10
"""Number of classes of the digits data (the digits 0..9)."""

DIGITS_IMAGE_SHAPE = (8, 8, 1)
"""Shape of one digits image when `flatten=False` (height, width, channels)."""

DIGITS_NUM_EXAMPLES = 1797
"""Number of examples in the shipped digits data (train plus test)."""

DIGITS_NUM_TRAIN = 1437
"""Size of the project's standard digits training split (the rest, 360,
is the test split)."""

_DIGITS_MAX_VALUE = 16


@functools.lru_cache(maxsize=1)
def _read_digits_npz():
    """Reads the shipped digits arrays once (uint8 images and labels)."""
    resource = importlib.resources.files("keras_spela.datasets") / "data" / "digits.npz"
    with importlib.resources.as_file(resource) as path:
        with np.load(path) as data:
            images = data["images"]
            labels = data["labels"]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits(split_seed=0, num_train=DIGITS_NUM_TRAIN, flatten=True, normalize=True):
    """Loads the UCI handwritten digits data with the project's fixed split.

    The data is the copy of the UCI "Optical Recognition of Handwritten
    Digits" set that scikit-learn redistributes (E. Alpaydin and
    C. Kaynak, 1998, CC BY 4.0): 1,797 grey images of 8x8 pixels whose
    values are integers in `[0, 16]`, labelled with the digit they show.
    It is shipped inside this package, so no download (and no
    scikit-learn) is needed.

    The split is fixed and reproducible:

    ```python
    perm = numpy.random.default_rng(split_seed).permutation(1797)
    train_indices, test_indices = perm[:num_train], perm[num_train:]
    ```

    With the defaults this gives 1,437 training and 360 test examples.

    Args:
        split_seed: Integer seed of the permutation that defines the split.
            Keep the default `0` to use the project's standard split.
        num_train: Number of examples, taken from the front of the
            permutation, that form the training split; the others form the
            test split. Must be in `[0, 1797]`.
        flatten: If `True`, images have shape `(N, 64)`; otherwise
            `(N, 8, 8, 1)`.
        normalize: If `True`, pixels are divided by 16 and returned as
            `float32` values in `[0, 1]`; otherwise the raw integer values
            `0..16` are returned as `float32`.

    Returns:
        A tuple `((x_train, y_train), (x_test, y_test))` of numpy arrays:
        `x_*` are `float32` images as described above and `y_*` are `int32`
        labels in `[0, 9]` (`DIGITS_NUM_CLASSES` classes).

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load_digits()
    >>> x_train.shape, y_train.shape, x_test.shape, y_test.shape
    ((1437, 64), (1437,), (360, 64), (360,))
    >>> float(x_train.max()) <= 1.0
    True
    """
    num_train = int(num_train)
    if not 0 <= num_train <= DIGITS_NUM_EXAMPLES:
        raise ValueError(f"`num_train` must be in [0, {DIGITS_NUM_EXAMPLES}]; got {num_train}.")
    images, labels = _read_digits_npz()
    perm = np.random.default_rng(split_seed).permutation(DIGITS_NUM_EXAMPLES)
    x = images.astype(np.float32)
    if normalize:
        x /= np.float32(_DIGITS_MAX_VALUE)
    if flatten:
        x = x.reshape((DIGITS_NUM_EXAMPLES, -1))
    else:
        x = x.reshape((DIGITS_NUM_EXAMPLES,) + DIGITS_IMAGE_SHAPE)
    y = labels.astype(np.int32)
    train_idx, test_idx = perm[:num_train], perm[num_train:]
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def load_canvas_digits(canvas_size=20, seed=0, split_seed=0):
    """The embedded digits placed at a random offset on a larger canvas.

    A small offline image task for convolutional networks: every 8x8 digit
    of `load_digits` (normalised to `[0, 1]`) is pasted at an offset drawn
    once per image from `numpy.random.default_rng(seed)` onto a zero canvas
    of `canvas_size x canvas_size` pixels. A dense network sees the digit
    at a different place in every image; a convolution does not care. The
    train/test split is `load_digits`'s (1,437 / 360 with the defaults).

    Args:
        canvas_size: side of the square canvas, at least 8.
        seed: seed of the offsets.
        split_seed: seed of the split, as for `load_digits`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: float32 images of shape
        `(N, canvas_size, canvas_size, 1)` and int32 labels.

    Example:

    >>> (x_train, y_train), _ = load_canvas_digits()
    >>> x_train.shape
    (1437, 20, 20, 1)
    """
    if not isinstance(canvas_size, (int, np.integer)) or canvas_size < 8:
        raise ValueError(
            f"canvas_size must be an integer >= 8, received canvas_size={canvas_size!r}."
        )
    (x_train, y_train), (x_test, y_test) = load_digits(split_seed=split_seed, flatten=False)
    rng = np.random.default_rng(seed)
    images = np.concatenate([x_train, x_test])
    offsets = rng.integers(0, canvas_size - 8 + 1, size=(len(images), 2))
    canvas = np.zeros((len(images), canvas_size, canvas_size, 1), np.float32)
    for index, (row, column) in enumerate(offsets):
        canvas[index, row : row + 8, column : column + 8] = images[index]
    return (canvas[: len(x_train)], y_train), (canvas[len(x_train) :], y_test)
