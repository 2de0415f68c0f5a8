"""train_layers: only the named layers learn; set in a callback it takes effect in fit;
unknown names are refused."""

import sys

import keras
import numpy as np
import pytest


def _small_train(digits, n=500):
    (x, y), _ = digits
    return x[:n], y[:n]


def _snapshot(model):
    return {v.path: v.numpy().copy() for v in model.weights}


def _changed(before, model):
    """Paths of the model's weights that differ from the snapshot."""
    return {v.path for v in model.weights if not np.array_equal(before[v.path], v.numpy())}


def _layer_paths(layer, trainable_only=True):
    variables = layer.trainable_variables if trainable_only else layer.weights
    return {v.path for v in variables}


@pytest.mark.parametrize("name", ["h1", "h2"])
def test_train_layers_only_updates_named_layer(name, spela_mlp, digits):
    x, y = _small_train(digits, 200)
    model = spela_mlp(units=(32, 34), train_layers=[name])
    model.compile()
    before = _snapshot(model)
    history = model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    assert _changed(before, model) == _layer_paths(model.get_layer(name))
    assert np.isfinite(history.history[f"{name}_loss"][0])
    assert history.history[f"{name}_loss"][0] > 0


def test_setting_train_layers_in_a_callback_takes_effect_in_fit(spela_mlp, digits):
    x, y = _small_train(digits, 64)
    model = spela_mlp(units=(16, 12), seed=3)
    model.compile()
    first, second = model.exit_layers

    class SwitchAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.first_kernel = first.kernel.numpy()
                model.train_layers = [second.name]

    switch = SwitchAfterFirstEpoch()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[switch])
    # The second epoch left the first layer alone.
    np.testing.assert_array_equal(switch.first_kernel, first.kernel.numpy())


def test_unknown_train_layers_rejected(spela_mlp):
    with pytest.raises(ValueError, match="nope"):
        spela_mlp(units=(16, 12), train_layers=["h1", "nope"])
    with pytest.raises(ValueError, match="train_layers"):
        spela_mlp(units=(16, 12), train_layers="nope")
    with pytest.raises(ValueError, match="train_layers"):
        spela_mlp(units=(16, 12), train_layers=True)
    with pytest.raises(ValueError, match="train_layers"):
        spela_mlp(units=(16, 12), train_layers=[])
    with pytest.raises(ValueError, match="distinct"):
        spela_mlp(units=(16, 12), train_layers=["h1", "h1"])
    # The same forms as the exporters: one name, the last k layers.
    assert spela_mlp(units=(16, 12), train_layers="h1").train_layers == ["h1"]
    assert spela_mlp(units=(16, 12), train_layers=1).train_layers == ["h2"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
