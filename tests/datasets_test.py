"""Tests for keras_spela.datasets. Fashion-MNIST is read from the real files (the Debian
package dataset-fashion-mnist that tools/install.sh installs, or Keras' cache): where they
are missing and cannot be downloaded the tests fail, they do not skip. Downloads are served
from localhost; TFDS is mocked, or its servers are made unreachable."""

import errno
import functools
import gzip
import hashlib
import http.server
import importlib.resources
import pathlib
import re
import shutil
import socket
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_spela import datasets
from keras_spela.datasets import fashion_mnist

TFDS_NAMES = ("mnist", "kmnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped")

EXPECTED_SPECS = {
    "mnist": (10, (28, 28, 1)),
    "kmnist": (10, (28, 28, 1)),
    "fashion_mnist": (10, (28, 28, 1)),
    "cifar10": (10, (32, 32, 3)),
    "cifar100": (100, (32, 32, 3)),
    "svhn_cropped": (10, (32, 32, 3)),
}

FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Class counts of the 1,797 examples of scikit-learn's copy of the digits.
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def _mock_tfds(num_examples):
    # USE_CODE builds the dataset info from the dataset's builder class, so
    # no metadata file is read and nothing is downloaded (the AUTO policy
    # would look for metadata files first; tfds 4.9.10 ships none).
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )


def _raw_npz():
    resource = importlib.resources.files("keras_spela.datasets") / "data" / "digits.npz"
    with importlib.resources.as_file(resource) as path:
        with np.load(path) as data:
            return data["images"], data["labels"]


def _raw_tfds_examples(name, num_examples):
    """The unprocessed examples that the mock yields for `name`."""
    with _mock_tfds(num_examples):
        ds = tfds.load(name, split="train")
        return list(ds.as_numpy_iterator())


# --------------------------------------------------------------------------
# Shipped digits data.
# --------------------------------------------------------------------------


def test_digits_npz_has_documented_format():
    images, labels = _raw_npz()
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8)
    assert labels.dtype == np.uint8 and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 16
    assert np.bincount(labels, minlength=10).tolist() == DIGITS_CLASS_COUNTS


def test_digits_npz_equals_scikit_learn_copy():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    images, labels = _raw_npz()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(labels, reference.target)


def test_digits_license_file_is_shipped_with_attribution():
    text = (importlib.resources.files("keras_spela.datasets") / "data" / "DIGITS_LICENSE.txt").read_text()
    for needle in ("Alpaydin", "Kaynak", "1998", "CC BY 4.0", "scikit-learn"):
        assert needle in text


def test_load_digits_default_split_has_documented_shapes_and_dtypes():
    (x_train, y_train), (x_test, y_test) = datasets.load_digits()
    assert x_train.shape == (1437, 64) and y_train.shape == (1437,)
    assert x_test.shape == (360, 64) and y_test.shape == (360,)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int32 and y_test.dtype == np.int32
    assert datasets.DIGITS_NUM_CLASSES == 10


def test_load_digits_split_equals_documented_permutation():
    images, labels = _raw_npz()
    for split_seed in (0, 7):
        perm = np.random.default_rng(split_seed).permutation(1797)
        (x_train, y_train), (x_test, y_test) = datasets.load_digits(split_seed=split_seed)
        np.testing.assert_array_equal(x_train, images[perm[:1437]].reshape(1437, 64) / 16.0)
        np.testing.assert_array_equal(y_train, labels[perm[:1437]])
        np.testing.assert_array_equal(x_test, images[perm[1437:]].reshape(360, 64) / 16.0)
        np.testing.assert_array_equal(y_test, labels[perm[1437:]])


