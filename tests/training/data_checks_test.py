"""What SpelaModel is given is checked: bad batches are one clear error and change no
weight, in fit and in evaluate."""

import functools
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_spela import datasets

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES


@functools.lru_cache(maxsize=None)
def _digits(flatten=True, normalize=True):
    return datasets.load_digits(flatten=flatten, normalize=normalize)


def _small_train(n=500):
    (x, y), _ = _digits()
    return x[:n], y[:n]


def _snapshot(model):
    return {v.path: v.numpy().copy() for v in model.weights}


def _changed(before, model):
    """Paths of the model's weights that differ from the snapshot."""
    return {v.path for v in model.weights if not np.array_equal(before[v.path], v.numpy())}


# ----------------------------------------------------------------- bad input
_ERRORS = (ValueError, TypeError, tf.errors.InvalidArgumentError)


def _bad_batches():
    x, y = _small_train(20)
    x_nan = x.copy()
    x_nan[3, 5] = np.nan
    x_inf = x.copy()
    x_inf[7, 0] = np.inf
    y_big = y.copy()
    y_big[4] = NUM_CLASSES
    y_negative = y.copy()
    y_negative[2] = -1
    x_huge = np.full_like(x, 3e38)  # finite, but beyond the acceptance bound
    return {
        "label_too_large": (x, y_big, "num_classes"),
        "negative_label": (x, y_negative, r"outside \[0, num_classes"),
        "float_labels": (x, y.astype(np.float32), "integer"),
        "one_hot_labels": (x, np.eye(NUM_CLASSES, dtype=np.int32)[y], "[Oo]ne-hot"),
        "nan_input": (x_nan, y, "NaN"),
        "inf_input": (x_inf, y, "infinite"),
        "row_mismatch": (x, y[:-1], "same number of"),
        "overflowing_input": (x_huge, y, r"values beyond 1e\+18"),
    }


BAD_CASES = list(_bad_batches())


def _assert_rejected_without_update(model, x, y, match):
    before = _snapshot(model)
    with pytest.raises(_ERRORS, match=match):
        model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert not _changed(before, model)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_rejected_with_clear_error_and_no_update(case, spela_mlp):
    x, y, match = _bad_batches()[case]
    model = spela_mlp(units=(16, 12))
    model.compile()
    _assert_rejected_without_update(model, x, y, match)


@pytest.mark.parametrize("case", ["label_too_large", "negative_label", "nan_input"])
def test_bad_input_rejected_by_evaluate(case, spela_mlp):
    x, y, match = _bad_batches()[case]
    model = spela_mlp(units=(16, 12))
    model.compile()
    with pytest.raises(_ERRORS, match=match):
        model.evaluate(x, y, batch_size=len(x), verbose=0)


def test_row_mismatch_in_dataset_rejected_naming_rows(spela_mlp):
    # A dataset batch bypasses Keras' own cardinality check; SpelaModel's
    # check must name the problem.
    x, y = _small_train(20)
    model = spela_mlp(units=(16, 12))
    model.compile()
    before = _snapshot(model)
    dataset = tf.data.Dataset.from_tensors((x, y[:-1]))
    with pytest.raises(_ERRORS, match="same number of rows"):
        model.fit(dataset, epochs=1, verbose=0)
    assert not _changed(before, model)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
