"""evaluate_early_exit on datasets and arrays alike; labels it cannot score are refused."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_spela import datasets

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES


def test_evaluate_early_exit_on_a_dataset_gives_the_numbers_of_arrays(trained_h2_mlp, digits):
    _, (x_test, y_test) = digits
    expected = trained_h2_mlp.evaluate_early_exit(x_test, y_test, threshold=0.3)
    assert expected["accuracy"] > 0.8
    # Reshuffled at every pass: each label must stay with its example.
    dataset = (
        tf.data.Dataset.from_tensor_slices((x_test, y_test))
        .shuffle(len(y_test), seed=0, reshuffle_each_iteration=True)
        .batch(32)
    )
    result = trained_h2_mlp.evaluate_early_exit(dataset, None, threshold=0.3)
    assert result["accuracy"] == pytest.approx(expected["accuracy"])
    assert result["mean_exit"] == pytest.approx(expected["mean_exit"])
    np.testing.assert_allclose(result["exit_fractions"], expected["exit_fractions"])
    column = tf.data.Dataset.from_tensor_slices((x_test, y_test[:, None])).batch(50)
    assert trained_h2_mlp.evaluate_early_exit(column, None, 0.3)["accuracy"] == pytest.approx(
        expected["accuracy"]
    )


def test_evaluate_early_exit_refuses_labels_it_cannot_score(trained_h2_mlp, digits):
    _, (x_test, y_test) = digits
    with pytest.raises(ValueError, match=r"y.argmax\(-1\)"):
        trained_h2_mlp.evaluate_early_exit(x_test, np.eye(NUM_CLASSES)[y_test], 0.3)
    bad = y_test.copy()
    bad[7] = 99
    with pytest.raises(ValueError, match=r"\[0, num_classes=10\), found 99"):
        trained_h2_mlp.evaluate_early_exit(x_test, bad, 0.3)
    dataset = tf.data.Dataset.from_tensor_slices((x_test, bad)).batch(32)
    with pytest.raises(ValueError, match="found 99"):
        trained_h2_mlp.evaluate_early_exit(dataset, None, 0.3)
    with pytest.raises(ValueError, match="y must be None"):
        trained_h2_mlp.evaluate_early_exit(dataset, y_test, 0.3)
    with pytest.raises(ValueError, match="same number of rows"):
        trained_h2_mlp.evaluate_early_exit(x_test, y_test[:-1], 0.3)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
