"""load_tfds: TensorFlow Datasets' image sets as scaled batches, with TFDS mocked or its
servers made unreachable (nothing is downloaded)."""

import errno
import re
import socket
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_spela import datasets

TFDS_NAMES = ("mnist", "kmnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped")

EXPECTED_SPECS = {
    "mnist": (10, (28, 28, 1)),
    "kmnist": (10, (28, 28, 1)),
    "fashion_mnist": (10, (28, 28, 1)),
    "cifar10": (10, (32, 32, 3)),
    "cifar100": (100, (32, 32, 3)),
    "svhn_cropped": (10, (32, 32, 3)),
}


def _mock_tfds(num_examples):
    # USE_CODE builds the dataset info from the dataset's builder class, so
    # no metadata file is read and nothing is downloaded (the AUTO policy
    # would look for metadata files first; tfds 4.9.10 ships none).
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )


def _raw_tfds_examples(name, num_examples):
    """The unprocessed examples that the mock yields for `name`."""
    with _mock_tfds(num_examples):
        ds = tfds.load(name, split="train")
        return list(ds.as_numpy_iterator())


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
    monkeypatch.setattr(
        tfds.core.DatasetBuilder,
        "download_and_prepare",
        lambda *args, **kwargs: downloads.append(args),
    )
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load_tfds("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert re.match(
        f"Dataset cifar10 is not in {re.escape(str(tmp_path))}/cifar10/[0-9.]+ and its server "
        r"www\.cs\.toronto\.edu cannot be reached \(Network is unreachable\)\. It must be "
        "downloaded once",
        message,
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


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
