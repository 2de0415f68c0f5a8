"""Export a SpelaModel to TFLite / LiteRT with on-device training.

`export_tflite` writes one model with four signatures (`train`, `infer`,
`get_weights`, `set_weights`); `keras_spela.lite.micro_exporter` writes the
single-graph train step that TFLite Micro can run. Both convert with
TFLITE_BUILTINS only and check the result: a model that would need a Flex or
custom operator is never written.
"""

import collections
import tempfile

import tensorflow as tf

from keras_spela.lite import converter as converter_lib
from keras_spela.lite import export_plan
from keras_spela.lite import flatbuffer_ops
from keras_spela.lite.trainable_module import SpelaTrainingModule
from keras_spela_device import contract

TFLiteExport = collections.namedtuple(
    "TFLiteExport", ["path", "size_bytes", "operators", "weight_names", "state_names"]
)


# The keyword arguments of export_tflite (and of SpelaModel.export with
# format="litert").
EXPORT_ARGUMENTS = ("batch_size", "optimizer", "learning_rate", "train_layers", "quantize_frozen")


def export_tflite(
    model,
    filepath,
    batch_size=32,
    optimizer=None,
    learning_rate=None,
    train_layers="all",
    quantize_frozen=False,
):
    """Exports a SpelaModel as a LiteRT model that keeps learning on the device.

    Signatures (inputs and outputs are named tensors):

    - `train(x, y)`: `x` float32 `(batch_size, ...)`, `y` int32
      `(batch_size,)`: class ids, or -1 for a padding row (ignored: the batch
      is learned from as the mean over its real rows, like a short last
      batch of `fit`). Learns with the same closed-form rule as
      `SpelaModel.fit`. Returns `loss`, `exit_<k>_loss` per learning layer,
      `examples` (int32, the real rows) and `accepted` (int32: 1, or 0 when
      the batch was rejected by `keras_spela.core.acceptance`: a NaN/inf input, a
      label outside `[-1, num_classes)`, no real row, a non-finite loss or
      gradients that could exceed `rules.MAX_GRADIENT`; a rejected batch
      changes no weight and no optimizer state).
    - `infer(x)`: any batch size. Returns `scores` (cosines at the last exit)
      and `exit_<k>_scores` at every exit k (0 is the first SPELA layer).
    - `get_weights(request)`: `request` is any int32 scalar (ignored; the
      Java/Kotlin `runSignature` needs an input). Returns every learned
      weight (`<layer>_kernel`, `<layer>_bias`) and optimizer state
      (`<weight>_m`, `<weight>_v`, `adam_beta_1_power`, ..., or
      `<weight>_momentum` and `momentum_started`; zero before the first
      step), and for a `SpelaModel(max_classes=...)` `active_classes` (1 per
      active class: device state that `DeviceTrainer.activate_class` sets;
      `train` rejects labels of inactive classes, `infer` scores them below
      -3).
    - `set_weights(**same names)`: sets them all; returns `accepted` (0 and
      nothing changed if a value is not finite).

    Args:
        model: a `SpelaModel` whose layer list starts with `keras.Input`.
        filepath: where to write the `.tflite` file.
        batch_size: static batch size of `train`.
        optimizer: the device optimizer: a `DeviceOptimizer`, a Keras
            `SGD`/`Adam` instance, `"sgd"`/`"adam"`, or None for the model's
            compiled optimizer (Adam(1e-2) when not compiled). Its state starts
            at zero on the device.
        learning_rate: overrides the optimizer's learning rate.
        train_layers: which SPELA layers learn on the device, as for
            `SpelaModel` (`keras_spela.training.train_layers.resolve_train_layers`):
            `"all"`, an integer k (the last k), a layer name or a list of
            names. The others, and every non-SPELA layer, become constants.
        quantize_frozen: store the frozen constants as int8 (dynamic-range
            quantisation, one scale per tensor, which tflite-runtime 2.14
            loads); learning layers' weights stay float32 variables.
            The converter quantises every constant matrix of 1024 or more
            entries, including the class vectors of a learning layer with
            `num_classes * units >= 1024`, so its device training then
            differs slightly from the host's (the frozen layers' int8
            outputs already do).

    Returns:
        A `TFLiteExport(path, size_bytes, operators, weight_names,
        state_names)`.

    Raises:
        ValueError: when the model cannot be exported (not a SpelaModel,
            unknown input shape, unsupported optimizer, unknown layers) or the
            converted model would need a non-builtin operator.

    Example:

    ```python
    keras_spela.export_tflite(model, "spela.tflite", batch_size=16)
    ```
    """
    plan = export_plan.plan_export(model, batch_size, optimizer, learning_rate, train_layers)
    module = SpelaTrainingModule(plan)
    signatures = {
        contract.TRAIN: module.train.get_concrete_function(),
        contract.INFER: module.infer.get_concrete_function(),
        contract.GET_WEIGHTS: module.get_weights.get_concrete_function(),
        contract.SET_WEIGHTS: module.set_weights.get_concrete_function(),
    }
    # The SavedModel holds the signatures and the variables they read, not the
    # module: saving the module would trace its four tf.functions again.
    saved_object = tf.Module()
    saved_object.device_variables = list(module.all_variables)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        tf.saved_model.save(saved_object, saved_model_dir, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=list(signatures)
        )
        data = converter_lib.convert(converter, quantize_frozen)
    operators = flatbuffer_ops.check_builtin_only(data, "LiteRT model")
    converter_lib.write(filepath, data)
    return TFLiteExport(filepath, len(data), operators, module.weight_names, module.state_names)
