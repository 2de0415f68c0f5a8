"""SpelaModel behaves as a Keras user expects: callbacks in mode "auto", truncated and
SavedModel exports, numpy numbers, chains from the functional API, .h5 refused, NaN
weights refused, a rejected batch is one clear error that changes no weight and no
optimizer variable."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela import datasets

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES


# ------------------------------------------------------ rejected batch
def _optimizer_state(model):
    return [np.array(v.numpy(), copy=True) for v in model.optimizer.variables]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_rejected_batch_changes_no_weight_and_no_optimizer_variable(jit_compile, spela_mlp, digits):
    model = spela_mlp(units=(16, 12))
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=jit_compile)
    (x, y), _ = digits
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


def test_rejected_batch_error_is_one_clear_line(spela_mlp, digits):
    model = spela_mlp(units=(16, 12))
    model.compile()
    (x, y), _ = digits
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


# ----------------------------------------------------------- callbacks
@pytest.mark.parametrize("monitor", ["val_accuracy", "val_h1_accuracy", "h2_loss", "val_loss"])
def test_monitor_callbacks_in_auto_mode(tmp_path, monitor, spela_mlp, digits):
    model = spela_mlp(units=(16, 12))
    model.compile()
    (x, y), (x_test, y_test) = digits
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=5),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, patience=5),
        keras.callbacks.ModelCheckpoint(
            str(tmp_path / "best.keras"), monitor=monitor, save_best_only=True
        ),
    ]
    model.fit(
        x,
        y,
        batch_size=100,
        epochs=2,
        verbose=0,
        validation_data=(x_test, y_test),
        callbacks=callbacks,
    )
    direction = callbacks[0].monitor_op
    assert direction == (keras.ops.less if monitor.endswith("loss") else keras.ops.greater)
    assert (tmp_path / "best.keras").exists()


# ------------------------------------------------------ model variants
@pytest.mark.slow
def test_truncated_model_is_built_and_exports(tmp_path, spela_mlp):
    model = spela_mlp(units=(16, 12))
    cheap = model.truncated(0)
    assert cheap.built and cheap.example_input_shape == (64,)
    export = keras_spela.export_tflite(cheap, str(tmp_path / "cheap.tflite"), batch_size=4)
    assert export.weight_names == ["h1_kernel", "h1_bias"]


def test_saved_model_export_after_fit_and_predict(tmp_path, spela_mlp, digits):
    model = spela_mlp(units=(16, 12))
    model.compile()
    (x, y), _ = digits
    model.fit(x[:100], y[:100], batch_size=50, epochs=1, verbose=0)
    expected = model.predict(x[:8], verbose=0)
    model.export(str(tmp_path / "saved"))
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(restored.serve(x[:8]).numpy(), expected, rtol=1e-5)


@pytest.mark.slow
def test_numpy_numbers_accepted_where_python_numbers_are(tmp_path, digits):
    keras.utils.set_random_seed(0)
    model = SpelaModel(
        [
            keras.Input((64,)),
            SpelaDense(np.int64(16), temperature=np.float32(0.2), seed=np.int32(1)),
            SpelaDense(np.int32(12), negative_slope=np.float64(0.01)),
        ],
        num_classes=np.int64(NUM_CLASSES),
        train_layers=np.int64(1),
    )
    model.compile()
    (x, y), _ = digits
    model.fit(x[:50], y[:50], batch_size=np.int64(25), epochs=np.int32(1), verbose=0)
    assert model.predict(x[:3], exit=np.int64(0), verbose=0).shape == (3, NUM_CLASSES)
    keras_spela.export_tflite(
        model,
        str(tmp_path / "m.tflite"),
        batch_size=np.int64(4),
        learning_rate=np.float32(0.1),
        optimizer="sgd",
    )


def test_layers_listed_twice_or_sharing_a_name_refused():
    layer = SpelaDense(16, name="same")
    with pytest.raises(ValueError, match=r"\['same'\] appear more than once"):
        SpelaModel([keras.Input((64,)), layer, layer], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="appear more than once"):
        SpelaModel(
            [keras.Input((64,)), SpelaDense(16, name="same"), SpelaDense(12, name="same")],
            num_classes=NUM_CLASSES,
        )


def test_predict_takes_batch_size_as_its_second_argument(trained_h2_mlp, digits):
    _, (x_test, _) = digits
    expected = trained_h2_mlp.predict(x_test[:70], verbose=0)
    np.testing.assert_allclose(trained_h2_mlp.predict(x_test[:70], 32, 0), expected, atol=1e-6)
    assert trained_h2_mlp.predict(x_test[:5], 2, 0, exit="h1").shape == (5, NUM_CLASSES)


# ------------------------------------------------------- Keras habits
def test_keras_functional_style_builds_a_chain(digits):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    hidden = SpelaDense(16, num_classes=NUM_CLASSES, name="h1")(inputs)
    outputs = SpelaDense(12, num_classes=NUM_CLASSES, name="h2")(hidden)
    model = SpelaModel(inputs, outputs, num_classes=NUM_CLASSES)
    assert [layer.name for layer in model.stack] == ["h1", "h2"]
    assert model.example_input_shape == (64,)
    keywords = SpelaModel(
        inputs=inputs, outputs=outputs, num_classes=NUM_CLASSES, name="by_keywords"
    )
    assert keywords.name == "by_keywords" and keywords.stack == model.stack
    model.compile()
    (x, y), _ = digits
    history = model.fit(x[:200], y[:200], batch_size=50, epochs=1, verbose=0)
    assert "h1_loss" in history.history
    branch = SpelaDense(12, num_classes=NUM_CLASSES, name="side")(hidden)
    with pytest.raises(ValueError, match="only when it is a chain"):
        SpelaModel(inputs, [outputs, branch], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=r"pass num_classes= to SpelaDense .*functional"):
        SpelaDense(12)(inputs)


def test_h5_save_refused_pointing_to_keras_format(tmp_path, trained_h2_mlp, digits):
    with pytest.raises(ValueError, match=r"\.keras format.*ending in \.keras"):
        trained_h2_mlp.save(str(tmp_path / "m.h5"))
    assert not (tmp_path / "m.h5").exists()
    trained_h2_mlp.save(str(tmp_path / "m.keras"))
    restored = keras.models.load_model(str(tmp_path / "m.keras"))
    _, (x_test, _) = digits
    np.testing.assert_allclose(
        restored.predict(x_test[:8], verbose=0),
        trained_h2_mlp.predict(x_test[:8], verbose=0),
        rtol=1e-6,
    )


def test_set_weights_with_nan_refused_and_weights_kept(spela_mlp):
    model = spela_mlp(units=(16, 12))
    weights = [w.copy() for w in model.get_weights()]
    bad = [w.copy() for w in weights]
    bad[2] = bad[2] + 1.0  # a weight before the bad one: must not be set either
    bad[3][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values for '.*h2/kernel'"):
        model.set_weights(bad)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    bad[3][0, 0] = np.inf
    with pytest.raises(ValueError, match="no weight was changed"):
        model.set_weights(bad)
    model.set_weights([w * 0.5 for w in weights])
    np.testing.assert_array_equal(model.get_weights()[0], weights[0] * 0.5)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
