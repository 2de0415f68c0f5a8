"""ExitMetrics: evaluate reports the loss and accuracy of every exit; the metric slots
read, reset and refuse updates one by one."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_spela import datasets
from keras_spela.core import rules

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES


def _small_train(digits, n=500):
    (x, y), _ = digits
    return x[:n], y[:n]


def test_evaluate_reports_accuracy_and_loss_for_every_exit(trained_h3_mlp, digits):
    model = trained_h3_mlp
    _, (x, y) = digits
    result = model.evaluate(x, y, batch_size=len(x), return_dict=True, verbose=0)
    assert set(result) == {"loss", "accuracy"} | {
        f"{n}_{m}" for n in ("h1", "h2", "h3") for m in ("loss", "accuracy")
    }
    targets = rules.one_hot(tf.constant(y), NUM_CLASSES)
    h = tf.constant(x)
    total = 0.0
    for k, layer in enumerate(model.exit_layers):
        scores = model.predict(x, exit=k, verbose=0)
        accuracy = np.mean(np.argmax(scores, axis=1) == y)
        np.testing.assert_allclose(result[f"{layer.name}_accuracy"], accuracy, atol=1e-6)
        step = layer.local_error(h, targets)
        np.testing.assert_allclose(result[f"{layer.name}_loss"], step.loss.numpy(), rtol=1e-5)
        total += float(step.loss)
        h = step.outputs
    np.testing.assert_allclose(result["loss"], total, rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], result["h3_accuracy"])
    # Trained a little: every exit is above chance (10%).
    for name in ("h1", "h2", "h3"):
        assert result[f"{name}_accuracy"] > 0.2, result


def test_metric_slots_read_reset_and_refuse_updates_one_by_one(spela_mlp, digits):
    """model.metrics (every mean held in ExitMetrics' two variables) as Keras' API
    uses them: names in order, result() per metric, reset_state() of one metric."""
    x, y = _small_train(digits, 100)
    model = spela_mlp()
    model.compile()
    logs = model.evaluate(x, y, batch_size=25, verbose=0, return_dict=True)
    names = [metric.name for metric in model.metrics]
    assert names == ["loss", "accuracy", "h1_loss", "h1_accuracy", "h2_loss", "h2_accuracy"]
    for metric in model.metrics:
        assert float(metric.result()) == pytest.approx(logs[metric.name], rel=1e-6)
    assert logs["accuracy"] == logs["h2_accuracy"] and logs["loss"] > logs["h1_loss"] > 0
    model.metrics[2].reset_state()
    assert float(model.metrics[2].result()) == 0.0
    for metric in model.metrics[:2] + model.metrics[3:]:
        assert float(metric.result()) == pytest.approx(logs[metric.name], rel=1e-6)
    model.reset_metrics()
    assert all(float(metric.result()) == 0.0 for metric in model.metrics)
    with pytest.raises(NotImplementedError, match="updated by SpelaModel's steps"):
        model.metrics[0].update_state(1.0)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
