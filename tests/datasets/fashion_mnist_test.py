"""load_fashion_mnist reads the real files (the Debian package dataset-fashion-mnist that
tools/install.sh installs, or Keras' cache): where they are missing and cannot be
downloaded the tests fail, they do not skip. Downloads are served from localhost."""

import functools
import gzip
import hashlib
import http.server
import pathlib
import re
import shutil
import sys
import threading

import numpy as np
import pytest

from keras_spela import datasets
from keras_spela.datasets import fashion_mnist

FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(scope="module")
def fashion():
    """The real data, loaded once per module (the SHA-256 of 30 MB is checked once)."""
    return datasets.load_fashion_mnist()


@functools.lru_cache(maxsize=1)
def fashion_source_dir():
    """The directory load_fashion_mnist() read the real files from."""
    datasets.load_fashion_mnist()
    dirs = [datasets.keras_cache_dir("fashion-mnist"), fashion_mnist.FASHION_MNIST_DEBIAN_DIR]
    return next(
        pathlib.Path(d)
        for d in dirs
        if all((pathlib.Path(d) / name).is_file() for name in FASHION_FILES)
    )


def read_idx_like_keras(name):
    """An IDX file read as keras.datasets.fashion_mnist reads it (fixed header sizes)."""
    with gzip.open(fashion_source_dir() / name, "rb") as f:
        raw = f.read()
    if "labels" in name:
        return np.frombuffer(raw, np.uint8, offset=8)
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)


@pytest.fixture
def no_fashion_copies(monkeypatch, tmp_path):
    """Keras' cache and the Debian directory point at empty directories."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DEBIAN_DIR", str(tmp_path / "no_debian"))
    return tmp_path / "keras_home" / "datasets" / "fashion-mnist"


def copy_fashion_files(directory):
    directory.mkdir(parents=True, exist_ok=True)
    for name in FASHION_FILES:
        shutil.copy(fashion_source_dir() / name, directory / name)
    return directory


def test_fashion_mnist_files_match_the_published_sha256():
    for name in FASHION_FILES:
        digest = hashlib.sha256((fashion_source_dir() / name).read_bytes()).hexdigest()
        assert digest == datasets.FASHION_MNIST_FILES[name], name


def test_load_fashion_mnist_returns_what_keras_returns(fashion):
    (x_train, y_train), (x_test, y_test) = fashion
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60000,) and y_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and x_test.dtype == np.uint8
    assert y_test.shape == (10000,) and y_test.dtype == np.uint8
    np.testing.assert_array_equal(x_train, read_idx_like_keras("train-images-idx3-ubyte.gz"))
    np.testing.assert_array_equal(y_train, read_idx_like_keras("train-labels-idx1-ubyte.gz"))
    np.testing.assert_array_equal(x_test, read_idx_like_keras("t10k-images-idx3-ubyte.gz"))
    np.testing.assert_array_equal(y_test, read_idx_like_keras("t10k-labels-idx1-ubyte.gz"))
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert x_train.min() == 0 and x_train.max() == 255


def test_load_fashion_mnist_normalize_and_channel_axis(fashion):
    (x_train, y_train), (x_test, _) = datasets.load_fashion_mnist(normalize=True, channel_axis=True)
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.float32
    np.testing.assert_array_equal(x_train[..., 0] * 255, fashion[0][0].astype(np.float32))
    np.testing.assert_array_equal(y_train, fashion[0][1])


def test_load_fashion_mnist_results_are_independent_copies(fashion):
    (x_train, y_train), _ = datasets.load_fashion_mnist()
    x_train[:] = 7
    y_train[:] = 7
    (x_again, y_again), _ = datasets.load_fashion_mnist()
    np.testing.assert_array_equal(x_again, fashion[0][0])
    np.testing.assert_array_equal(y_again, fashion[0][1])


def damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # one flipped byte in the compressed stream
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_damaged_file_in_data_dir_is_one_error_naming_it(tmp_path, how):
    copy_fashion_files(tmp_path / "mine")
    damaged = tmp_path / "mine" / "t10k-labels-idx1-ubyte.gz"
    damage(damaged, how)
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load_fashion_mnist(data_dir=tmp_path / "mine")
    message = str(error.value)
    assert message.startswith(f"{damaged} is damaged (truncated or corrupt"), message
    assert "Delete it" in message and "\n" not in message, message


def test_data_dir_comes_first_then_keras_cache_then_debian(monkeypatch, tmp_path):
    """A damaged copy shows which directory was read: data_dir before Keras' cache,
    Keras' cache before the Debian package."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    cache = copy_fashion_files(tmp_path / "keras_home" / "datasets" / "fashion-mnist")
    damage(cache / "train-labels-idx1-ubyte.gz", "truncated")
    with pytest.raises(
        datasets.DatasetError, match=f"^{re.escape(str(cache))}/train-labels-idx1-ubyte.gz is"
    ):
        datasets.load_fashion_mnist()
    mine = copy_fashion_files(tmp_path / "mine")
    (_, y_train), _ = datasets.load_fashion_mnist(data_dir=mine)  # the cache is not read
    assert np.bincount(y_train).tolist() == [6000] * 10
    # The Debian package is read only where the cache does not have a file.
    debian = copy_fashion_files(tmp_path / "debian")
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DEBIAN_DIR", str(debian))
    (cache / "train-labels-idx1-ubyte.gz").unlink()
    damage(debian / "train-labels-idx1-ubyte.gz", "corrupt")
    with pytest.raises(
        datasets.DatasetError, match=f"^{re.escape(str(debian))}/train-labels-idx1-ubyte.gz is"
    ):
        datasets.load_fashion_mnist()


class _FileServer:
    """The Fashion-MNIST files over HTTP on localhost (a stand-in for Keras' origin)."""

    def __init__(self, directory):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_missing_files_are_downloaded_into_keras_cache(
    monkeypatch, tmp_path, no_fashion_copies, fashion
):
    served = copy_fashion_files(tmp_path / "served")
    with _FileServer(served) as server:
        monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_ORIGIN", server.url)
        (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist()
    assert sorted(p.name for p in no_fashion_copies.iterdir()) == sorted(FASHION_FILES)
    np.testing.assert_array_equal(x_train, fashion[0][0])
    np.testing.assert_array_equal(y_test, fashion[1][1])
    # A download that does not match the SHA-256 is refused and not kept.
    for name in FASHION_FILES:
        (no_fashion_copies / name).unlink()
    damage(served / "train-images-idx3-ubyte.gz", "truncated")
    with _FileServer(served) as server:
        monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_ORIGIN", server.url)
        with pytest.raises(datasets.DatasetError) as error:
            datasets.load_fashion_mnist()
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz" in message and "\n" not in message, message


def test_offline_without_files_is_one_error_naming_both_ways(monkeypatch, no_fashion_copies):
    # Nothing listens on port 9 of localhost: the fetch fails at once, as offline.
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_ORIGIN", "http://127.0.0.1:9/")
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load_fashion_mnist()
    message = str(error.value)
    assert "\n" not in message and error.value.__suppress_context__, message
    assert "apt-get install dataset-fashion-mnist" in message, message
    assert "download it once" in message and str(no_fashion_copies) in message, message
    assert message.startswith("Fashion-MNIST's train-images-idx3-ubyte.gz is not in "), message
    assert not any(no_fashion_copies.iterdir()), "a failed download left a file behind"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
