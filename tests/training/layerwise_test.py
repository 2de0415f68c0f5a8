"""fit_layerwise: the paper's schedule trains one layer at a time."""

import sys

import keras
import numpy as np
import pytest


def _small_train(digits, n=500):
    (x, y), _ = digits
    return x[:n], y[:n]


def _layer_paths(layer, trainable_only=True):
    variables = layer.trainable_variables if trainable_only else layer.weights
    return {v.path for v in variables}


# ------------------------------------------------------ layer-wise / subsets
class _PhaseSnapshots(keras.callbacks.Callback):
    """Records every weight at the start and end of each fit() call."""

    def __init__(self):
        super().__init__()
        self.phases = []

    def on_train_begin(self, logs=None):
        self.phases.append([{v.path: v.numpy().copy() for v in self.model.weights}])

    def on_train_end(self, logs=None):
        self.phases[-1].append({v.path: v.numpy().copy() for v in self.model.weights})


@pytest.mark.parametrize(
    "make_optimizer", [lambda: None, lambda: keras.optimizers.SGD(1.0)], ids=["default", "sgd"]
)
def test_fit_layerwise_trains_one_layer_at_a_time(make_optimizer, spela_mlp, digits):
    x, y = _small_train(digits, 200)
    model = spela_mlp(units=(32, 34, 34))
    model.compile(optimizer=make_optimizer())
    snapshots = _PhaseSnapshots()
    histories = model.fit_layerwise(x, y, epochs=2, batch_size=50, verbose=0, callbacks=[snapshots])
    assert len(histories) == 3
    assert all(isinstance(h, keras.callbacks.History) for h in histories)
    assert len(snapshots.phases) == 3
    for k, (layer, history, (start, end)) in enumerate(
        zip(model.exit_layers, histories, snapshots.phases)
    ):
        changed = {p for p in start if not np.array_equal(start[p], end[p])}
        assert changed == _layer_paths(layer), (k, changed)
        assert len(history.history[f"{layer.name}_loss"]) == 2
        # Only the learning layer reports a loss; every exit reports accuracy.
        others = [l.name for l in model.exit_layers if l is not layer]
        assert not any(f"{name}_loss" in history.history for name in others)
        assert all(f"{name}_accuracy" in history.history for name in others)
    # Nothing changes between phases, and the model's setting is restored.
    for (_, end), (start, _) in zip(snapshots.phases, snapshots.phases[1:]):
        for path in end:
            np.testing.assert_array_equal(end[path], start[path])
    assert model.train_layers == ["h1", "h2", "h3"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
