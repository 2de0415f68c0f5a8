"""Datasets for SPELA examples, tests and benchmarks.

Three kinds of data are offered:

* `load_digits()`: the small UCI "Optical Recognition of Handwritten Digits"
  set (1,797 images of 8x8 pixels) that ships inside the package
  (`keras_spela/data/digits.npz`, see `keras_spela/data/DIGITS_LICENSE.txt`).
  It needs no download and no extra dependency, and comes with the
  project's fixed train/test split.
* `load_fashion_mnist()`: Fashion-MNIST from its four IDX files, found on
  this machine (a directory of yours, Keras' cache or the Debian package
  `dataset-fashion-mnist`) and checked against their SHA-256, or downloaded
  by Keras.
* `load_tfds()`: image-classification sets from TensorFlow Datasets
  (`mnist`, `kmnist`, `fashion_mnist`, `cifar10`, `cifar100`,
  `svhn_cropped`) as a batched `tf.data.Dataset` of `(x, y)` pairs, scaled
  to `[0, 1]`. `tensorflow_datasets` is imported only when these are used.

A data set that is not on this machine and cannot be downloaded, or a damaged
file, raises `DatasetError` with one line that says what to do.
"""

import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
import os
import socket
import urllib.parse

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


class DatasetError(OSError):
    """A data set that cannot be read: not on this machine and not
    downloadable now, or a damaged file (the message names it and the fix)."""


@functools.lru_cache(maxsize=1)
def _read_digits_npz():
    """Reads the shipped digits arrays once (uint8 images and labels)."""
    resource = importlib.resources.files("keras_spela") / "data" / "digits.npz"
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
        raise ValueError(
            f"`num_train` must be in [0, {DIGITS_NUM_EXAMPLES}]; got {num_train}."
        )
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


FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": (
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
    ),
    "train-labels-idx1-ubyte.gz": (
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"
    ),
}
"""The four Fashion-MNIST files and their SHA-256 (those Keras downloads)."""

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
"""Where the Debian package `dataset-fashion-mnist` installs the files."""

FASHION_MNIST_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
"""Where Keras (`keras.datasets.fashion_mnist`) downloads the files from."""


def keras_cache_dir(subdir):
    """`$KERAS_HOME/datasets/<subdir>`, by default `~/.keras/datasets/<subdir>`:
    where `keras.datasets` keeps what it downloads."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets", subdir)


def _fashion_mnist_search_dirs(data_dir):
    dirs = [keras_cache_dir("fashion-mnist"), FASHION_MNIST_DEBIAN_DIR]
    return ([os.fspath(data_dir)] if data_dir is not None else []) + dirs


def _download_fashion_mnist_file(filename, searched):
    """Keras' downloader into its cache; one `DatasetError` line if it fails."""
    import keras

    cache = keras_cache_dir("fashion-mnist")
    # Keras downloads to /tmp/.keras where its cache directory does not exist yet.
    os.makedirs(cache, exist_ok=True)
    try:
        return keras.utils.get_file(
            filename,
            origin=FASHION_MNIST_ORIGIN + filename,
            file_hash=FASHION_MNIST_FILES[filename],
            cache_dir=os.path.dirname(os.path.dirname(cache)),
            cache_subdir=os.path.join("datasets", "fashion-mnist"),
        )
    except Exception as error:  # Keras raises a bare Exception for a failed fetch.
        reason = " ".join(str(error).split())
        raise DatasetError(
            f"Fashion-MNIST's {filename} is not in {', '.join(searched)} and could not be "
            f"downloaded ({reason}). Install it with `apt-get install dataset-fashion-mnist` "
            f"(files in {FASHION_MNIST_DEBIAN_DIR}), or download it once where the internet "
            "is reachable (`keras_spela.datasets.load_fashion_mnist()` keeps it in "
            f"{cache}) and copy the files to this machine."
        ) from None


