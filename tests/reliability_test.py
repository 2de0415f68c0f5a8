"""SpelaModel behaves as a Keras user expects: precision policies, input
dtypes, tiny activations, frozen layers, callbacks in mode "auto", truncated
models, numpy numbers, and one clear error for a rejected batch that leaves
every weight and every optimizer variable as it was."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela import datasets

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES
DIGITS = datasets.load_digits()


def _model(units=(64, 34), seed=0, extra_layers=(), **layer_kwargs):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,)), *extra_layers]
    layers += [SpelaDense(u, name=f"h{i + 1}", **layer_kwargs) for i, u in enumerate(units)]
    return SpelaModel(layers, num_classes=NUM_CLASSES)


def _fit_accuracy(model, scale=1.0, epochs=3, x_dtype=np.float32):
    (x, y), (x_test, y_test) = DIGITS
    model.fit((x * scale).astype(x_dtype), y, batch_size=50, epochs=epochs, verbose=0)
    result = model.evaluate(
        (x_test * scale).astype(x_dtype), y_test, verbose=0, return_dict=True
    )
    return result["accuracy"]


@pytest.fixture(scope="module")
def float32_accuracy():
    model = _model()
    model.compile()
    return _fit_accuracy(model)


# ------------------------------------------------------------ precision
def test_mixed_float16_trains_like_float32(float32_accuracy):
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model(extra_layers=[keras.layers.Dense(64, name="plain")])
        model.compile()
        # No loss is scaled: the closed-form gradients must not be unscaled.
        assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        # SPELA layers keep their rule in float32; plain layers follow the policy.
        assert model.get_layer("h1").compute_dtype == "float32"
        assert model.get_layer("plain").compute_dtype == "float16"
        before = model.get_layer("h1").kernel.numpy().copy()
        accuracy = _fit_accuracy(model)
        moved = np.max(np.abs(model.get_layer("h1").kernel.numpy() - before))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert moved > 0.05
    assert accuracy >= float32_accuracy - 0.05, (accuracy, float32_accuracy)


def test_mixed_float16_export_refused_clearly_and_float32_copy_exports(tmp_path):
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model(extra_layers=[keras.layers.Dense(64, name="plain")])
        with pytest.raises(ValueError, match=r"\['plain'\] compute in float16"):
            keras_spela.export_tflite(model, str(tmp_path / "m.tflite"))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy = _model(extra_layers=[keras.layers.Dense(64, name="plain")])
    copy.set_weights(model.get_weights())
    keras_spela.export_tflite(copy, str(tmp_path / "m.tflite"), batch_size=4)


@pytest.mark.parametrize("x_dtype", [np.float64, np.float16])
def test_float_inputs_of_other_dtypes_train(x_dtype, float32_accuracy):
    model = _model()
    model.compile()
    assert _fit_accuracy(model, x_dtype=x_dtype) >= float32_accuracy - 0.03


def test_uint8_images_through_rescaling_train(float32_accuracy):
    model = _model(extra_layers=[keras.layers.Rescaling(1.0 / 255)])
    model.compile()
    (x, y), (x_test, y_test) = DIGITS
    model.fit((x * 255).astype(np.uint8), y, batch_size=50, epochs=3, verbose=0)
    result = model.evaluate((x_test * 255).astype(np.uint8), y_test, verbose=0,
                            return_dict=True)
    assert result["accuracy"] >= float32_accuracy - 0.05


# --------------------------------------------------- tiny activations
@pytest.mark.parametrize("scale", [1e-8, 1e-20])
@pytest.mark.parametrize("options", [{"use_bias": False}, {"normalize_inputs": True}])
def test_tiny_inputs_learn_like_unit_inputs(scale, options, float32_accuracy):
    # The cosine is scale-free: inputs of 1e-8 (or 1e-20, whose squares
    # underflow float32) must still be learned from. (A bias, whose gradient
    # is not scale-free, would dominate such outputs after one step: use
    # normalize_inputs or no bias for features of tiny magnitude.)
    model = _model(**options)
    model.compile()
    before = model.get_layer("h1").kernel.numpy().copy()
    accuracy = _fit_accuracy(model, scale=scale)
    assert np.max(np.abs(model.get_layer("h1").kernel.numpy() - before)) > 0.05
    assert accuracy >= float32_accuracy - 0.05, (scale, accuracy)


# ------------------------------------------------------ rejected batch
def _optimizer_state(model):
    return [np.array(v.numpy(), copy=True) for v in model.optimizer.variables]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_rejected_batch_changes_no_weight_and_no_optimizer_variable(jit_compile):
    model = _model(units=(16, 12))
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=jit_compile)
    (x, y), _ = DIGITS
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # state is non-zero
    weights = [w.copy() for w in model.get_weights()]
    state = _optimizer_state(model)
    iterations = int(model.optimizer.iterations.numpy())
    bad = x[:32].copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="Rejected batch: the inputs contain NaN"):
        model.fit(bad, y[:32], batch_size=32, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == iterations
    for before, after in zip(state, _optimizer_state(model)):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_rejected_batch_error_is_one_clear_line():
    model = _model(units=(16, 12))
    model.compile()
    (x, y), _ = DIGITS
    y = y[:20].copy()
    y[4] = NUM_CLASSES
    with pytest.raises(ValueError) as error:
        model.fit(x[:20], y, batch_size=20, epochs=1, verbose=0)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("Rejected batch: found a label outside [0, num_classes=10)")
    assert error.value.__cause__ is None and error.value.__suppress_context__
    with pytest.raises(ValueError, match="Rejected batch: found a label"):
        model.evaluate(x[:20], y, verbose=0)
    with pytest.raises(ValueError, match="Rejected batch: found a label"):
        model.train_on_batch(x[:20], y)


# ------------------------------------------------------- frozen layers
def test_layer_trainable_false_freezes_it_like_train_layers():
    (x, y), _ = DIGITS
    reference = _model(units=(32, 16))
    reference.train_layers = ["h2"]
    reference.compile()
    reference.fit(x, y, batch_size=50, epochs=2, shuffle=False, verbose=0)
    model = _model(units=(32, 16))
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


def test_export_leaves_frozen_layers_frozen(tmp_path):
    model = _model(units=(16, 12))
    model.get_layer("h1").trainable = False
    export = keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=4)
    assert export.weight_names == ["h2_kernel", "h2_bias"]
    with pytest.raises(ValueError, match="frozen"):
        keras_spela.export_tflite(model, str(tmp_path / "n.tflite"), train_layers="h1")
    model.trainable = False
    with pytest.raises(ValueError, match="No SPELA layer would learn"):
        keras_spela.export_tflite_micro(model, str(tmp_path / "m_micro.tflite"))


def test_model_trainable_false_trains_nothing():
    model = _model(units=(32, 16))
    model.trainable = False
    model.compile()
    weights = [w.copy() for w in model.get_weights()]
    (x, y), _ = DIGITS
    history = model.fit(x[:100], y[:100], batch_size=50, epochs=1, verbose=0)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert "h1_accuracy" in history.history and "loss" not in history.history


def test_batch_normalization_follows_keras_trainable():
    # Not frozen: its moving statistics follow the batches (Keras' training
    # mode); its trainable weights are never updated. Frozen: unchanged.
    for frozen in (False, True):
        norm = keras.layers.BatchNormalization(name="norm")
        model = _model(units=(16,), extra_layers=[norm])
        norm.trainable = not frozen
        model.compile()
        mean, gamma = norm.moving_mean.numpy().copy(), norm.gamma.numpy().copy()
        (x, y), _ = DIGITS
        model.fit(x[:100], y[:100], batch_size=50, epochs=1, verbose=0)
        assert np.array_equal(norm.moving_mean.numpy(), mean) == frozen
        np.testing.assert_array_equal(norm.gamma.numpy(), gamma)


# ----------------------------------------------------------- callbacks
@pytest.mark.parametrize("monitor", ["val_accuracy", "val_h1_accuracy", "h2_loss",
                                     "val_loss"])
def test_monitor_callbacks_in_auto_mode(tmp_path, monitor):
    model = _model(units=(16, 12))
    model.compile()
    (x, y), (x_test, y_test) = DIGITS
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=5),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, patience=5),
        keras.callbacks.ModelCheckpoint(
            str(tmp_path / "best.keras"), monitor=monitor, save_best_only=True
        ),
    ]
    model.fit(x, y, batch_size=100, epochs=2, verbose=0,
              validation_data=(x_test, y_test), callbacks=callbacks)
    direction = callbacks[0].monitor_op
    assert direction == (keras.ops.less if monitor.endswith("loss") else keras.ops.greater)
    assert (tmp_path / "best.keras").exists()


# ------------------------------------------------------ model variants
def test_truncated_model_is_built_and_exports(tmp_path):
    model = _model(units=(16, 12))
    cheap = model.truncated(0)
    assert cheap.built and cheap.example_input_shape == (64,)
    export = keras_spela.export_tflite(cheap, str(tmp_path / "cheap.tflite"), batch_size=4)
    assert export.weight_names == ["h1_kernel", "h1_bias"]


def test_saved_model_export_after_fit_and_predict(tmp_path):
    model = _model(units=(16, 12))
    model.compile()
    (x, y), _ = DIGITS
    model.fit(x[:100], y[:100], batch_size=50, epochs=1, verbose=0)
    expected = model.predict(x[:8], verbose=0)
    model.export(str(tmp_path / "saved"))
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(restored.serve(x[:8]).numpy(), expected, rtol=1e-5)


def test_numpy_numbers_accepted_where_python_numbers_are(tmp_path):
    keras.utils.set_random_seed(0)
    model = SpelaModel(
        [keras.Input((64,)),
         SpelaDense(np.int64(16), temperature=np.float32(0.2), seed=np.int32(1)),
         SpelaDense(np.int32(12), negative_slope=np.float64(0.01))],
        num_classes=np.int64(NUM_CLASSES),
        train_layers=np.int64(1),
    )
    model.compile()
    (x, y), _ = DIGITS
    model.fit(x[:50], y[:50], batch_size=np.int64(25), epochs=np.int32(1), verbose=0)
    assert model.predict(x[:3], exit=np.int64(0), verbose=0).shape == (3, NUM_CLASSES)
    keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=np.int64(4),
                              learning_rate=np.float32(0.1), optimizer="sgd")


def test_layers_listed_twice_or_sharing_a_name_refused():
    layer = SpelaDense(16, name="same")
    with pytest.raises(ValueError, match=r"\['same'\] appear more than once"):
        SpelaModel([keras.Input((64,)), layer, layer], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="appear more than once"):
        SpelaModel([keras.Input((64,)), SpelaDense(16, name="same"),
                    SpelaDense(12, name="same")], num_classes=NUM_CLASSES)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
