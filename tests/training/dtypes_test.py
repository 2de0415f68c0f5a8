"""Precision policies and input dtypes: mixed_float16 trains like float32, float64,
float16, uint8 and integer inputs, tiny activations learn like unit ones."""

import sys

import keras
import numpy as np
import pytest

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela import datasets

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES


def _fit_accuracy(model, digits, scale=1.0, epochs=3, x_dtype=np.float32):
    (x, y), (x_test, y_test) = digits
    model.fit((x * scale).astype(x_dtype), y, batch_size=50, epochs=epochs, verbose=0)
    result = model.evaluate((x_test * scale).astype(x_dtype), y_test, verbose=0, return_dict=True)
    return result["accuracy"]


@pytest.fixture(scope="module")
def float32_accuracy(spela_mlp, digits):
    model = spela_mlp()
    model.compile()
    return _fit_accuracy(model, digits)


# ------------------------------------------------------------ precision
def test_mixed_float16_trains_like_float32(float32_accuracy, spela_mlp, digits):
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = spela_mlp(extra_layers=[keras.layers.Dense(64, name="plain")])
        model.compile()
        # No loss is scaled: the closed-form gradients must not be unscaled.
        assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        # SPELA layers keep their rule in float32; plain layers follow the policy.
        assert model.get_layer("h1").compute_dtype == "float32"
        assert model.get_layer("plain").compute_dtype == "float16"
        before = model.get_layer("h1").kernel.numpy().copy()
        accuracy = _fit_accuracy(model, digits)
        moved = np.max(np.abs(model.get_layer("h1").kernel.numpy() - before))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert moved > 0.05
    assert accuracy >= float32_accuracy - 0.05, (accuracy, float32_accuracy)


@pytest.mark.slow
def test_mixed_float16_export_refused_clearly_and_float32_copy_exports(tmp_path, spela_mlp):
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = spela_mlp(extra_layers=[keras.layers.Dense(64, name="plain")])
        with pytest.raises(ValueError, match=r"\['plain'\] compute in float16"):
            keras_spela.export_tflite(model, str(tmp_path / "m.tflite"))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy = spela_mlp(extra_layers=[keras.layers.Dense(64, name="plain")])
    copy.set_weights(model.get_weights())
    keras_spela.export_tflite(copy, str(tmp_path / "m.tflite"), batch_size=4)


@pytest.mark.parametrize("x_dtype", [np.float64, np.float16])
def test_float_inputs_of_other_dtypes_train(x_dtype, float32_accuracy, spela_mlp, digits):
    model = spela_mlp()
    model.compile()
    assert _fit_accuracy(model, digits, x_dtype=x_dtype) >= float32_accuracy - 0.03


def test_uint8_images_through_rescaling_train(float32_accuracy, spela_mlp, digits):
    model = spela_mlp(extra_layers=[keras.layers.Rescaling(1.0 / 255)])
    model.compile()
    (x, y), (x_test, y_test) = digits
    model.fit((x * 255).astype(np.uint8), y, batch_size=50, epochs=3, verbose=0)
    result = model.evaluate((x_test * 255).astype(np.uint8), y_test, verbose=0, return_dict=True)
    assert result["accuracy"] >= float32_accuracy - 0.05


# --------------------------------------------------- tiny activations
@pytest.mark.parametrize("scale", [1e-8, 1e-20])
@pytest.mark.parametrize("options", [{"use_bias": False}, {"normalize_inputs": True}])
def test_tiny_inputs_learn_like_unit_inputs(scale, options, float32_accuracy, spela_mlp, digits):
    # The cosine is scale-free: inputs of 1e-8 (or 1e-20, whose squares
    # underflow float32) must still be learned from. (A bias, whose gradient
    # is not scale-free, would dominate such outputs after one step: use
    # normalize_inputs or no bias for features of tiny magnitude.)
    model = spela_mlp(**options)
    model.compile()
    before = model.get_layer("h1").kernel.numpy().copy()
    accuracy = _fit_accuracy(model, digits, scale=scale)
    assert np.max(np.abs(model.get_layer("h1").kernel.numpy() - before)) > 0.05
    assert accuracy >= float32_accuracy - 0.05, (scale, accuracy)


# ---------------------------------------------------- integer inputs, predict
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int32])
def test_integer_inputs_predict_like_the_same_values_as_floats(x_dtype, trained_h2_mlp, digits):
    _, (x_test, _) = digits
    x_int = np.round(x_test[:40] * 16).astype(x_dtype)
    expected = trained_h2_mlp.predict(x_int.astype(np.float32), verbose=0)
    np.testing.assert_allclose(trained_h2_mlp.predict(x_int, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(trained_h2_mlp.predict_on_batch(x_int), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(trained_h2_mlp(x_int)), expected, atol=1e-6)
    np.testing.assert_allclose(
        trained_h2_mlp.predict(x_int, exit=0, verbose=0),
        trained_h2_mlp.predict(x_int.astype(np.float32), exit=0, verbose=0),
        atol=1e-6,
    )


# --------------------------------------------------------- tiny activations
def test_tiny_inputs_with_a_bias_warn_once_with_the_fix(recwarn, spela_mlp, digits):
    (x, y), _ = digits
    model = spela_mlp(units=(16, 12))
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
    scale_free = spela_mlp(units=(16, 12), normalize_inputs=True)
    scale_free.compile()
    recwarn.clear()
    scale_free.fit(x[:100] * 1e-8, y[:100], batch_size=50, epochs=1, verbose=0)
    assert not [w for w in recwarn if "bias" in str(w.message)]


def test_inputs_too_small_for_the_bias_rejected_with_the_fix(spela_mlp, digits):
    (x, y), _ = digits
    model = spela_mlp(units=(16, 12))
    model.compile()
    with pytest.warns(UserWarning, match="far below the scale of its bias"):
        with pytest.raises(ValueError) as error:
            model.fit(x[:50] * 1e-20, y[:50], batch_size=50, epochs=1, verbose=0)
    message = str(error.value)
    assert message.startswith("Rejected batch: the local loss of layer 'h1'"), message
    assert "far below the scale of its bias" in message
    assert "normalize_inputs=True or use_bias=False" in message
    assert "\\" not in message and "\n" not in message


def test_per_layer_mixed_policy_trains_like_the_global_one(digits):
    (x, y), _ = digits
    trained_weights = []
    for dtype in (None, "mixed_float16"):
        keras.utils.set_random_seed(0)
        kwargs = {} if dtype is None else {"dtype": dtype}
        model = SpelaModel(
            [
                keras.Input((64,)),
                SpelaDense(16, name="h1", **kwargs),
                SpelaDense(12, name="h2", **kwargs),
            ],
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