@functools.lru_cache(maxsize=len(FASHION_MNIST_FILES))
def _read_idx_gz(path, size, mtime_ns, sha256):
    """The uint8 array of a gzipped IDX file whose SHA-256 is `sha256`.

    Cached per path, size and modification time: the hash of the 30 MB is
    computed once per process. The array is read-only.
    """
    del size, mtime_ns  # Only part of the cache key: a changed file is read again.
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DatasetError(
            f"{path} is damaged (truncated or corrupt: {len(data):,} bytes whose SHA-256 is "
            f"not Fashion-MNIST's {sha256[:12]}...). Delete it; the loader then uses another "
            "copy or downloads it again."
        )
    raw = gzip.decompress(data)
    ndim = raw[3]  # IDX header: two zero bytes, the type (8 = uint8), the rank.
    shape = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(data_dir=None, normalize=False, channel_axis=False):
    """Loads Fashion-MNIST (Zalando, MIT license) from its four IDX files.

    Each file is taken from the first of these directories that holds it:
    `data_dir` (if given), Keras' cache (`~/.keras/datasets/fashion-mnist`,
    or under `$KERAS_HOME`), the directory of the Debian package
    `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`). A file in
    none of them is downloaded into Keras' cache by `keras.utils.get_file`.
    Every file is checked against `FASHION_MNIST_FILES`' SHA-256 (once per
    process and file).

    Args:
        data_dir: A directory holding the four `.gz` files, looked in first.
        normalize: If `False` (default), images are `uint8` in `[0, 255]`,
            as `keras.datasets.fashion_mnist.load_data()` returns them; if
            `True`, `float32` in `[0, 1]` (divided by 255).
        channel_axis: If `True`, images get a last axis of size 1,
            `(N, 28, 28, 1)` (for convolutions); else `(N, 28, 28)`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: 60,000 training and
        10,000 test images, and their `uint8` labels in `[0, 9]` (T-shirt/top,
        trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle
        boot).

    Raises:
        DatasetError: A file is in none of the directories and cannot be
            downloaded (the message names `apt-get install
            dataset-fashion-mnist` and the download), or a file is damaged
            (the message names it).

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load_fashion_mnist()  # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_test.shape  # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'), (10000,))
    """
    searched = _fashion_mnist_search_dirs(data_dir)
    arrays = {}
    for filename, sha256 in FASHION_MNIST_FILES.items():
        paths = [os.path.join(directory, filename) for directory in searched]
        path = next((p for p in paths if os.path.isfile(p)), None)
        if path is None:
            path = _download_fashion_mnist_file(filename, searched)
        stat = os.stat(path)
        arrays[filename] = _read_idx_gz(
            os.path.abspath(path), stat.st_size, stat.st_mtime_ns, sha256
        )

    def images(filename):
        x = arrays[filename]
        x = x.astype(np.float32) / np.float32(255) if normalize else x.copy()
        return x[..., np.newaxis] if channel_axis else x

    return (
        (images("train-images-idx3-ubyte.gz"), arrays["train-labels-idx1-ubyte.gz"].copy()),
        (images("t10k-images-idx3-ubyte.gz"), arrays["t10k-labels-idx1-ubyte.gz"].copy()),
    )


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a supported TFDS dataset.

    The values are those of the dataset's `tfds` `DatasetInfo` (checked by
    the tests), kept in a table so that no download or `tfds` import is
    needed to read them.

    Attributes:
        name: The TFDS name, e.g. `"mnist"`.
        num_classes: Number of label classes.
        image_shape: Shape of one image, `(height, width, channels)`.
        image_key: Feature name of the image in the TFDS example dict.
        label_key: Feature name of the label used as target.
        max_value: Largest raw pixel value; images are divided by it.
    """

    name: str
    num_classes: int
    image_shape: tuple
    image_key: str = "image"
    label_key: str = "label"
    max_value: float = 255.0

    @property
    def flat_dim(self):
        """Number of features of one flattened image."""
        return int(np.prod(self.image_shape))

    def input_shape(self, flatten):
        """The per-example input shape, `(flat_dim,)` or `image_shape`."""
        return (self.flat_dim,) if flatten else tuple(self.image_shape)


_TFDS_SPECS = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", 10, (28, 28, 1)),
        DatasetSpec("kmnist", 10, (28, 28, 1)),
        DatasetSpec("fashion_mnist", 10, (28, 28, 1)),
        DatasetSpec("cifar10", 10, (32, 32, 3)),
        # CIFAR-100's "label" is the fine label (100 classes); the
        # "coarse_label" (20 superclasses) is not used.
        DatasetSpec("cifar100", 100, (32, 32, 3), label_key="label"),
        DatasetSpec("svhn_cropped", 10, (32, 32, 3)),
    )
}

SUPPORTED_TFDS_DATASETS = tuple(_TFDS_SPECS)
"""Names accepted by `load_tfds()` and `dataset_spec()`."""


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
    (x_train, y_train), (x_test, y_test) = load_digits(
        split_seed=split_seed, flatten=False
    )
    rng = np.random.default_rng(seed)
    images = np.concatenate([x_train, x_test])
    offsets = rng.integers(0, canvas_size - 8 + 1, size=(len(images), 2))
    canvas = np.zeros((len(images), canvas_size, canvas_size, 1), np.float32)
    for index, (row, column) in enumerate(offsets):
        canvas[index, row : row + 8, column : column + 8] = images[index]
    return (canvas[: len(x_train)], y_train), (canvas[len(x_train) :], y_test)


def dataset_spec(name):
    """Returns the number of classes and image shape of a TFDS dataset.

    Args:
        name: One of `SUPPORTED_TFDS_DATASETS`: `"mnist"`, `"kmnist"`,
            `"fashion_mnist"`, `"cifar10"`, `"cifar100"`, `"svhn_cropped"`.

    Returns:
        A `DatasetSpec` with `num_classes`, `image_shape` (height, width,
        channels), `flat_dim` and `input_shape(flatten)`.

    Raises:
        ValueError: If `name` is not supported.

    Example:

    >>> spec = dataset_spec("cifar100")
    >>> spec.num_classes, spec.image_shape, spec.flat_dim
    (100, (32, 32, 3), 3072)
    """
    try:
        return _TFDS_SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unsupported dataset name {name!r}. Supported names: "
            f"{', '.join(SUPPORTED_TFDS_DATASETS)}."
        ) from None


def load_tfds(
    name,
    split="train",
    batch_size=128,
    data_dir=None,
    flatten=True,
    shuffle=False,
    seed=0,
    download=True,
    shuffle_buffer_size=10_000,
):
    """Loads a TFDS image-classification set as a `tf.data.Dataset`.

    Each element is a pair `(x, y)`: `x` holds `float32` images divided by
    255 (values in `[0, 1]`), flattened if `flatten=True`, and `y` holds
    `int32` labels in `[0, num_classes)`. For `cifar100` the fine labels
    (100 classes, feature `"label"`) are used.

    Args:
        name: One of `SUPPORTED_TFDS_DATASETS`: `"mnist"`, `"kmnist"`,
            `"fashion_mnist"` (28x28x1), `"cifar10"`, `"cifar100"`,
            `"svhn_cropped"` (32x32x3).
        split: TFDS split string, e.g. `"train"`, `"test"` or
            `"train[:90%]"`.
        batch_size: Number of examples per batch, or `None` for an
            unbatched dataset. The last batch may be smaller.
        data_dir: Directory where TFDS reads (and, if `download=True`,
            writes) the data. `None` uses the TFDS default
            (`~/tensorflow_datasets` or `$TFDS_DATA_DIR`).
        flatten: If `True`, each image is reshaped to a vector of
            `height * width * channels` features; otherwise it keeps its
            `(height, width, channels)` shape.
        shuffle: If `True`, the input files and the examples (with a buffer
            of `shuffle_buffer_size`) are shuffled, deterministically for a
            given `seed`, and reshuffled at each iteration (epoch) in a
            sequence that is also fixed by `seed`.
        seed: Integer seed for the shuffling.
        download: If `True`, download and prepare the data if it is not in
            `data_dir` yet (its servers are checked first); if `False`,
            fail when it is missing.
        shuffle_buffer_size: Size of the example shuffle buffer.

    Returns:
        A `tf.data.Dataset` of `(x, y)` pairs, batched if `batch_size` is
        not `None`, with prefetching.

    Raises:
        ValueError: If `name` is not supported.
        DatasetError: If the data is not in `data_dir` and `download` is
            `False` or its servers cannot be reached (one line saying how
            to get it).

    Example:

    >>> train = load_tfds("mnist", split="train", batch_size=256,
    ...                   shuffle=True, seed=0)  # doctest: +SKIP
    >>> x, y = next(iter(train))  # doctest: +SKIP
    >>> x.shape, y.shape  # doctest: +SKIP
    (TensorShape([256, 784]), TensorShape([256]))
    """
    spec = dataset_spec(name)
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def tfds_load():
        return tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=False,
            shuffle_files=bool(shuffle),
            read_config=tfds.ReadConfig(shuffle_seed=seed if shuffle else None),
        )

    try:
        ds = tfds_load()
    except AssertionError:  # TFDS: "could not find data in <data_dir>".
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            raise
        _download_and_prepare(builder, name, download)
        ds = tfds_load()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)

    out_shape = spec.input_shape(flatten)
    scale = 1.0 / spec.max_value

    def _preprocess(example):
        x = tf.cast(example[spec.image_key], tf.float32) * scale
        x = tf.reshape(x, out_shape)
        y = tf.cast(example[spec.label_key], tf.int32)
        return x, y

    ds = ds.map(_preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def _download_and_prepare(builder, name, download):
    """TFDS's download of `builder`, or one `DatasetError` line that says how
    to get the data when it is not allowed or the servers are unreachable
    (checked first: TFDS would retry for minutes)."""
    where = builder.data_dir
    if not download:
        raise DatasetError(
            f"Dataset {name} is not in {where}: pass download=True (TensorFlow Datasets "
            "downloads and prepares it there) or the data_dir of a prepared copy."
        )
    how = (
        f"It must be downloaded once: run this where the internet is reachable (TensorFlow "
        f"Datasets downloads and prepares it in {where}), or copy a prepared data directory "
        f"(`tfds build {name} --data_dir DIR`) to this machine and pass it as data_dir."
    )
    servers = {
        (url.hostname, url.port or _PORTS.get(url.scheme, 443))
        for url in map(urllib.parse.urlsplit, builder.url_infos or ())
    }
    for host, port in sorted(servers):
        try:
            socket.create_connection((host, port), timeout=10).close()
        except OSError as error:
            raise DatasetError(
                f"Dataset {name} is not in {where} and its server {host} cannot be "
                f"reached ({error.strerror or error}). {how}"
            ) from None
    try:
        builder.download_and_prepare()
    except OSError as error:  # requests' connection errors are OSErrors.
        reason = " ".join(str(error).split())
        raise DatasetError(f"Dataset {name} could not be downloaded ({reason}). {how}") from None


_PORTS = {"http": 80, "https": 443, "ftp": 21}


def to_numpy(dataset):
    """Materialises a dataset of `(x, y)` pairs as two numpy arrays.

    Works with batched and unbatched datasets. The whole dataset is read
    into memory, so use it for small sets or splits (examples, tests).

    Args:
        dataset: A finite `tf.data.Dataset` (or any iterable) of `(x, y)`
            pairs, e.g. the result of `load_tfds()`.

    Returns:
        A tuple `(x, y)` of numpy arrays whose first axis runs over all
        examples.

    Raises:
        ValueError: If the dataset is empty.

    Example:

    >>> ds = load_tfds("mnist", split="test[:1000]")  # doctest: +SKIP
    >>> x, y = to_numpy(ds)  # doctest: +SKIP
    >>> x.shape, y.shape  # doctest: +SKIP
    ((1000, 784), (1000,))
    """
    iterator = dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") else dataset
    xs, ys = [], []
    for x, y in iterator:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    if not ys:
        raise ValueError("Cannot convert an empty dataset to numpy arrays.")
    if ys[0].ndim == 0:  # Unbatched: one example per element.
        return np.stack(xs), np.stack(ys)
    return np.concatenate(xs), np.concatenate(ys)


def load_tfds_numpy(name, split="train", **kwargs):
    """Loads a TFDS split fully into numpy arrays.

    Shorthand for `to_numpy(load_tfds(name, split, **kwargs))`; see
    `load_tfds()` for the preprocessing and the keyword arguments.

    Args:
        name: One of `SUPPORTED_TFDS_DATASETS`.
        split: TFDS split string, e.g. `"test"` or `"train[:5000]"`.
        **kwargs: Further arguments of `load_tfds()` (`data_dir`,
            `flatten`, `shuffle`, `seed`, `download`, ...).

    Returns:
        A tuple `(x, y)` of numpy arrays: `float32` images in `[0, 1]` and
        `int32` labels.

    Example:

    >>> x_test, y_test = load_tfds_numpy("fashion_mnist",
    ...                                  split="test")  # doctest: +SKIP
    >>> x_test.shape  # doctest: +SKIP
    (10000, 784)
    """
    kwargs.setdefault("batch_size", 1024)
    return to_numpy(load_tfds(name, split, **kwargs))