def test_load_digits_splits_contain_all_ten_classes():
    (_, y_train), (_, y_test) = datasets.load_digits()
    train_counts = np.bincount(y_train, minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    assert len(train_counts) == 10 and len(test_counts) == 10
    assert (train_counts > 0).all() and (test_counts > 0).all()
    assert (train_counts + test_counts).tolist() == DIGITS_CLASS_COUNTS


def test_load_digits_normalize_scales_pixels_to_unit_interval():
    (x_train, _), (x_test, _) = datasets.load_digits(normalize=True)
    x = np.concatenate([x_train, x_test])
    assert x.min() == 0.0 and x.max() == 1.0
    # Every value is a multiple of 1/16.
    np.testing.assert_array_equal(x * 16, np.round(x * 16))


def test_load_digits_without_normalize_keeps_raw_counts():
    (x_raw, _), _ = datasets.load_digits(normalize=False)
    (x_norm, _), _ = datasets.load_digits(normalize=True)
    assert x_raw.dtype == np.float32
    assert x_raw.min() == 0.0 and x_raw.max() == 16.0
    np.testing.assert_array_equal(x_raw, np.round(x_raw))
    np.testing.assert_array_equal(x_raw / 16.0, x_norm)


def test_load_digits_without_flatten_gives_image_tensors():
    (x_img, y_img), (x_img_test, _) = datasets.load_digits(flatten=False)
    (x_flat, y_flat), _ = datasets.load_digits(flatten=True)
    assert x_img.shape == (1437, 8, 8, 1) and x_img_test.shape == (360, 8, 8, 1)
    assert datasets.DIGITS_IMAGE_SHAPE == (8, 8, 1)
    np.testing.assert_array_equal(x_img.reshape(1437, 64), x_flat)
    np.testing.assert_array_equal(y_img, y_flat)


def test_load_digits_same_seed_is_deterministic_and_other_seed_differs():
    (xa, ya), (xa_t, ya_t) = datasets.load_digits(split_seed=3)
    (xb, yb), (xb_t, yb_t) = datasets.load_digits(split_seed=3)
    (xc, _), _ = datasets.load_digits(split_seed=4)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(xa_t, xb_t)
    np.testing.assert_array_equal(ya_t, yb_t)
    assert not np.array_equal(xa, xc)


def test_load_digits_train_and_test_partition_all_examples():
    images, _ = _raw_npz()
    (x_train, _), (x_test, _) = datasets.load_digits(normalize=False)
    # Rows are matched through their position in the documented permutation:
    # together, train and test hold every example exactly once.
    perm = np.random.default_rng(0).permutation(1797)
    assert sorted(perm.tolist()) == list(range(1797))
    np.testing.assert_array_equal(
        np.concatenate([x_train, x_test]), images[perm].reshape(1797, 64).astype(np.float32)
    )


def test_load_digits_num_train_sets_split_sizes():
    (x_train, y_train), (x_test, y_test) = datasets.load_digits(num_train=1000)
    assert len(x_train) == len(y_train) == 1000
    assert len(x_test) == len(y_test) == 797
    (x_all, _), (x_none, y_none) = datasets.load_digits(num_train=1797)
    assert len(x_all) == 1797 and x_none.shape == (0, 64) and y_none.shape == (0,)


@pytest.mark.parametrize("num_train", [-1, 1798])
def test_load_digits_invalid_num_train_raises_value_error(num_train):
    with pytest.raises(ValueError, match="num_train"):
        datasets.load_digits(num_train=num_train)


def test_load_digits_results_are_independent_copies():
    (x_train, y_train), _ = datasets.load_digits()
    expected_x, expected_y = x_train.copy(), y_train.copy()
    x_train[:] = -1.0
    y_train[:] = -1
    (x_again, y_again), _ = datasets.load_digits()
    np.testing.assert_array_equal(x_again, expected_x)
    np.testing.assert_array_equal(y_again, expected_y)


# --------------------------------------------------------------------------
# Fashion-MNIST from its IDX files.
# --------------------------------------------------------------------------


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
        pathlib.Path(d) for d in dirs
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
    (x_train, y_train), (x_test, _) = datasets.load_fashion_mnist(
        normalize=True, channel_axis=True
    )
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
    with pytest.raises(datasets.DatasetError,
                       match=f"^{re.escape(str(cache))}/train-labels-idx1-ubyte.gz is"):
        datasets.load_fashion_mnist()
    mine = copy_fashion_files(tmp_path / "mine")
    (_, y_train), _ = datasets.load_fashion_mnist(data_dir=mine)  # the cache is not read
    assert np.bincount(y_train).tolist() == [6000] * 10
    # The Debian package is read only where the cache does not have a file.
    debian = copy_fashion_files(tmp_path / "debian")
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DEBIAN_DIR", str(debian))
    (cache / "train-labels-idx1-ubyte.gz").unlink()
    damage(debian / "train-labels-idx1-ubyte.gz", "corrupt")
    with pytest.raises(datasets.DatasetError,
                       match=f"^{re.escape(str(debian))}/train-labels-idx1-ubyte.gz is"):
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


def test_missing_files_are_downloaded_into_keras_cache(monkeypatch, tmp_path, no_fashion_copies,
                                                       fashion):
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


# --------------------------------------------------------------------------
# TFDS loaders (mocked, or with unreachable servers: no download).
# --------------------------------------------------------------------------


def test_tfds_reads_its_checksums_before_a_download(tmp_path):
    """TFDS reads the download URLs of a set with importlib_resources, which
    tensorflow-datasets does not declare (setup.py's datasets extra does)."""
    urls = tfds.builder("cifar10", data_dir=str(tmp_path)).url_infos
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in urls


def test_load_tfds_offline_is_one_error_before_any_download(monkeypatch, tmp_path):
    def unreachable(address, *args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    downloads = []
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda *args, **kwargs: downloads.append(args))
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load_tfds("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert re.match(
        f"Dataset cifar10 is not in {re.escape(str(tmp_path))}/cifar10/[0-9.]+ and its server "
        r"www\.cs\.toronto\.edu cannot be reached \(Network is unreachable\)\. It must be "
        "downloaded once", message
    ), message
    assert "\n" not in message and "tfds build cifar10 --data_dir" in message, message
    assert downloads == []
    with pytest.raises(datasets.DatasetError, match=r"^Dataset mnist is not in .*download=True"):
        datasets.load_tfds("mnist", data_dir=str(tmp_path), download=False)



@pytest.mark.parametrize("name", TFDS_NAMES)
def test_dataset_spec_matches_tfds_info(name):
    spec = datasets.dataset_spec(name)
    num_classes, image_shape = EXPECTED_SPECS[name]
    assert spec.num_classes == num_classes
    assert spec.image_shape == image_shape
    assert spec.flat_dim == int(np.prod(image_shape))
    assert spec.input_shape(flatten=True) == (spec.flat_dim,)
    assert spec.input_shape(flatten=False) == image_shape
    with _mock_tfds(1):
        info = tfds.builder(name).info
    assert info.features[spec.label_key].num_classes == spec.num_classes
    assert tuple(info.features[spec.image_key].shape) == spec.image_shape


def test_supported_tfds_datasets_lists_all_names():
    assert set(datasets.SUPPORTED_TFDS_DATASETS) == set(TFDS_NAMES)


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_load_tfds_yields_scaled_flat_batches(name):
    spec = datasets.dataset_spec(name)
    raw = _raw_tfds_examples(name, num_examples=10)
    with _mock_tfds(10):
        ds = datasets.load_tfds(name, split="train", batch_size=4)
        batches = list(ds.as_numpy_iterator())
    assert ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].dtype == tf.int32
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.shape == (10, spec.flat_dim)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert 0 <= y.min() and y.max() < spec.num_classes
    expected_x = np.stack([ex["image"] for ex in raw]).reshape(10, -1) / np.float32(255.0)
    np.testing.assert_allclose(x, expected_x, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(y, [ex["label"] for ex in raw])


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_load_tfds_without_flatten_keeps_image_shape(name):
    spec = datasets.dataset_spec(name)
    with _mock_tfds(6):
        x, y = datasets.to_numpy(datasets.load_tfds(name, batch_size=4, flatten=False))
        x_flat, _ = datasets.to_numpy(datasets.load_tfds(name, batch_size=4, flatten=True))
    assert x.shape == (6,) + spec.image_shape and x.dtype == np.float32
    assert y.shape == (6,) and y.dtype == np.int32
    np.testing.assert_array_equal(x.reshape(6, -1), x_flat)


def test_load_tfds_cifar100_uses_fine_labels():
    raw = _raw_tfds_examples("cifar100", num_examples=64)
    with _mock_tfds(64):
        _, y = datasets.load_tfds_numpy("cifar100", split="train")
    fine = np.array([ex["label"] for ex in raw])
    coarse = np.array([ex["coarse_label"] for ex in raw])
    np.testing.assert_array_equal(y, fine)
    assert not np.array_equal(y, coarse)
    assert y.max() >= 20  # Coarse labels stop at 19.


def test_load_tfds_passes_data_dir_and_download_to_tfds(monkeypatch, tmp_path):
    calls = []
    real_load = tfds.load

    def spy_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(tfds, "load", spy_load)
    with _mock_tfds(3):
        x, y = datasets.to_numpy(
            datasets.load_tfds("mnist", split="test", data_dir=str(tmp_path), download=False)
        )
    assert x.shape == (3, 784) and y.shape == (3,)
    assert len(calls) == 1
    assert calls[0]["data_dir"] == str(tmp_path)
    assert calls[0]["download"] is False
    assert calls[0]["split"] == "test"


def test_load_tfds_unbatched_yields_single_examples():
    with _mock_tfds(5):
        ds = datasets.load_tfds("fashion_mnist", batch_size=None)
        elements = list(ds.as_numpy_iterator())
    assert len(elements) == 5
    assert elements[0][0].shape == (784,) and elements[0][1].shape == ()


def test_load_tfds_shuffle_is_deterministic_for_a_seed():
    with _mock_tfds(64):
        plain = datasets.to_numpy(datasets.load_tfds("mnist", batch_size=8))
        first = datasets.to_numpy(datasets.load_tfds("mnist", batch_size=8, shuffle=True, seed=5))
        second = datasets.to_numpy(datasets.load_tfds("mnist", batch_size=8, shuffle=True, seed=5))
        other = datasets.to_numpy(datasets.load_tfds("mnist", batch_size=8, shuffle=True, seed=6))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], plain[0])
    assert not np.array_equal(first[0], other[0])
    # Shuffling reorders the examples but keeps all of them.
    assert first[0].shape == plain[0].shape
    np.testing.assert_array_equal(
        first[0][np.lexsort(first[0].T)], plain[0][np.lexsort(plain[0].T)]
    )
    np.testing.assert_array_equal(np.sort(first[1]), np.sort(plain[1]))


