"""DeviceOptimizer computes the same steps as Keras' SGD, momentum and Adam."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spela.lite import DeviceOptimizer

STEPS = 30
SHAPES = [(7, 5), (5,), (3, 4, 2), ()]

KERAS_OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(learning_rate=0.05),
    "momentum": lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
    "nesterov": lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.8, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(learning_rate=0.01),
    "adam_custom": lambda: keras.optimizers.Adam(
        learning_rate=3e-3, beta_1=0.8, beta_2=0.99, epsilon=1e-5
    ),
}


def _relative_error(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def _run_both(keras_optimizer, device_optimizer, seed=0):
    """Applies the same STEPS random gradients with both optimizers."""
    rng = np.random.default_rng(seed)
    initial = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    names = [f"w{i}" for i in range(len(SHAPES))]
    variables = [keras.Variable(v, name=n) for v, n in zip(initial, names)]
    keras_optimizer.build(variables)

    values = [tf.constant(v) for v in initial]
    # As exported: a slot starts as a copy of its weight (read as zero first).
    by_name = dict(zip(names, initial))
    state = [
        tf.constant(by_name[name.rsplit("_", 1)[0]])
        if init is None
        else tf.fill(shape, tf.constant(init, tf.float32))
        for name, shape, init in device_optimizer.state_shapes(names, SHAPES)
    ]
    trajectory = []
    for _ in range(STEPS):
        gradients = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
        keras_optimizer.apply_gradients(zip([tf.constant(g) for g in gradients], variables))
        values, state = device_optimizer.updated_values(
            [tf.constant(g) for g in gradients], values, state
        )
        trajectory.append(([v.numpy() for v in variables], [np.asarray(v) for v in values]))
    return trajectory, state, variables, initial


@pytest.mark.parametrize("kind", sorted(KERAS_OPTIMIZERS))
def test_updated_values_equal_keras_optimizer_every_step(kind):
    keras_optimizer = KERAS_OPTIMIZERS[kind]()
    device_optimizer = DeviceOptimizer.from_keras(KERAS_OPTIMIZERS[kind]())
    trajectory, _, _, initial = _run_both(keras_optimizer, device_optimizer)
    assert len(trajectory) == STEPS
    for step, (expected, actual) in enumerate(trajectory):
        for e, a in zip(expected, actual):
            assert a.dtype == np.float32
            np.testing.assert_allclose(
                a, e, rtol=1e-5, atol=1e-6, err_msg=f"{kind}, step {step + 1}"
            )
            assert _relative_error(a, e) <= 1e-5, (kind, step)
    # Every variable moved: the comparison is not trivially true.
    for start, final in zip(initial, trajectory[-1][1]):
        assert np.max(np.abs(final - start)) > 1e-2, kind


@pytest.mark.parametrize("kind", ["momentum", "nesterov", "adam"])
def test_updated_values_state_equals_keras_slots(kind):
    keras_optimizer = KERAS_OPTIMIZERS[kind]()
    device_optimizer = DeviceOptimizer.from_keras(KERAS_OPTIMIZERS[kind]())
    _, state, variables, _ = _run_both(keras_optimizer, device_optimizer, seed=1)
    count = len(variables)
    if kind == "adam":
        slots = [
            keras_optimizer._momentums,
            keras_optimizer._velocities,
        ]
        for k, keras_slots in enumerate(slots):
            for i, slot in enumerate(keras_slots):
                np.testing.assert_allclose(
                    np.asarray(state[k * count + i]), slot.numpy(), rtol=1e-5, atol=1e-7
                )
        np.testing.assert_allclose(float(state[2 * count]), 0.9**STEPS, rtol=1e-5)
        np.testing.assert_allclose(float(state[2 * count + 1]), 0.999**STEPS, rtol=1e-5)
    else:
        for i, slot in enumerate(keras_optimizer.momentums):
            np.testing.assert_allclose(np.asarray(state[i]), slot.numpy(), rtol=1e-5, atol=1e-7)


def test_state_shapes_names_and_initial_values():
    names, shapes = ["a", "b"], [(2, 3), (3,)]
    assert DeviceOptimizer("sgd", 0.1).state_shapes(names, shapes) == []
    # Slots (initial None) start as copies of their weights, read as zero
    # until the first step.
    assert DeviceOptimizer("sgd", 0.1, momentum=0.5).state_shapes(names, shapes) == [
        ("a_momentum", (2, 3), None),
        ("b_momentum", (3,), None),
        ("momentum_started", (), 0.0),
    ]
    assert DeviceOptimizer("adam", 0.1).state_shapes(names, shapes) == [
        ("a_m", (2, 3), None),
        ("b_m", (3,), None),
        ("a_v", (2, 3), None),
        ("b_v", (3,), None),
        ("adam_beta_1_power", (), 1.0),
        ("adam_beta_2_power", (), 1.0),
    ]


def test_visible_slots_are_zero_before_the_first_step():
    optimizer = DeviceOptimizer("adam", 0.1)
    slots = [tf.ones((2,)), tf.ones((2,))]
    before = optimizer.visible_slots(slots, [tf.constant(1.0), tf.constant(1.0)])
    after = optimizer.visible_slots(slots, [tf.constant(0.9), tf.constant(0.999)])
    assert [np.asarray(s).tolist() for s in before] == [[0.0, 0.0], [0.0, 0.0]]
    assert [np.asarray(s).tolist() for s in after] == [[1.0, 1.0], [1.0, 1.0]]


def test_from_keras_copies_sgd_settings():
    config = DeviceOptimizer.from_keras(
        keras.optimizers.SGD(learning_rate=0.25, momentum=0.7, nesterov=True)
    ).get_config()
    assert config["kind"] == "sgd"
    assert config["learning_rate"] == pytest.approx(0.25)
    assert config["momentum"] == pytest.approx(0.7)
    assert config["nesterov"] is True


def test_from_keras_copies_adam_settings():
    config = DeviceOptimizer.from_keras(
        keras.optimizers.Adam(learning_rate=3e-3, beta_1=0.8, beta_2=0.99, epsilon=1e-5)
    ).get_config()
    assert config["kind"] == "adam"
    assert config["learning_rate"] == pytest.approx(3e-3)
    assert config["beta_1"] == pytest.approx(0.8)
    assert config["beta_2"] == pytest.approx(0.99)
    assert config["epsilon"] == pytest.approx(1e-5)


def test_from_keras_names_use_keras_defaults():
    sgd = DeviceOptimizer.from_keras("sgd").get_config()
    keras_sgd = keras.optimizers.SGD().get_config()
    assert sgd["kind"] == "sgd"
    assert sgd["learning_rate"] == pytest.approx(keras_sgd["learning_rate"])
    assert sgd["momentum"] == pytest.approx(keras_sgd["momentum"])
    adam = DeviceOptimizer.from_keras("adam").get_config()
    keras_adam = keras.optimizers.Adam().get_config()
    assert adam["kind"] == "adam"
    for key in ("learning_rate", "beta_1", "beta_2", "epsilon"):
        assert adam[key] == pytest.approx(keras_adam[key])


def test_from_keras_learning_rate_override():
    config = DeviceOptimizer.from_keras(
        keras.optimizers.Adam(learning_rate=1e-2), learning_rate=0.5
    ).get_config()
    assert config["learning_rate"] == pytest.approx(0.5)


def test_from_keras_schedule_with_learning_rate_override_works():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.9)
    optimizer = DeviceOptimizer.from_keras(
        keras.optimizers.SGD(learning_rate=schedule), learning_rate=0.05
    )
    assert optimizer.learning_rate == pytest.approx(0.05)


def test_from_keras_schedule_without_override_raises():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.9)
    with pytest.raises(ValueError, match="schedule"):
        DeviceOptimizer.from_keras(keras.optimizers.Adam(learning_rate=schedule))


def test_from_keras_rmsprop_raises():
    with pytest.raises(ValueError, match="RMSprop"):
        DeviceOptimizer.from_keras(keras.optimizers.RMSprop(1e-3))


def test_from_keras_unsupported_name_raises():
    with pytest.raises(ValueError, match="RMSprop"):
        DeviceOptimizer.from_keras("rmsprop")


@pytest.mark.parametrize(
    "optimizer, setting",
    [
        (lambda: keras.optimizers.SGD(0.1, weight_decay=1e-4), "weight_decay"),
        (lambda: keras.optimizers.Adam(1e-3, weight_decay=1e-4), "weight_decay"),
        (lambda: keras.optimizers.SGD(0.1, clipnorm=1.0), "clipnorm"),
        (lambda: keras.optimizers.SGD(0.1, clipvalue=1.0), "clipvalue"),
        (lambda: keras.optimizers.Adam(1e-3, global_clipnorm=1.0), "global_clipnorm"),
        (lambda: keras.optimizers.Adam(1e-3, amsgrad=True), "amsgrad"),
        (lambda: keras.optimizers.Adam(1e-3, use_ema=True), "use_ema"),
    ],
)
def test_from_keras_unsupported_setting_raises_naming_it(optimizer, setting):
    with pytest.raises(ValueError, match=setting):
        DeviceOptimizer.from_keras(optimizer())


@pytest.mark.parametrize("learning_rate", [0.0, -0.1])
def test_non_positive_learning_rate_raises(learning_rate):
    with pytest.raises(ValueError, match="learning_rate"):
        DeviceOptimizer("sgd", learning_rate)
    with pytest.raises(ValueError, match="learning_rate"):
        DeviceOptimizer("adam", learning_rate)
    with pytest.raises(ValueError, match="learning_rate"):
        DeviceOptimizer.from_keras(keras.optimizers.SGD(0.1), learning_rate=learning_rate)


def test_non_numeric_learning_rate_raises():
    with pytest.raises(ValueError, match="learning_rate"):
        DeviceOptimizer("sgd", "0.1")


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="rmsprop"):
        DeviceOptimizer("rmsprop", 0.1)


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5])
def test_momentum_out_of_range_raises(momentum):
    with pytest.raises(ValueError, match="momentum"):
        DeviceOptimizer("sgd", 0.1, momentum=momentum)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
