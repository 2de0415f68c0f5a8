"""The frozen front of a TFLite Micro fine-tune as a full-int8 model.

TFLite Micro has no hybrid kernels: a float layer needs float weights, so
frozen layers stored as int8 must also compute in int8. With
`export_tflite_micro(..., quantize_frozen=True, representative_data=x)` the
layers before the first learning SPELA layer become a separate model whose
weights and activations are int8 (float32 in, QUANTIZE, int8 kernels,
DEQUANTIZE, float32 features out), calibrated on `representative_data` by
the converter; the train step then starts at the first learning layer and
takes those features as its `x`. A device runs the features model on each
example, then the step (`keras_spela_device` does).

The features model runs one example at a time: its arena holds one image's
int8 activations, which is what lets a 28x28 CNN fine-tune fit a
microcontroller's RAM (`benchmarks/micro_budget.py`).
"""

import keras
import numpy as np
import tensorflow as tf

from keras_spela.lite import converter as converter_lib
from keras_spela.lite import flatbuffer_ops
from keras_spela.lite import micro_arena
from keras_spela_device import contract

# Examples of representative_data the converter calibrates on, at most.
CALIBRATION_EXAMPLES = 500


def split_at_learning(model, train_layers):
    """`(frozen front, rest)`: the layers of `model.stack` before its first
    learning SPELA layer, and the others.

    Raises:
        ValueError: when no layer comes before the first learning layer.
    """
    first = next(i for i, layer in enumerate(model.stack) if layer.name in train_layers)
    if first == 0:
        raise ValueError(
            "quantize_frozen=True has nothing to quantise: the first layer of the "
            f"model ({model.stack[0].name!r}) learns on the device. Learn only the last "
            "layers (train_layers=1, for example)."
        )
    return model.stack[:first], model.stack[first:]


def feature_shape(model, front):
    """The per-example shape of the front's output."""
    shape = (None,) + tuple(model.example_input_shape)
    for layer in front:
        shape = tuple(layer.compute_output_shape(shape))
    return shape[1:]


def export_features_model(model, front, filepath, representative_data):
    """Writes the front as a full-int8 TFLite Micro model (batch 1).

    Args:
        model: the `SpelaModel`.
        front: its frozen front layers (`split_at_learning`).
        filepath: where to write it.
        representative_data: inputs to calibrate on, `(N,) + input shape`.

    Returns:
        `(data, arena_bytes)`: the model's bytes and the arena it needs
        (None without tflite-micro).
    """
    inputs = np.asarray(representative_data, np.float32)
    if inputs.ndim != 1 + len(model.example_input_shape) or inputs.shape[1:] != tuple(
        model.example_input_shape
    ):
        raise ValueError(
            f"representative_data must be examples of shape {tuple(model.example_input_shape)} "
            f"(a batch of them), received an array of shape {inputs.shape}."
        )
    if not np.all(np.isfinite(inputs)) or not len(inputs):
        raise ValueError("representative_data must hold at least one example, all finite.")
    state = [(v, tf.constant(np.asarray(v.numpy()))) for v in model.variables]

    def features(x):
        h = x
        with keras.StatelessScope(state_mapping=state):
            for layer in front:
                h = tf.stop_gradient(layer(h, training=False))
        return {contract.FEATURES_OUTPUT: tf.reshape(h, [1, -1])}

    spec = tf.TensorSpec((1,) + tuple(model.example_input_shape), tf.float32, name="x")
    concrete = tf.function(
        features, input_signature=[spec], autograph=False
    ).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())

    def calibration():
        for row in inputs[:CALIBRATION_EXAMPLES]:
            yield [row[None]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        data = converter.convert()
    except Exception as error:  # the converter raises several types
        raise ValueError(
            f"The frozen layers {[layer.name for layer in front]} cannot be converted to "
            f"int8 TFLite builtins: {error}"
        ) from error
    flatbuffer_ops.check_builtin_only(data, "TFLite Micro int8 features model")
    converter_lib.write(filepath, data)
    return data, micro_arena.measure_micro_arena(data)
