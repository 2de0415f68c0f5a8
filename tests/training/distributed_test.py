"""SpelaModel under tf.distribute.MirroredStrategy with two logical CPUs.

Logical devices can only be configured before TensorFlow initialises its
runtime, so it is done at import. When this file runs in a process where
TensorFlow is already initialised (e.g. `pytest tests/`), the tests re-run
this file alone in a subprocess.
"""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf


def _configure_two_cpus():
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0],
            [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
        )
    except RuntimeError:
        pass  # Already initialised: the tests below use a subprocess.


_configure_two_cpus()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_spela import datasets  # noqa: E402
from keras_spela.layers import SpelaDense  # noqa: E402
from keras_spela.training.model import SpelaModel  # noqa: E402

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES
_CHILD_ENV = "KERAS_SPELA_DISTRIBUTED_TEST_CHILD"


def _two_cpus_available():
    return len(tf.config.list_logical_devices("CPU")) >= 2


def _run_in_subprocess(test_name):
    """Runs one test of this file alone in a fresh interpreter."""
    env = dict(os.environ, **{_CHILD_ENV: "1"})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"{__file__}::{test_name}",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _needs_two_cpus(test):
    """Runs `test` here when two logical CPUs exist, else in a subprocess."""

    def wrapper():
        if _two_cpus_available():
            return test()
        if os.environ.get(_CHILD_ENV):
            pytest.fail("two logical CPU devices could not be configured")
        _run_in_subprocess(test.__name__)

    wrapper.__name__ = test.__name__
    wrapper.__doc__ = test.__doc__
    return wrapper


def _model():
    keras.utils.set_random_seed(0)
    return SpelaModel(
        [keras.Input((64,)), SpelaDense(32, name="a"), SpelaDense(34, name="b")],
        num_classes=NUM_CLASSES,
    )


def _data():
    (x, y), _ = datasets.load_digits()
    return x[:200], y[:200]


def _train(make_optimizer, strategy=None):
    x, y = _data()
    if strategy is None:
        model = _model()
        model.compile(optimizer=make_optimizer())
    else:
        with strategy.scope():
            model = _model()
            model.compile(optimizer=make_optimizer())
    initial = [v.numpy().copy() for v in model.weights]
    # Global batch 50: every batch splits evenly over the two replicas.
    history = model.fit(x, y, epochs=1, batch_size=50, shuffle=False, verbose=0)
    return model, initial, history.history


OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(1.0),
    "adam": lambda: keras.optimizers.Adam(1e-2),
}


def _check_mirrored_equals_single_device(optimizer_name):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    make_optimizer = OPTIMIZERS[optimizer_name]
    single, single_initial, single_history = _train(make_optimizer)
    mirrored, mirrored_initial, mirrored_history = _train(make_optimizer, strategy)

    for a, b in zip(single_initial, mirrored_initial):
        np.testing.assert_array_equal(a, b)
    assert [v.path.split("/", 1)[1] for v in single.weights] == [
        v.path.split("/", 1)[1] for v in mirrored.weights
    ]
    for start, s, m in zip(single_initial, single.weights, mirrored.weights):
        single_update = s.numpy() - start
        mirrored_update = m.numpy() - start
        if s.trainable:
            assert np.max(np.abs(single_update)) > 0, s.path
        else:
            np.testing.assert_array_equal(mirrored_update, 0.0)
        # Same global batch, same update: the replicas' gradients are not
        # summed (that would double the step).
        np.testing.assert_allclose(
            m.numpy(),
            s.numpy(),
            rtol=1e-4,
            atol=1e-5,
            err_msg=f"{s.path}: ratio of updates "
            f"{np.sum(mirrored_update * single_update) / max(np.sum(single_update**2), 1e-30)}",
        )
    assert set(mirrored_history) == set(single_history)
    for key in single_history:
        np.testing.assert_allclose(mirrored_history[key], single_history[key], rtol=1e-4, atol=1e-5)
    # The mirrored model predicts like the single-device one.
    x, _ = _data()
    np.testing.assert_allclose(
        mirrored.predict(x, exit="all", verbose=0)["a"],
        single.predict(x, exit="all", verbose=0)["a"],
        rtol=1e-4,
        atol=1e-5,
    )


@_needs_two_cpus
def test_mirrored_sgd_fit_equals_single_device():
    _check_mirrored_equals_single_device("sgd")


@_needs_two_cpus
def test_mirrored_adam_fit_equals_single_device():
    _check_mirrored_equals_single_device("adam")


@_needs_two_cpus
def test_mirrored_evaluate_reports_every_exit():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = _data()
    with strategy.scope():
        model = _model()
        model.compile()
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    result = model.evaluate(x, y, batch_size=50, return_dict=True, verbose=0)
    for name in ("a", "b"):
        accuracy = np.mean(np.argmax(model.predict(x, exit=name, verbose=0), axis=1) == y)
        np.testing.assert_allclose(result[f"{name}_accuracy"], accuracy, atol=1e-6)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
