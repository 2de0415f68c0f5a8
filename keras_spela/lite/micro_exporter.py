"""Export the train step of a SpelaModel for TFLite Micro."""

import collections
import hashlib
import json
import math
import os

import keras
import numpy as np
import tensorflow as tf

from keras_spela.lite import converter as converter_lib
from keras_spela.lite import export_plan
from keras_spela.lite import flatbuffer_ops
from keras_spela.lite import micro_arena
from keras_spela.lite import micro_features
from keras_spela.lite import schedule
from keras_spela.lite.micro_program import MicroTrainingProgram
from keras_spela_device import contract
from keras_spela_device.tflite_file import read_model_structure

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
        "features_path",
        "features_arena_bytes",
    ],
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
    quantize_frozen=False,
    representative_data=None,
):
    """Exports the train step of a SpelaModel for TFLite Micro.

    TFLite Micro runs one entry subgraph (the variables' initial values are
    assigned by a CALL_ONCE subgraph) and has no SELECT or INT64 kernels, so
    the train step is written as its own single-function model with static
    shapes and float32 optimizer state. It learns like `train` of
    `export_tflite` (rows labelled -1 are padding) and also returns the
    pre-update `scores` of the last exit, so the same interpreter serves
    inference: a batch whose labels are all -1 is rejected (no update) and
    only scores it.

    Memory: each learned kernel is stored as row blocks of its transpose and
    updated one block at a time, and the operators are ordered so that each
    variable copy lives only as long as its user
    (`keras_spela.lite.micro_program`, `keras_spela.lite.schedule`). The
    arena is then the weights, the optimizer state, one batch's activations
    and a few blocks, plus TFLite Micro's bookkeeping per operator.

    Inputs are found by name, never by position (TFLite Micro orders them
    differently from the Python arguments): `x` float32 `(batch_size, ...)`
    and `y` int32 `(batch_size,)`. Outputs: `loss`, `exit_<k>_loss`,
    `accepted`, `examples`, `scores` (and every learned weight with
    `expose_weights`). A model with `max_classes` takes a third input,
    `active_classes` `(num_classes,)` float32 (1 per active class), which
    the application keeps between steps (`DeviceTrainer` does; the
    inference-only model keeps the classes active at export). A JSON
    description (`<filepath stem>.json`) is written beside the model: input
    and output order, batch size, input shape, number of classes (and the
    active ones at export), weight names, the number of resource
    variables, the arena bytes the step needs (measured with the TFLite
    Micro interpreter when `tflite-micro` is installed) and `model_sha256`
    (the SHA-256 of the model file, which `DeviceTrainer` checks).

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
        quantize_frozen: store the layers before the first learning layer
            as int8 (`keras_spela.lite.micro_features`): they become a
            full-int8 model `<filepath stem>_features.tflite` (int8 weights
            and activations, one example per run), calibrated on
            `representative_data`, and the train step takes their float
            features as `x`. The description names the features model;
            `DeviceTrainer` runs both.
        representative_data: with `quantize_frozen`, training inputs to
            calibrate the int8 ranges on (a few hundred are enough).

    Returns:
        A `MicroExport(path, inference_path, size_bytes, operators, inputs,
        outputs, arena_bytes, features_path, features_arena_bytes)`;
        `inputs` and `outputs` list the tensor names in the interpreter's
        index order; the last two are None without `quantize_frozen`.
    """
    plan = export_plan.plan_export(model, batch_size, optimizer, learning_rate, train_layers)
    features = None
    if quantize_frozen:
        if representative_data is None:
            raise ValueError(
                "quantize_frozen=True calibrates the int8 layers on examples: pass "
                "representative_data= (a few hundred training inputs)."
            )
        front, _ = micro_features.split_at_learning(model, plan.train_layers)
        features_path = os.path.splitext(filepath)[0] + "_features.tflite"
        features_data, features_arena = micro_features.export_features_model(
            model, front, features_path, representative_data
        )
        features = {
            "file": os.path.basename(features_path),
            contract.MODEL_SHA256: hashlib.sha256(features_data).hexdigest(),
            "input_shape": list(plan.input_shape),
            "arena_bytes": features_arena,
        }
        plan = export_plan.behind_front(plan, front)
    if block_bytes is None:
        block_bytes = default_block_bytes(plan)
    program = MicroTrainingProgram(plan, block_bytes)
    step = tf.function(
        lambda *inputs: program.step(*inputs, expose_weights=expose_weights),
        input_signature=program.input_specs,
        autograph=False,
    )
    concrete = step.get_concrete_function()
    output_keys = sorted(concrete.structured_outputs)  # flattening order
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], program)
    data = schedule.schedule_for_micro(converter_lib.convert(converter, False))
    operators = flatbuffer_ops.check_builtin_only(data, "TFLite Micro train step")
    converter_lib.write(filepath, data)

    if inference_filepath is None:
        inference_filepath = os.path.splitext(filepath)[0] + "_infer.tflite"
    _export_inference_model(plan, inference_filepath)
    inputs, outputs = _io_names(data, output_keys)
    arena_bytes = micro_arena.measure_micro_arena(data)
    description = _description(data, program, inputs, outputs, arena_bytes, block_bytes)
    if features is not None:
        description[contract.FEATURES] = features
    # What a device checks (keras_spela_device.contract), checked here first.
    problems = contract.micro_description_problems(description, data, read_model_structure(data))
    assert not problems, problems
    with open(os.path.splitext(filepath)[0] + ".json", "w") as f:
        json.dump(description, f, indent=2)
    return MicroExport(
        filepath,
        inference_filepath,
        len(data),
        operators,
        inputs,
        outputs,
        arena_bytes,
        features_path if features else None,
        features["arena_bytes"] if features else None,
    )