def test_load_tfds_without_shuffle_keeps_source_order():
    raw = _raw_tfds_examples("kmnist", num_examples=12)
    with _mock_tfds(12):
        _, y = datasets.to_numpy(datasets.load_tfds("kmnist", batch_size=5, shuffle=False))
    np.testing.assert_array_equal(y, [ex["label"] for ex in raw])


@pytest.mark.parametrize("bad_name", ["imagenet2012", "MNIST", "digits", ""])
def test_load_tfds_unknown_name_raises_value_error_listing_names(bad_name):
    with pytest.raises(ValueError) as err:
        datasets.load_tfds(bad_name)
    message = str(err.value)
    for name in TFDS_NAMES:
        assert name in message
    with pytest.raises(ValueError, match="Supported names"):
        datasets.dataset_spec(bad_name)


def test_to_numpy_handles_batched_and_unbatched_datasets():
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    y = np.arange(6, dtype=np.int32)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    for ds in (unbatched, unbatched.batch(4)):
        x_out, y_out = datasets.to_numpy(ds)
        np.testing.assert_array_equal(x_out, x)
        np.testing.assert_array_equal(y_out, y)


def test_to_numpy_empty_dataset_raises_value_error():
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 2)), np.zeros((0,))))
    with pytest.raises(ValueError, match="empty"):
        datasets.to_numpy(empty)


def test_load_tfds_numpy_materialises_all_examples():
    with _mock_tfds(7):
        x, y = datasets.load_tfds_numpy("svhn_cropped", split="test", flatten=False)
        x_ref, y_ref = datasets.to_numpy(
            datasets.load_tfds("svhn_cropped", split="test", batch_size=3, flatten=False)
        )
    assert x.shape == (7, 32, 32, 3) and y.shape == (7,)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_datasets_module_does_not_import_sklearn_or_matplotlib():
    package = importlib.resources.files("keras_spela.datasets")
    for name in ("__init__.py", "digits.py", "errors.py", "fashion_mnist.py", "tfds.py"):
        source = (package / name).read_text()
        assert "import sklearn" not in source and "from sklearn" not in source, name
        assert "matplotlib" not in source, name


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
