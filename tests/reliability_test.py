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



# ------------------------------------------------------ early exit, Keras' way
@pytest.fixture(scope="module")
def trained():
    model = _model(units=(32, 16))
    model.compile()
    (x, y), _ = DIGITS
    model.fit(x, y, batch_size=50, epochs=5, verbose=0)
    return model


def test_evaluate_early_exit_on_a_dataset_gives_the_numbers_of_arrays(trained):
    _, (x_test, y_test) = DIGITS
    expected = trained.evaluate_early_exit(x_test, y_test, threshold=0.3)
    assert expected["accuracy"] > 0.8
    # Reshuffled at every pass: each label must stay with its example.
    dataset = (
        tf.data.Dataset.from_tensor_slices((x_test, y_test))
        .shuffle(len(y_test), seed=0, reshuffle_each_iteration=True)
        .batch(32)
    )
    result = trained.evaluate_early_exit(dataset, None, threshold=0.3)
    assert result["accuracy"] == pytest.approx(expected["accuracy"])
    assert result["mean_exit"] == pytest.approx(expected["mean_exit"])
    np.testing.assert_allclose(result["exit_fractions"], expected["exit_fractions"])
    column = tf.data.Dataset.from_tensor_slices((x_test, y_test[:, None])).batch(50)
    assert trained.evaluate_early_exit(column, None, 0.3)["accuracy"] == pytest.approx(
        expected["accuracy"]
    )


def test_evaluate_early_exit_refuses_labels_it_cannot_score(trained):
    _, (x_test, y_test) = DIGITS
    with pytest.raises(ValueError, match=r"y.argmax\(-1\)"):
        trained.evaluate_early_exit(x_test, np.eye(NUM_CLASSES)[y_test], 0.3)
    bad = y_test.copy()
    bad[7] = 99
    with pytest.raises(ValueError, match=r"\[0, num_classes=10\), found 99"):
        trained.evaluate_early_exit(x_test, bad, 0.3)
    dataset = tf.data.Dataset.from_tensor_slices((x_test, bad)).batch(32)
    with pytest.raises(ValueError, match="found 99"):
        trained.evaluate_early_exit(dataset, None, 0.3)
    with pytest.raises(ValueError, match="y must be None"):
        trained.evaluate_early_exit(dataset, y_test, 0.3)
    with pytest.raises(ValueError, match="same number of rows"):
        trained.evaluate_early_exit(x_test, y_test[:-1], 0.3)