def _description(data, program, inputs, outputs, arena_bytes, block_bytes):
    """The JSON description of a micro train step (see `export_tflite_micro`)."""
    model = program.model
    return {
        "inputs": inputs,
        "outputs": outputs,
        "batch_size": program.batch_size,
        "input_shape": list(program.input_shape),
        "num_classes": model.num_classes,
        # A max_classes model: the classes active at export (the step's
        # active_classes input, 1 per active class).
        contract.CLASS_MASK: model.active_classes if model.class_mask is not None else None,
        "exits": [program.plan.exit_key(layer.name) for layer in model.exit_layers],
        "weight_names": list(program.weight_names),
        "arena_bytes": arena_bytes,
        "block_bytes": int(block_bytes),
        # For MicroResourceVariables::Create / MicroInterpreter's
        # resource_variables argument on the device.
        "resource_variables": flatbuffer_ops.count_resource_variables(data),
        "optimizer": program.device_optimizer.get_config(),
        # Lets a device check that this description belongs to the model.
        contract.MODEL_SHA256: hashlib.sha256(data).hexdigest(),
    }


def default_block_bytes(plan):
    """The kernel block size of `export_tflite_micro`: `sqrt(512 * L)` bytes
    for `L` bytes of learned weights and optimizer state. Smaller blocks
    shrink the step's temporaries but add operators, and TFLite Micro keeps
    about 100 bytes per operator; this balances the two (measured on
    64-256-34 and 784-256-34 nets, SGD and Adam, batch 8)."""
    slots = len(plan.optimizer.slot_shapes("w", (), zeros=True))
    learned = sum(
        int(np.prod(learned.variable.shape)) * 4 * (1 + slots)
        for learned in plan.learned_variables()
    )
    return max(1024, int(math.sqrt(512 * learned)))


def _export_inference_model(plan, filepath):
    """Writes an inference-only model: every weight a constant, scores at
    every exit."""
    frozen = plan.frozen_constants()

    def infer(x):
        with keras.StatelessScope(state_mapping=frozen):
            return plan.inference_outputs(x)

    spec = tf.TensorSpec(
        (plan.batch_size,) + plan.input_shape, tf.float32, name=contract.INFER_INPUT
    )
    concrete = tf.function(infer, input_signature=[spec], autograph=False).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
    data = converter_lib.convert(converter, quantize_frozen=False)
    flatbuffer_ops.check_builtin_only(data, "TFLite Micro inference model")
    converter_lib.write(filepath, data)


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
    outputs = [output_keys[int(d["name"].split(":")[-1])] for d in interpreter.get_output_details()]
    return inputs, outputs
