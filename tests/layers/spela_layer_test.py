"""The SpelaLayer interface: a second layer kind plugs into SpelaModel, the
LiteRT export and the TFLite Micro export by implementing it, with no edit
of the model or the exporters.

`GainDense` (test-only) computes `a = act((h @ kernel) * gain)` and gives its
gradients through `parameter_gradient` alone (no `kernel_gradient_factors`),
so TFLite Micro updates its kernel whole instead of in row blocks.
"""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaLayer
from keras_spela import SpelaModel
from keras_spela.core import rules
from keras_spela.lite import flatbuffer_ops
from keras_spela.testing import assert_devices_train_like_fit
from keras_spela_device import DeviceTrainer

NUM_CLASSES = 10
BATCH = 16
STEPS = 20


@keras.saving.register_keras_serializable(package="spela_layer_test")
class GainDense(SpelaLayer):
    """`a = leaky_relu((h @ kernel) * gain)`, a kernel and a per-unit gain."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.rule = rules.DenseRule()

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.units),
            initializer=keras.initializers.HeUniform(seed=self.seed),
        )
        self.gain = self.add_weight(name="gain", shape=(self.units,), initializer="ones")
        self.add_class_vectors(self.units)

    def _forward(self, inputs, weights):
        product = tf.matmul(inputs, weights.get("kernel", self.kernel))
        gain = weights.get("gain", self.gain)
        z = product * gain
        return product, gain, z, rules.activate(z, self.rule)

    def call(self, inputs):
        return self._forward(inputs, {})[3]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def local_error(self, inputs, targets, sample_weight=None, weights=None):
        product, gain, z, a = self._forward(inputs, weights or {})
        error = rules.local_error(
            inputs, z, a, targets, self.class_vectors, self.rule, sample_weight
        )
        return error._replace(aux={"product": product, "gain": gain})

    def parameter_gradient(self, error, name):
        if name == "kernel":
            return rules.kernel_gradient(error.inputs, error.grad_z * error.aux["gain"])
        if name == "gain":
            return tf.reduce_sum(error.grad_z * error.aux["product"], axis=0)
        raise ValueError(f"GainDense has no trainable weight {name!r}.")

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return SpelaModel(
        [
            keras.Input((64,)),
            SpelaDense(32, seed=1, name="dense"),
            GainDense(16, seed=2, name="gain"),
        ],
        num_classes=NUM_CLASSES,
    )


def test_gain_dense_gradients_match_a_tape_scoped_to_the_layer(digits):
    (x, y), _ = digits
    model = _model()
    layer = model.exit_layers[1]
    h = model.exit_layers[0](x[:32])
    targets = rules.one_hot(tf.constant(y[:32]), NUM_CLASSES)
    with tf.GradientTape() as tape:
        error = layer.local_error(h, targets)
    expected = tape.gradient(error.loss, layer.trainable_variables)
    assert [v.path.split("/")[-1] for v in layer.trainable_variables] == ["kernel", "gain"]
    for actual, reference in zip(layer.parameter_gradients(error), expected):
        assert np.max(np.abs(reference.numpy())) > 0
        np.testing.assert_allclose(actual.numpy(), reference.numpy(), rtol=1e-4, atol=1e-7)


def test_gain_dense_trains_with_fit_and_saves(digits, tmp_path):
    (x, y), (x_test, y_test) = digits
    model = _model()
    model.compile()
    history = model.fit(x, y, batch_size=50, epochs=10, verbose=0)
    assert "gain_loss" in history.history
    result = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert result["gain_accuracy"] > 0.8, result
    path = str(tmp_path / "gain.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict(x_test, verbose=0), model.predict(x_test, verbose=0), rtol=1e-6
    )


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gain_dense_device_training_equals_host_fit(digits, tmp_path, optimizer):
    (x, y), _ = digits
    x, y = x[: BATCH * STEPS], y[: BATCH * STEPS]
    model = _model()
    model.compile(keras.optimizers.SGD(0.5) if optimizer == "sgd" else keras.optimizers.Adam(1e-2))
    lite = keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=BATCH)
    micro = keras_spela.export_tflite_micro(
        model,
        str(tmp_path / "micro.tflite"),
        batch_size=BATCH,
        expose_weights=True,
        block_bytes=1024,
    )
    for path in (lite.path, micro.path):
        with open(path, "rb") as f:
            flatbuffer_ops.check_builtin_only(f.read())
    expected = assert_devices_train_like_fit(
        DeviceTrainer, {"litert": lite.path, "micro": micro.path}, model, x, y, BATCH
    )
    assert "gain_gain" in expected


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
