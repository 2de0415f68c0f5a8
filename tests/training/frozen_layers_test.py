"""Frozen layers as in Keras: layer.trainable = False freezes like train_layers, on the
host and in an export; BatchNormalization follows Keras' trainable."""

import sys

import keras
import numpy as np
import pytest

import keras_spela


# ------------------------------------------------------- frozen layers
@pytest.mark.slow
def test_layer_trainable_false_freezes_it_like_train_layers(spela_mlp, digits):
    (x, y), _ = digits
    reference = spela_mlp(units=(32, 16))
    reference.train_layers = ["h2"]
    reference.compile()
    reference.fit(x, y, batch_size=50, epochs=2, shuffle=False, verbose=0)
    model = spela_mlp(units=(32, 16))
    model.get_layer("h1").trainable = False
    model.compile()
    before = model.get_layer("h1").kernel.numpy().copy()
    history = model.fit(x, y, batch_size=50, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_array_equal(model.get_layer("h1").kernel.numpy(), before)
    assert "h1_loss" not in history.history and "h2_loss" in history.history
    assert "h1_accuracy" in history.history  # still an exit
    for expected, actual in zip(reference.get_weights(), model.get_weights()):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
    # Unfrozen again (and recompiled, as in Keras): it learns.
    model.get_layer("h1").trainable = True
    model.compile()
    model.fit(x, y, batch_size=50, epochs=1, verbose=0)
    assert not np.array_equal(model.get_layer("h1").kernel.numpy(), before)


@pytest.mark.slow
def test_export_leaves_frozen_layers_frozen(tmp_path, spela_mlp):
    model = spela_mlp(units=(16, 12))
    model.get_layer("h1").trainable = False
    export = keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=4)
    assert export.weight_names == ["h2_kernel", "h2_bias"]
    with pytest.raises(ValueError, match="frozen"):
        keras_spela.export_tflite(model, str(tmp_path / "n.tflite"), train_layers="h1")
    model.trainable = False
    with pytest.raises(ValueError, match="No SPELA layer would learn"):
        keras_spela.export_tflite_micro(model, str(tmp_path / "m_micro.tflite"))


def test_model_trainable_false_trains_nothing(spela_mlp, digits):
    model = spela_mlp(units=(32, 16))
    model.trainable = False
    model.compile()
    weights = [w.copy() for w in model.get_weights()]
    (x, y), _ = digits
    history = model.fit(x[:100], y[:100], batch_size=50, epochs=1, verbose=0)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert "h1_accuracy" in history.history and "loss" not in history.history


def test_batch_normalization_follows_keras_trainable(spela_mlp, digits):
    # Not frozen: its moving statistics follow the batches (Keras' training
    # mode); its trainable weights are never updated. Frozen: unchanged.
    for frozen in (False, True):
        norm = keras.layers.BatchNormalization(name="norm")
        model = spela_mlp(units=(16,), extra_layers=[norm])
        norm.trainable = not frozen
        model.compile()
        mean, gamma = norm.moving_mean.numpy().copy(), norm.gamma.numpy().copy()
        (x, y), _ = digits
        model.fit(x[:100], y[:100], batch_size=50, epochs=1, verbose=0)
        assert np.array_equal(norm.moving_mean.numpy(), mean) == frozen
        np.testing.assert_array_equal(norm.gamma.numpy(), gamma)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