# ---------------------------------------------------- integer inputs, predict
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int32])
def test_integer_inputs_predict_like_the_same_values_as_floats(trained, x_dtype):
    _, (x_test, _) = DIGITS
    x_int = np.round(x_test[:40] * 16).astype(x_dtype)
    expected = trained.predict(x_int.astype(np.float32), verbose=0)
    np.testing.assert_allclose(trained.predict(x_int, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(trained.predict_on_batch(x_int), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(trained(x_int)), expected, atol=1e-6)
    np.testing.assert_allclose(
        trained.predict(x_int, exit=0, verbose=0),
        trained.predict(x_int.astype(np.float32), exit=0, verbose=0), atol=1e-6,
    )


def test_predict_takes_batch_size_as_its_second_argument(trained):
    _, (x_test, _) = DIGITS
    expected = trained.predict(x_test[:70], verbose=0)
    np.testing.assert_allclose(trained.predict(x_test[:70], 32, 0), expected, atol=1e-6)
    assert trained.predict(x_test[:5], 2, 0, exit="h1").shape == (5, NUM_CLASSES)


# --------------------------------------------------------- tiny activations
def test_tiny_inputs_with_a_bias_warn_once_with_the_fix(recwarn):
    (x, y), _ = DIGITS
    model = _model(units=(16, 12))
    model.compile()
    model.fit(x[:100], y[:100], batch_size=50, epochs=1, verbose=0)
    assert not [w for w in recwarn if "bias" in str(w.message)]
    with pytest.warns(UserWarning) as caught:
        model.fit(x[:100] * 1e-8, y[:100], batch_size=50, epochs=1, verbose=0)
    messages = [str(w.message) for w in caught if "bias" in str(w.message)]
    assert len(messages) == 1, messages
    assert "'h1' are far below the scale of its bias" in messages[0]
    assert "normalize_inputs=True or use_bias=False" in messages[0]
    # A scale-free layer is not warned about.
    scale_free = _model(units=(16, 12), normalize_inputs=True)
    scale_free.compile()
    recwarn.clear()
    scale_free.fit(x[:100] * 1e-8, y[:100], batch_size=50, epochs=1, verbose=0)
    assert not [w for w in recwarn if "bias" in str(w.message)]


def test_inputs_too_small_for_the_bias_rejected_with_the_fix():
    (x, y), _ = DIGITS
    model = _model(units=(16, 12))
    model.compile()
    with pytest.warns(UserWarning, match="far below the scale of its bias"):
        with pytest.raises(ValueError) as error:
            model.fit(x[:50] * 1e-20, y[:50], batch_size=50, epochs=1, verbose=0)
    message = str(error.value)
    assert message.startswith("Rejected batch: the local loss of layer 'h1'"), message
    assert "far below the scale of its bias" in message
    assert "normalize_inputs=True or use_bias=False" in message
    assert "\\" not in message and "\n" not in message


# ------------------------------------------------------- Keras habits
def test_keras_functional_style_builds_a_chain():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    hidden = SpelaDense(16, num_classes=NUM_CLASSES, name="h1")(inputs)
    outputs = SpelaDense(12, num_classes=NUM_CLASSES, name="h2")(hidden)
    model = SpelaModel(inputs, outputs, num_classes=NUM_CLASSES)
    assert [layer.name for layer in model.stack] == ["h1", "h2"]
    assert model.example_input_shape == (64,)
    keywords = SpelaModel(inputs=inputs, outputs=outputs, num_classes=NUM_CLASSES,
                          name="by_keywords")
    assert keywords.name == "by_keywords" and keywords.stack == model.stack
    model.compile()
    (x, y), _ = DIGITS
    history = model.fit(x[:200], y[:200], batch_size=50, epochs=1, verbose=0)
    assert "h1_loss" in history.history
    branch = SpelaDense(12, num_classes=NUM_CLASSES, name="side")(hidden)
    with pytest.raises(ValueError, match="only when it is a chain"):
        SpelaModel(inputs, [outputs, branch], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=r"pass num_classes= to SpelaDense .*functional"):
        SpelaDense(12)(inputs)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_unbatched_dataset_one_clear_error(trained, method):
    _, (x_test, y_test) = DIGITS
    dataset = tf.data.Dataset.from_tensor_slices((x_test, y_test))
    kwargs = {"epochs": 1} if method == "fit" else {}
    with pytest.raises(ValueError, match=r"single examples .*dataset.batch\(32\)"):
        getattr(trained, method)(dataset, verbose=0, **kwargs)


def test_wrong_number_of_features_one_clear_error():
    model = _model(units=(16, 12))
    model.compile()
    (x, y), _ = DIGITS
    # Traced once for the right shape: a retraced step would see unknown shapes.
    model.fit(x[:16], y[:16], epochs=1, verbose=0)
    model.predict(x[:16], verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    x, y = x[:16, :63], y[:16]
    calls = {
        "fit": lambda: model.fit(x, y, epochs=1, verbose=0),
        "fit_dataset": lambda: model.fit(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0
        ),
        "evaluate": lambda: model.evaluate(x, y, verbose=0),
        "predict": lambda: model.predict(x, verbose=0),
        "predict_on_batch": lambda: model.predict_on_batch(x),
        "train_on_batch": lambda: model.train_on_batch(x, y),
        "call": lambda: model(x),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"shape \(64,\) .*\((16|None), 63\)"):
            call()
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_x_as_a_dict_one_clear_error(trained, method):
    _, (x_test, y_test) = DIGITS
    args = (x_test[:20],) if method == "predict" else (x_test[:20], y_test[:20])
    with pytest.raises(ValueError, match=r"one array or tensor .*x\['pixels'\]"):
        getattr(trained, method)({"pixels": args[0]}, *args[1:], verbose=0)


def test_h5_save_refused_pointing_to_keras_format(tmp_path, trained):
    with pytest.raises(ValueError, match=r"\.keras format.*ending in \.keras"):
        trained.save(str(tmp_path / "m.h5"))
    assert not (tmp_path / "m.h5").exists()
    trained.save(str(tmp_path / "m.keras"))
    restored = keras.models.load_model(str(tmp_path / "m.keras"))
    _, (x_test, _) = DIGITS
    np.testing.assert_allclose(
        restored.predict(x_test[:8], verbose=0), trained.predict(x_test[:8], verbose=0),
        rtol=1e-6,
    )


def test_set_weights_with_nan_refused_and_weights_kept():
    model = _model(units=(16, 12))
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


def test_per_layer_mixed_policy_trains_like_the_global_one():
    (x, y), _ = DIGITS
    trained_weights = []
    for dtype in (None, "mixed_float16"):
        keras.utils.set_random_seed(0)
        kwargs = {} if dtype is None else {"dtype": dtype}
        model = SpelaModel(
            [keras.Input((64,)), SpelaDense(16, name="h1", **kwargs),
             SpelaDense(12, name="h2", **kwargs)],
            num_classes=NUM_CLASSES,
        )
        assert {layer.compute_dtype for layer in model.stack} == {"float32"}
        model.compile()
        model.fit(x[:100], y[:100], batch_size=50, epochs=1, shuffle=False, verbose=0)
        trained_weights.append(model.get_weights())
    for weights in trained_weights[1:]:
        for expected, actual in zip(trained_weights[0], weights):
            np.testing.assert_array_equal(actual, expected)
    assert SpelaDense(4, dtype=keras.DTypePolicy("mixed_bfloat16")).compute_dtype == "float32"
    with pytest.raises(ValueError, match="give a mixed policy"):
        SpelaDense(4, dtype="float16")

if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
