"""Export a SpelaModel to TFLite / LiteRT and TFLite Micro with on-device training.

`export_tflite` writes one model with four signatures (`train`, `infer`,
`get_weights`, `set_weights`); `export_tflite_micro` writes the single-graph
train step that TFLite Micro can run, and an inference model beside it. Both
convert with TFLITE_BUILTINS only and check the result: a model that would
need a Flex or custom operator is never written.
"""

import collections
import hashlib
import json
import math
import os
import re
import sys
import tempfile

import numpy as np
import tensorflow as tf

from keras_spela import model as model_lib
from keras_spela.lite import flatbuffer_ops
from keras_spela.lite import schedule
from keras_spela.lite.device_optimizers import DeviceOptimizer
from keras_spela.lite.micro_program import MicroTrainingProgram
from keras_spela.lite.trainable_module import SpelaTrainingModule

TFLiteExport = collections.namedtuple(
    "TFLiteExport", ["path", "size_bytes", "operators", "weight_names", "state_names"]
)
MicroExport = collections.namedtuple(
    "MicroExport",
    [
        "path",
        "inference_path",
        "size_bytes",
        "operators",
        "inputs",
        "outputs",
        "arena_bytes",
    ],
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
      `(batch_size,)`. Learns from the batch with the same closed-form rule as
      `SpelaModel.fit`. Returns `loss`, `exit_<k>_loss` per learning layer and
      `accepted` (int32: 1, or 0 when the batch was rejected because of a
      NaN/inf input, a label outside `[0, num_classes)`, a non-finite loss or
      gradients that could exceed `rules.MAX_GRADIENT`; a rejected batch
      changes no weight and no optimizer state).
    - `infer(x)`: any batch size. Returns `scores` (cosines at the last exit)
      and `exit_<k>_scores` at every exit k (0 is the first SPELA layer).
    - `get_weights(request)`: `request` is any int32 scalar (ignored; the
      Java/Kotlin `runSignature` needs an input). Returns every learned
      weight (`<layer>_kernel`, `<layer>_bias`) and optimizer state (`<weight>_m`, `<weight>_v`,
      `adam_beta_1_power`, ... or `<weight>_momentum`).
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
        train_layers: which SPELA layers learn on the device: `"all"`, an
            integer k (the last k), or a list of layer names. The others, and
            every non-SPELA layer, become constants.
        quantize_frozen: store the frozen constants as int8 (dynamic-range
            quantisation); learning layers' weights stay float32 variables.
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
    module = _training_module(model, batch_size, optimizer, learning_rate, train_layers)
    signatures = {
        "train": module.train.get_concrete_function(),
        "infer": module.infer.get_concrete_function(),
        "get_weights": module.get_weights.get_concrete_function(),
        "set_weights": module.set_weights.get_concrete_function(),
    }
    with tempfile.TemporaryDirectory() as saved_model_dir:
        tf.saved_model.save(module, saved_model_dir, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=list(signatures)
        )
        data = _convert(converter, quantize_frozen)
    operators = flatbuffer_ops.check_builtin_only(data, "LiteRT model")
    _write(filepath, data)
    return TFLiteExport(
        filepath, len(data), operators, module.weight_names, module.state_names
    )


def export_tflite_micro(
    model,
    filepath,
    batch_size=8,
    optimizer=None,
    learning_rate=None,
    train_layers="all",
    inference_filepath=None,
    expose_weights=False,
    block_bytes=None,
):
    """Exports the train step of a SpelaModel for TFLite Micro.

    TFLite Micro runs one entry subgraph (the variables' initial values are
    assigned by a CALL_ONCE subgraph) and has no SELECT or INT64 kernels, so
    the train step is written as its own single-function model with static
    shapes and float32 optimizer state. It learns like `train` of
    `export_tflite` and also returns the pre-update `scores` of the last exit,
    so the same interpreter serves inference: a batch whose labels are all -1
    is rejected (no update) and only scores it.

    Memory: each learned kernel is stored as row blocks of its transpose and
    updated one block at a time, and the operators are ordered so that each
    variable copy lives only as long as its user
    (`keras_spela.lite.micro_program`, `keras_spela.lite.schedule`). The
    arena is then the weights, the optimizer state, one batch's activations
    and a few blocks, plus TFLite Micro's bookkeeping per operator.

    Inputs are found by name, never by position (TFLite Micro orders them
    differently from the Python arguments): `x` float32 `(batch_size, ...)`
    and `y` int32 `(batch_size,)`. Outputs: `loss`, `exit_<k>_loss`,
    `accepted`, `scores` (and every learned weight with `expose_weights`).
    A JSON description (`<filepath stem>.json`) is written beside the model:
    input and output order, batch size, input shape, number of classes,
    weight names, the number of resource variables, and the arena bytes the
    step needs (measured with the TFLite Micro interpreter when
    `tflite-micro` is installed).

    Args:
        model, batch_size, optimizer, learning_rate, train_layers: as for
            `export_tflite`.
        filepath: where to write the train-step model.
        inference_filepath: where to write an inference-only model (the
            weights as constants, any exit); default: `<filepath stem>
            _infer.tflite`.
        expose_weights: also output every learned weight after the step
            (costs arena memory; used to read weights back, e.g. in tests).
        block_bytes: the largest kernel block in bytes; None chooses
            `default_block_bytes` (smaller blocks: fewer temporary bytes,
            more operators).

    Returns:
        A `MicroExport(path, inference_path, size_bytes, operators, inputs,
        outputs, arena_bytes)`; `inputs` and `outputs` list the tensor names in the
        interpreter's index order.
    """
    module = _training_module(model, batch_size, optimizer, learning_rate, train_layers)
    if block_bytes is None:
        block_bytes = default_block_bytes(module)
    program = MicroTrainingProgram(
        model, module.device_optimizer, module.train_layer_names, batch_size, block_bytes
    )
    step = tf.function(
        lambda x, y: program.step(x, y, expose_weights),
        input_signature=[program.x_spec, program.y_spec],
    )
    concrete = step.get_concrete_function()
    output_keys = sorted(concrete.structured_outputs)  # flattening order
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], program)
    data = schedule.schedule_for_micro(_convert(converter, quantize_frozen=False))
    operators = flatbuffer_ops.check_builtin_only(data, "TFLite Micro train step")
    _write(filepath, data)

    if inference_filepath is None:
        inference_filepath = os.path.splitext(filepath)[0] + "_infer.tflite"
    infer_spec = tf.TensorSpec((batch_size,) + module.input_shape, tf.float32, name="x")
    frozen = SpelaTrainingModule(model, module.device_optimizer, [], batch_size)
    infer = tf.function(frozen._infer, input_signature=[infer_spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [infer.get_concrete_function()], frozen
    )
    inference_data = _convert(converter, quantize_frozen=False)
    flatbuffer_ops.check_builtin_only(inference_data, "TFLite Micro inference model")
    _write(inference_filepath, inference_data)
    inputs, outputs = _io_names(data, output_keys)
    arena_bytes = measure_micro_arena(data)
    description = {
        "inputs": inputs,
        "outputs": outputs,
        "batch_size": int(batch_size),
        "input_shape": list(module.input_shape),
        "num_classes": model.num_classes,
        "exits": [f"exit_{k}" for k in range(len(model.exit_layers))],
        "weight_names": list(module.weight_names),
        "arena_bytes": arena_bytes,
        "block_bytes": int(block_bytes),
        # For MicroResourceVariables::Create / MicroInterpreter's
        # resource_variables argument on the device.
        "resource_variables": _count_resource_variables(data),
        "optimizer": module.device_optimizer.get_config(),
        "model_sha256": hashlib.sha256(data).hexdigest(),
    }
    with open(os.path.splitext(filepath)[0] + ".json", "w") as f:
        json.dump(description, f, indent=2)
    return MicroExport(
        filepath, inference_filepath, len(data), operators, inputs, outputs, arena_bytes
    )


def default_block_bytes(module):
    """The kernel block size of `export_tflite_micro`: `sqrt(512 * L)` bytes
    for `L` bytes of learned weights and optimizer state. Smaller blocks
    shrink the step's temporaries but add operators, and TFLite Micro keeps
    about 100 bytes per operator; this balances the two (measured on
    64-256-34 and 784-256-34 nets, SGD and Adam, batch 8)."""
    slots = len(module.device_optimizer.slot_shapes("w", ()))
    learned = sum(int(np.prod(w.shape)) * 4 * (1 + slots) for w in module.weights)
    return max(1024, int(math.sqrt(512 * learned)))


def measure_micro_arena(data, arena_size=64 * 1024 * 1024, resolution=256):
    """The smallest arena, in bytes, in which a TFLite Micro model runs, or
    None without tflite-micro.

    Runs the interpreter once on zeros with labels of -1 (no update) and
    reads the total of its allocation record; memory planning needs some
    temporary bytes beyond that total, so the size is then searched (to
    `resolution` bytes) for the smallest arena that allocates and runs.
    """
    try:
        from tflite_micro import runtime as micro_runtime
    except ImportError:
        return None

    def run(size):
        interpreter = micro_runtime.Interpreter.from_bytes(data, arena_size=size)
        for index in range(2):
            detail = interpreter.get_input_details(index)
            fill = -1 if np.issubdtype(detail["dtype"], np.integer) else 0
            interpreter.set_input(np.full(detail["shape"], fill, detail["dtype"]), index)
        interpreter.invoke()
        return interpreter

    def runs(size):
        try:
            log = _captured_output(lambda: run(size))
        except RuntimeError:
            return False
        # The memory planner can report running out of its own scratch
        # space ("Too many buffers") and still go on: not a usable size.
        return "Too many buffers" not in log

    report = _captured_output(run(arena_size).print_allocations)
    match = re.search(r"Arena allocation total (\d+) bytes", report)
    if not match:
        return None
    low = int(match.group(1)) - 1  # does not run (or is the floor)
    high = low + 1
    while not runs(high):
        low, high = high, 2 * high
    while high - low > resolution:
        middle = (low + high) // 2
        low, high = (low, middle) if runs(middle) else (middle, high)
    return high


def _captured_output(function):
    """Runs `function` and returns what it printed on the C-level stdout and
    stderr (TFLite Micro's allocation report)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            function()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
        capture.seek(0)
        return capture.read().decode(errors="replace")


def resolve_train_layers(model, train_layers):
    """Names of the SPELA layers that learn on the device."""
    names = [layer.name for layer in model.exit_layers]
    if isinstance(train_layers, str) and train_layers == "all":
        return names
    if isinstance(train_layers, (int, np.integer)) and not isinstance(train_layers, bool):
        if not 1 <= train_layers <= len(names):
            raise ValueError(
                f"train_layers={train_layers} must be between 1 and the number of "
                f"SPELA layers ({len(names)})."
            )
        return names[-int(train_layers) :]
    if isinstance(train_layers, str):
        train_layers = [train_layers]
    unknown = [n for n in train_layers if n not in names]
    if unknown or not train_layers:
        raise ValueError(
            f"train_layers must be 'all', an integer, or SPELA layer names from "
            f"{names}; received {train_layers!r}."
        )
    return list(train_layers)


def _training_module(model, batch_size, optimizer, learning_rate, train_layers):
    if not isinstance(model, model_lib.SpelaModel):
        raise ValueError(
            f"Only a keras_spela.SpelaModel can be exported for on-device "
            f"training, received {type(model).__name__}."
        )
    if not model.built:
        raise ValueError("Build the model first: start its layers with keras.Input.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, received {batch_size!r}.")
    if optimizer is None:
        optimizer = getattr(model, "optimizer", None) or "adam"
        if optimizer == "adam" and learning_rate is None:
            learning_rate = model_lib.DEFAULT_LEARNING_RATE
    if not isinstance(optimizer, DeviceOptimizer):
        optimizer = DeviceOptimizer.from_keras(optimizer, learning_rate)
    elif learning_rate is not None:
        optimizer = DeviceOptimizer(**{**optimizer.get_config(), "learning_rate": learning_rate})
    names = resolve_train_layers(model, train_layers)
    return SpelaTrainingModule(model, optimizer, names, batch_size)


def _convert(converter, quantize_frozen):
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_enable_resource_variables = True
    if quantize_frozen:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return converter.convert()
    except Exception as error:  # the converter raises several types
        raise ValueError(
            "The model cannot be exported with TFLite builtin operators only: "
            f"{error}"
        ) from error


def _io_names(data, output_keys):
    """Logical names of a single-function model's inputs and outputs, in the
    interpreter's index order (tensor names look like `serving_default_x:0`
    and `StatefulPartitionedCall:<k>`, k indexing the sorted output keys)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    inputs = [
        d["name"].split(":")[0].replace("serving_default_", "")
        for d in interpreter.get_input_details()
    ]
    outputs = [
        output_keys[int(d["name"].split(":")[-1])]
        for d in interpreter.get_output_details()
    ]
    return inputs, outputs


def _count_resource_variables(data):
    from tensorflow.lite.tools import flatbuffer_utils

    return int(
        flatbuffer_utils.count_resource_variables(
            flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
        )
    )


def _write(filepath, data):
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    with open(filepath, "wb") as f:
        f.write(data)
