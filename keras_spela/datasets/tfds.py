"""Image-classification sets of TensorFlow Datasets as batched `tf.data`
pipelines of `(x, y)` scaled to `[0, 1]` (`tensorflow_datasets` is imported
only when they are used)."""

import dataclasses
import socket
import urllib.parse

import numpy as np

from keras_spela.datasets.errors import DatasetError


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
