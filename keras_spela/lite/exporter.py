"""Export a SpelaModel to TFLite / LiteRT with on-device training.

`export_tflite` writes one model with four signatures (`train`, `infer`,
`get_weights`, `set_weights`); `keras_spela.lite.micro_exporter` writes the
single-graph train step that TFLite Micro can run. Both convert with
TFLITE_BUILTINS only and check the result: a model that would need a Flex or
custom operator is never written.
"""

import collections
import os
import tempfile

import tensorflow as tf

from keras_spela import arguments
from keras_spela import default_optimizer
from keras_spela.lite import flatbuffer_ops
from keras_spela.lite.device_optimizers import DeviceOptimizer
from keras_spela.lite.trainable_module import SpelaTrainingModule
from keras_spela.lite.trainable_module import model_input_shape
from keras_spela.train_layers import resolve_train_layers
from keras_spela_device import contract

TFLiteExport = collections.namedtuple(
    "TFLiteExport", ["path", "size_bytes", "operators", "weight_names", "state_names"]
)


# The keyword arguments of export_tflite (and of SpelaModel.export with
# format="litert").
EXPORT_ARGUMENTS = (
    "batch_size", "optimizer", "learning_rate", "train_layers", "quantize_frozen"
)


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
      the batch was rejected by `keras_spela.acceptance`: a NaN/inf input, a
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
            `SpelaModel` (`keras_spela.train_layers.resolve_train_layers`):
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
    optimizer, train_layers = export_settings(
        model, batch_size, optimizer, learning_rate, train_layers
    )
    module = SpelaTrainingModule(model, optimizer, train_layers, batch_size)
    signatures = {
        contract.TRAIN: module.train.get_concrete_function(),
        contract.INFER: module.infer.get_concrete_function(),
        contract.GET_WEIGHTS: module.get_weights.get_concrete_function(),
        contract.SET_WEIGHTS: module.set_weights.get_concrete_function(),
    }
    with tempfile.TemporaryDirectory() as saved_model_dir:
        tf.saved_model.save(module, saved_model_dir, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=list(signatures)
        )
        data = convert(converter, quantize_frozen)
    operators = flatbuffer_ops.check_builtin_only(data, "LiteRT model")
    write(filepath, data)
    return TFLiteExport(
        filepath, len(data), operators, module.weight_names, module.state_names
    )


def export_settings(model, batch_size, optimizer, learning_rate, train_layers):
    """Checks what both exporters take; returns `(DeviceOptimizer, names of
    the learning layers)`.

    Raises:
        ValueError: for a model that is not a built SpelaModel, a bad batch
            size, an unsupported optimizer or bad `train_layers`.
    """
    # The model's interface, not its class: the model module imports this
    # one (SpelaModel.export).
    if not hasattr(model, "compute_local_errors"):
        raise ValueError(
            f"Only a keras_spela.SpelaModel can be exported for on-device "
            f"training, received {type(model).__name__}."
        )
    if not model.built:
        raise ValueError("Build the model first: start its layers with keras.Input.")
    model_input_shape(model)
    half = [
        layer.name
        for layer in model.stack
        if getattr(layer, "compute_dtype", "float32") not in ("float32", None)
    ]
    if half:
        raise ValueError(
            f"The layers {half} compute in {model.get_layer(half[0]).compute_dtype} "
            "(a mixed precision policy), which TFLite builtin kernels do not "
            "run. Rebuild the model under keras.mixed_precision."
            "set_global_policy('float32'), copy the weights with "
            "set_weights(model.get_weights()), and export that model."
        )
    arguments.integer(batch_size, "batch_size")
    if optimizer is None:
        optimizer = getattr(model, "optimizer", None) or "adam"
        if optimizer == "adam" and learning_rate is None:
            learning_rate = default_optimizer.DEFAULT_LEARNING_RATE
    if not isinstance(optimizer, DeviceOptimizer):
        optimizer = DeviceOptimizer.from_keras(optimizer, learning_rate)
    elif learning_rate is not None:
        optimizer = DeviceOptimizer(
            **{**optimizer.get_config(), "learning_rate": learning_rate}
        )
    names = [layer.name for layer in model.exit_layers]
    learning = resolve_train_layers(names, train_layers)
    frozen = [layer.name for layer in model.exit_layers if not layer.trainable]
    named = isinstance(train_layers, (str, list, tuple)) and train_layers != "all"
    if named and set(learning) & set(frozen):
        raise ValueError(
            f"train_layers names frozen SPELA layers {sorted(set(learning) & set(frozen))} "
            "(trainable=False); unfreeze them or leave them out."
        )
    learning = [name for name in learning if name not in frozen]
    if not learning:
        raise ValueError(
            "No SPELA layer would learn on the device: every layer of train_layers "
            f"is frozen (trainable=False): {frozen}."
        )
    return optimizer, learning


def convert(converter, quantize_frozen):
    """Converts with TFLITE_BUILTINS only and resource variables; a
    converter failure becomes a ValueError that says so."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_enable_resource_variables = True
    if quantize_frozen:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # Per-tensor int8 dense weights: per-channel ones need FULLY_CONNECTED
        # version 12, which tflite-runtime 2.14 (and older LiteRT builds on
        # devices) cannot load; the file is also smaller.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    try:
        return converter.convert()
    except Exception as error:  # the converter raises several types
        raise ValueError(
            "The model cannot be exported with TFLite builtin operators only: "
            f"{error}"
        ) from error


def write(filepath, data):
    """Writes `data` to `filepath`, creating its directory."""
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    with open(filepath, "wb") as f:
        f.write(data)
