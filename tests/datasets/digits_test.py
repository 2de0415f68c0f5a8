"""keras_spela.datasets' embedded digits: the shipped file, its license, the fixed split;
the package imports neither scikit-learn nor matplotlib."""

import importlib.resources
import sys

import numpy as np
import pytest

from keras_spela import datasets

# Class counts of the 1,797 examples of scikit-learn's copy of the digits.
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def _raw_npz():
    resource = importlib.resources.files("keras_spela.datasets") / "data" / "digits.npz"
    with importlib.resources.as_file(resource) as path:
        with np.load(path) as data:
            return data["images"], data["labels"]


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
    text = (
        importlib.resources.files("keras_spela.datasets") / "data" / "DIGITS_LICENSE.txt"
    ).read_text()
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


def test_datasets_module_does_not_import_sklearn_or_matplotlib():
    package = importlib.resources.files("keras_spela.datasets")
    for name in ("__init__.py", "digits.py", "errors.py", "fashion_mnist.py", "tfds.py"):
        source = (package / name).read_text()
        assert "import sklearn" not in source and "from sklearn" not in source, name
        assert "matplotlib" not in source, name


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
