"""Fashion-MNIST (Zalando, MIT license) from its four IDX files: a directory
of the user's, Keras' cache or the Debian package `dataset-fashion-mnist`,
checked against their SHA-256, else downloaded by Keras."""

import functools
import gzip
import hashlib
import os

import numpy as np

from keras_spela.datasets.errors import DatasetError

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
