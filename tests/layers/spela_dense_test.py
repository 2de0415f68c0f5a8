"""Tests for keras_spela.layers.SpelaDense."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spela.core import class_vectors as class_vectors_lib
from keras_spela.core import rules
from keras_spela.layers import SpelaDense

INPUT_DIM = 7
UNITS = 8
NUM_CLASSES = 3


def _data(seed=0, batch=6):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, INPUT_DIM)).astype(np.float32)
    y = (np.arange(batch) % NUM_CLASSES).astype(np.int32)
    return x, y


def _built(**kwargs):
    kwargs.setdefault("num_classes", NUM_CLASSES)
    kwargs.setdefault("seed", 1)
    layer = SpelaDense(UNITS, **kwargs)
    layer.build((None, INPUT_DIM))
    return layer


def _snapshot(layer):
    return [v.numpy().copy() for v in layer.weights]


# -------------------------------------------------------------------- build
@pytest.mark.parametrize("use_bias", [True, False])
def test_build_creates_trainable_kernel_bias_and_fixed_class_vectors(use_bias):
    layer = _built(use_bias=use_bias)
    assert layer.built
    assert layer.kernel.shape == (INPUT_DIM, UNITS)
    assert layer.class_vectors.shape == (NUM_CLASSES, UNITS)
    trainable = [v.path.split("/")[-1] for v in layer.trainable_variables]
    non_trainable = [v.path.split("/")[-1] for v in layer.non_trainable_variables]
    assert trainable == (["kernel", "bias"] if use_bias else ["kernel"])
    assert non_trainable == ["class_vectors"]
    if use_bias:
        assert layer.bias.shape == (UNITS,)
    else:
        assert layer.bias is None
    vectors = layer.class_vectors.numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_build_class_vectors_follow_kind_and_seed():
    layer = _built(class_vectors="simplex", seed=5)
    np.testing.assert_allclose(
        layer.class_vectors.numpy(),
        class_vectors_lib.simplex_vectors(NUM_CLASSES, UNITS, seed=5),
        rtol=1e-6,
    )


def test_seed_fixes_kernel_and_class_vectors():
    a, b, c = _built(seed=3), _built(seed=3), _built(seed=4)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert not np.allclose(a.kernel.numpy(), c.kernel.numpy())
    assert not np.allclose(a.class_vectors.numpy(), c.class_vectors.numpy())


# --------------------------------------------------------------------- call
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"activation": "tanh", "normalize_inputs": True},
        {"activation": "relu", "binary_weights": True, "use_bias": False},
        {"activation": "sigmoid", "local_loss": "euclidean"},
    ],
)
def test_call_equals_rules_dense_forward(kwargs):
    layer = _built(bias_initializer="random_normal", **kwargs)
    x, _ = _data()
    expected = rules.dense_forward(tf.constant(x), layer.kernel, layer.bias, layer.rule)[2]
    np.testing.assert_allclose(layer(x).numpy(), expected.numpy(), rtol=1e-6)


def test_call_leaky_relu_matches_numpy():
    layer = _built(negative_slope=0.2, bias_initializer="random_normal")
    x, _ = _data()
    z = x @ layer.kernel.numpy() + layer.bias.numpy()
    np.testing.assert_allclose(layer(x).numpy(), np.where(z > 0, z, 0.2 * z), rtol=1e-5, atol=1e-6)


def test_class_scores_are_cosines_in_range():
    layer = _built()
    x, _ = _data(batch=20)
    outputs = layer(x)
    scores = layer.class_scores(outputs).numpy()
    assert scores.shape == (20, NUM_CLASSES)
    assert np.all(scores <= 1.0 + 1e-6) and np.all(scores >= -1.0 - 1e-6)
    out = outputs.numpy()
    v = layer.class_vectors.numpy()
    expected = (out / np.linalg.norm(out, axis=1, keepdims=True)) @ v.T
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    # An output equal to a class vector scores exactly 1 with it.
    np.testing.assert_allclose(
        layer.class_scores(tf.constant(v)).numpy().diagonal(), 1.0, atol=1e-6
    )


def test_local_error_changes_no_variable_and_gradients_match_a_layer_tape():
    # The one oracle: a GradientTape scoped to this layer's own variables.
    layer = _built()
    x, y = _data()
    before = _snapshot(layer)
    targets = rules.one_hot(tf.constant(y), NUM_CLASSES)
    with tf.GradientTape() as tape:
        error = layer.local_error(tf.constant(x), targets)
    expected = tape.gradient(error.loss, layer.trainable_variables)
    gradients = layer.parameter_gradients(error)
    for b, v in zip(before, layer.weights):
        np.testing.assert_array_equal(b, v.numpy())
    assert len(gradients) == len(layer.trainable_variables) == 2
    for g, e, var in zip(gradients, expected, layer.trainable_variables):
        assert g.shape == var.shape
        assert np.max(np.abs(e.numpy())) > 0
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(error.outputs.numpy(), layer(x).numpy(), rtol=1e-6)
    h, grad_z = layer.kernel_gradient_factors(error)
    np.testing.assert_allclose((tf.transpose(h) @ grad_z).numpy(), gradients[0].numpy(), rtol=1e-6)


def test_local_error_uses_given_weights_instead_of_its_own():
    layer = _built()
    x, y = _data()
    targets = rules.one_hot(tf.constant(y), NUM_CLASSES)
    kernel = tf.constant(layer.kernel.numpy() * 2.0)
    error = layer.local_error(tf.constant(x), targets, weights={"kernel": kernel})
    expected = rules.dense_forward(tf.constant(x), kernel, layer.bias, layer.rule)[2]
    np.testing.assert_allclose(error.outputs.numpy(), expected.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="no trainable weight"):
        layer.parameter_gradient(error, "moving_mean")


# ------------------------------------------------------------------- config
CONFIGS = [
    {},
    {"activation": "relu"},
    {"activation": "tanh"},
    {"activation": "sigmoid"},
    {"activation": "linear"},
    {"negative_slope": 0.001},
    {"local_loss": "cosine"},
    {"local_loss": "log_cosine"},
    {"local_loss": "euclidean"},
    {"temperature": 0.5},
    {"class_vectors": "simplex"},
    {"class_vectors": "axis_simplex"},
    {"class_vectors": "random"},
    {"normalize_inputs": True},
    {"binary_weights": True},
    {"use_bias": False},
    {"kernel_initializer": "glorot_normal"},
    {"kernel_initializer": keras.initializers.RandomUniform(-0.3, 0.3, seed=2)},
    {"bias_initializer": "ones"},
    {"seed": None},
    {"name": "my_spela"},
    {"class_vectors": class_vectors_lib.random_vectors(NUM_CLASSES, UNITS, seed=9)},
]


@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda k: ",".join(k) or "default")
def test_get_config_from_config_round_trip(kwargs):
    kwargs = dict(kwargs)
    kwargs.setdefault("seed", 4)
    layer = SpelaDense(UNITS, num_classes=NUM_CLASSES, **kwargs)
    config = layer.get_config()
    clone = SpelaDense.from_config(config)
    assert clone.get_config() == config
    # Every option survives, not only the dict shape.
    assert clone.rule == layer.rule
    assert clone.units == UNITS and clone.num_classes == NUM_CLASSES
    assert clone.use_bias == layer.use_bias
    assert clone.seed == layer.seed
    for key, value in kwargs.items():
        if key in ("kernel_initializer", "bias_initializer", "class_vectors", "seed"):
            continue
        if key == "name":
            assert clone.name == value
        else:
            assert config[key] == value, key
    if "class_vectors" in kwargs and not isinstance(kwargs["class_vectors"], str):
        np.testing.assert_array_equal(clone.class_vectors_kind, kwargs["class_vectors"])
    # Serialized through JSON, as in a .keras file.
    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(serialized)
    assert restored.get_config() == config
    # Both build to the same fixed class vectors when seeded.
    if layer.seed is not None:
        layer.build((None, INPUT_DIM))
        clone.build((None, INPUT_DIM))
        np.testing.assert_array_equal(layer.class_vectors.numpy(), clone.class_vectors.numpy())
        np.testing.assert_array_equal(layer.kernel.numpy(), clone.kernel.numpy())


def test_user_class_vectors_are_used_as_given():
    user = class_vectors_lib.random_vectors(NUM_CLASSES, UNITS, seed=9)
    layer = _built(class_vectors=user)
    np.testing.assert_allclose(layer.class_vectors.numpy(), user, rtol=1e-6)


def test_temperature_numpy_float_accepted():
    # A numpy scalar (e.g. from np.linspace in a sweep) is a valid temperature.
    layer = SpelaDense(UNITS, num_classes=NUM_CLASSES, temperature=np.float32(0.5))
    assert layer.rule.temperature == pytest.approx(0.5)


# ------------------------------------------------------------------- errors
@pytest.mark.parametrize("units", [0, -3, 2.5, "8", None])
def test_bad_units_raises(units):
    with pytest.raises(ValueError, match="units"):
        SpelaDense(units, num_classes=NUM_CLASSES)


def test_unknown_local_loss_raises():
    with pytest.raises(ValueError, match="local_loss"):
        SpelaDense(UNITS, num_classes=NUM_CLASSES, local_loss="mse")


def test_unknown_class_vectors_raises():
    with pytest.raises(ValueError, match="class_vectors"):
        SpelaDense(UNITS, num_classes=NUM_CLASSES, class_vectors="thomson")


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature"):
        SpelaDense(UNITS, num_classes=NUM_CLASSES, temperature=temperature)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0])
def test_bad_num_classes_raises(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        SpelaDense(UNITS, num_classes=num_classes)


def test_missing_num_classes_at_build_raises():
    layer = SpelaDense(UNITS)
    with pytest.raises(ValueError, match="num_classes"):
        layer.build((None, INPUT_DIM))
    with pytest.raises(ValueError, match="num_classes"):
        layer(np.zeros((2, INPUT_DIM), np.float32))


def test_three_dimensional_input_raises_mentioning_flatten():
    layer = SpelaDense(UNITS, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="Flatten"):
        layer.build((None, 4, INPUT_DIM))
    with pytest.raises(ValueError, match="Flatten"):
        SpelaDense(UNITS, num_classes=NUM_CLASSES)(np.zeros((2, 4, INPUT_DIM), np.float32))


def test_simplex_with_too_few_units_raises():
    layer = SpelaDense(4, num_classes=10, class_vectors="simplex")
    with pytest.raises(ValueError, match="simplex"):
        layer.build((None, INPUT_DIM))


def test_coulomb_with_few_units_builds():
    # The default falls back to an energy relaxation when no simplex exists.
    layer = SpelaDense(4, num_classes=10, seed=0)
    layer.build((None, INPUT_DIM))
    assert layer.class_vectors.shape == (10, 4)


def test_user_class_vectors_wrong_shape_raises_at_build():
    user = class_vectors_lib.random_vectors(NUM_CLASSES, UNITS + 1, seed=9)
    layer = SpelaDense(UNITS, num_classes=NUM_CLASSES, class_vectors=user)
    with pytest.raises(ValueError, match="shape"):
        layer.build((None, INPUT_DIM))


def test_wrong_input_width_after_build_raises():
    layer = _built()
    with pytest.raises(ValueError):
        layer(np.zeros((2, INPUT_DIM + 1), np.float32))


def test_local_error_with_another_input_width_names_both_widths():
    layer = _built()
    x, y = _data()
    wider = np.concatenate([x, x[:, :1]], axis=1)
    with pytest.raises(ValueError, match=rf"takes {INPUT_DIM} features, .*\(6, {INPUT_DIM + 1}\)"):
        layer.local_error(tf.constant(wider), rules.one_hot(y, NUM_CLASSES))


@pytest.mark.parametrize("dtype", ["mixed_float16", "mixed_bfloat16"])
def test_per_layer_mixed_policy_runs_the_layer_in_float32(dtype):
    layer = SpelaDense(UNITS, num_classes=NUM_CLASSES, seed=1, dtype=dtype)
    outputs = layer(np.ones((2, INPUT_DIM), np.float32))
    assert layer.compute_dtype == "float32" and outputs.dtype == "float32"
    assert {v.dtype for v in layer.weights} == {"float32"}
    restored = SpelaDense.from_config(layer.get_config())
    assert restored.compute_dtype == "float32"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
