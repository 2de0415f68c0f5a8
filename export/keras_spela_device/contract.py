"""The contract between an exported keras_spela model and its device side.

Every name that the exporters (`keras_spela.export_tflite`,
`keras_spela.export_tflite_micro`) write and the device side
(`DeviceTrainer`, its backends, the command line, the Flower client) reads
lives here, with the checks that a file keeps to it. The exporters import
this module. It imports the standard library only (and, inside the checks,
this package's `.tflite` reader), so that it also loads on its own.

Example:

```python
from keras_spela_device import contract

contract.optimizer_state_names(trainer.get_weights())  # {'last_kernel_m', ...}
```
"""

import hashlib
import re

# ------------------------------------------------ export_tflite: signatures
TRAIN = "train"
INFER = "infer"
GET_WEIGHTS = "get_weights"
SET_WEIGHTS = "set_weights"
# The signatures that make a model a keras_spela `export_tflite` model.
SIGNATURES = (TRAIN, INFER, GET_WEIGHTS, SET_WEIGHTS)
# train(x, y): float32 (batch, ...) examples and int32 (batch,) labels, a
# static batch; infer(x): any number of rows.
TRAIN_INPUTS = ("x", "y")
INFER_INPUT = "x"
# get_weights' one input (ignored by the model; Java's runSignature needs it).
GET_WEIGHTS_INPUT = "request"
# 1 when the model learned from the batch (train) or took the weights
# (set_weights), else 0.
ACCEPTED_OUTPUT = "accepted"
# The sum of the learning exits' losses, and each one's `exit_<k>_loss`.
LOSS_OUTPUT = "loss"
LOSS_SUFFIX = "_loss"
# infer's scores at the last exit; `exit_<k>_scores` at every exit k.
SCORES_OUTPUT = "scores"
SCORES_SUFFIX = "_scores"
EXIT_SCORES_PATTERN = r"^exit_(\d+)_scores$"
# DeviceTrainer.evaluate's keys: `exit_<k>_accuracy`.
ACCURACY_SUFFIX = "_accuracy"

# ----------------------------------------------------------------- padding
# Rows of a train batch labelled PADDING_LABEL are padding: the model ignores
# them (a batch of padding only is rejected). Models that do so say how many
# real examples they learned from in the train output PADDING_OUTPUT.
PADDING_LABEL = -1
PADDING_OUTPUT = "examples"

# ------------------------------------------------------- int8 features model
# A micro train step exported with quantize_frozen=True takes as `x` the
# features of its frozen front, computed by a full-int8 model written beside
# it (`<stem>_features.tflite`, one example per run, output FEATURES_OUTPUT).
# Its description names it under FEATURES: {"file", MODEL_SHA256,
# "input_shape" (one raw example), "arena_bytes"}.
FEATURES = "features"
FEATURES_OUTPUT = "features"
# Raw inputs beyond this magnitude are rejected before the int8 features
# model quantises (clamps) them: on the host, the frozen front's float
# activations would overflow the acceptance bound (keras_spela's
# acceptance.MAX_ACTIVATION, the same number).
MAX_ACTIVATION = 1e18

# -------------------------------------------------------------- class mask
# The device state of a model exported from SpelaModel(max_classes=...): 1
# per active class (a get/set_weights name, or an input of a Micro step and
# a key of its description: the classes active at export).
CLASS_MASK = "active_classes"

# --------------------------------------------------------- optimizer state
# Each learned weight `<layer>_<weight>` has one slot per entry of its
# optimizer, named `slot_name(weight, slot)`; the state shared by all
# weights has the names of SHARED_OPTIMIZER_STATE. get_weights returns them
# beside the weights (and set_weights takes them).
OPTIMIZER_SLOTS = {"sgd": (), "momentum": ("momentum",), "adam": ("m", "v")}
SHARED_OPTIMIZER_STATE = {
    "sgd": (),
    "momentum": ("momentum_started",),
    "adam": ("adam_beta_1_power", "adam_beta_2_power"),
}


def exit_name(index):
    """`exit_<index>`: the name of the index-th SPELA layer's exit."""
    return f"exit_{index}"


def exit_scores_name(exit):
    """The infer output of an exit's scores: `exit_<k>_scores`."""
    return exit + SCORES_SUFFIX


def exit_loss_name(exit):
    """The train output of an exit's loss: `exit_<k>_loss`."""
    return exit + LOSS_SUFFIX


def exits_scored_by(names):
    """The exits whose `exit_<k>_scores` are among `names`, by k."""
    indices = sorted(
        int(m.group(1)) for m in map(re.compile(EXIT_SCORES_PATTERN).match, names) if m
    )
    return [exit_name(k) for k in indices]


def slot_name(weight, slot):
    """The optimizer slot `slot` ("m", "v", "momentum") of a learned weight."""
    return f"{weight}_{slot}"


def optimizer_state_names(names):
    """The names among `names` (get_weights' outputs) that are optimizer
    state: shared state, or a slot of another name of `names`.

    Returns:
        A set of names; the others are learned weights (and CLASS_MASK).
    """
    names = set(names)
    shared = {n for state in SHARED_OPTIMIZER_STATE.values() for n in state}
    slots = {s for kind in OPTIMIZER_SLOTS.values() for s in kind}
    return {
        name
        for name in names
        if name in shared or any(slot_name(w, s) == name for s in slots for w in names)
    }


# ------------------------------------------------------------- model kinds
SIGNATURE_MODEL = "export_tflite"
MICRO_STEP = "export_tflite_micro"
MODEL_KINDS = {
    SIGNATURE_MODEL: f"a model written by export_tflite (signatures {', '.join(SIGNATURES)})",
    MICRO_STEP: "a TFLite Micro train step (export_tflite_micro: one graph, no train/infer "
    "signatures)",
}


def model_kind(structure):
    """SIGNATURE_MODEL or MICRO_STEP, from a file's structure
    (`tflite_file.read_model_structure`), never from the files beside it.

    Raises:
        ValueError: what the model is instead.
    """
    from keras_spela_device.tflite_file import io_names

    signatures = structure["signatures"]
    if all(name in signatures for name in SIGNATURES):
        return SIGNATURE_MODEL
    inputs = io_names(structure, 0, "inputs")
    if not any(name in signatures for name in SIGNATURES) and set(TRAIN_INPUTS) <= set(inputs):
        return MICRO_STEP
    listed = sorted(signatures) if signatures else "none"
    raise ValueError(
        f"not a keras_spela export: it has neither the signatures "
        f"{', '.join(SIGNATURES)} of export_tflite (its signatures: {listed}) "
        f"nor the x and y inputs of export_tflite_micro's train step (its inputs: {inputs})"
    )


def tensor_problem(tensor, what, dtype, shape=None):
    """None if `tensor` (a `TensorInfo`) has the dtype and shape (None
    entries: any positive size), else what is wrong with it."""
    if tensor.dtype != dtype:
        return f"{what} is {tensor.dtype}, not {dtype}"
    if shape is not None and (
        len(tensor.shape) != len(shape)
        or any(s is not None and s != t for s, t in zip(shape, tensor.shape))
    ):
        return f"{what} has shape {tensor.shape}, expected {tuple(shape)}"
    if any(d < 1 for d in tensor.shape):
        return f"{what} has a dynamic or empty shape {tensor.shape}"
    return None


def signature_model_problems(structure):
    """What an `export_tflite` model's signatures lack, as a list of strings
    (empty: DeviceTrainer can run it)."""
    signatures = structure["signatures"]
    train, infer = signatures[TRAIN], signatures[INFER]
    x_name, y_name = TRAIN_INPUTS
    x, y = train["inputs"].get(x_name), train["inputs"].get(y_name)
    problems = []
    if x is None or y is None:
        problems.append(f"its train signature takes {sorted(train['inputs'])}, not x and y")
    elif x.dtype != "float32" or len(x.shape) < 1 or any(d < 1 for d in x.shape):
        problems.append(
            f"train's x is {x.dtype} of shape {x.shape}, not a float32 batch of static shape"
        )
    else:
        problems.append(tensor_problem(y, "train's y", "int32", (x.shape[0],)))
        infer_x = infer["inputs"].get(INFER_INPUT)
        if infer_x is not None and tuple(infer_x.shape[1:]) != tuple(x.shape[1:]):
            problems.append(f"infer's x {infer_x.shape} and train's x {x.shape} disagree")
    unknown = sorted(set(train["inputs"]) - set(TRAIN_INPUTS))
    if unknown:
        problems.append(
            f"its train signature takes inputs {unknown} that DeviceTrainer does not know"
        )
    if ACCEPTED_OUTPUT not in train["outputs"] or LOSS_OUTPUT not in train["outputs"]:
        problems.append(
            f"its train signature returns {sorted(train['outputs'])}, not accepted and loss"
        )
    scores = infer["outputs"].get(SCORES_OUTPUT)
    if INFER_INPUT not in infer["inputs"] or scores is None or len(scores.shape) != 2:
        problems.append("its infer signature does not map x to (batch, classes) scores")
    elif any(
        len(t.shape) != 2 or t.shape[-1] != scores.shape[-1] for t in infer["outputs"].values()
    ):
        problems.append("its infer outputs are not all (batch, classes) scores")
    elif not exits_scored_by(infer["outputs"]):
        problems.append("its infer signature has no exit_<k>_scores output")
    if sorted(signatures[SET_WEIGHTS]["inputs"]) != sorted(signatures[GET_WEIGHTS]["outputs"]):
        problems.append("its set_weights inputs are not the get_weights outputs")
    return [p for p in problems if p]


# ------------------------------------------- export_tflite_micro: description
def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_str_list(value, nonempty=False):
    return (
        isinstance(value, list)
        and all(isinstance(v, str) for v in value)
        and (len(value) > 0 or not nonempty)
    )


# The keys of the JSON description that export_tflite_micro writes beside its
# train step and a device needs, with their checks. Also written: CLASS_MASK
# (a max_classes model: the classes active at export), "block_bytes",
# "resource_variables" (for MicroResourceVariables::Create on a device),
# "optimizer" and MODEL_SHA256.
MICRO_DESCRIPTION_KEYS = {
    "inputs": (lambda v: _is_str_list(v, True), "a non-empty list of names"),
    "outputs": (lambda v: _is_str_list(v, True), "a non-empty list of names"),
    "batch_size": (lambda v: _is_int(v, 1), "a positive integer"),
    "input_shape": (
        lambda v: isinstance(v, list) and all(_is_int(d, 1) for d in v),
        "a list of positive integers",
    ),
    "num_classes": (lambda v: _is_int(v, 2), "an integer of at least 2"),
    "exits": (lambda v: _is_str_list(v, True), "a non-empty list of names"),
    "weight_names": (lambda v: _is_str_list(v), "a list of names"),
    "arena_bytes": (lambda v: v is None or _is_int(v, 1), "a positive integer or null"),
}
# The SHA-256 of the model file: ties the description to its model.
MODEL_SHA256 = "model_sha256"


def features_problems(features, data):
    """Problems of a description's FEATURES entry against the bytes of the
    features model it names (empty: they belong together)."""
    if not isinstance(features, dict):
        return [f"its {FEATURES!r} must be a JSON object, found {features!r}"]
    problems = []
    if not isinstance(features.get("file"), str) or not features["file"]:
        problems.append(f"its {FEATURES!r} has no file name")
    shape = features.get("input_shape")
    if not (isinstance(shape, list) and shape and all(_is_int(d, 1) for d in shape)):
        problems.append(f"its {FEATURES!r} input_shape must be a list of positive integers")
    arena = features.get("arena_bytes")
    if not (arena is None or _is_int(arena, 1)):
        problems.append(f"its {FEATURES!r} arena_bytes must be a positive integer or null")
    digest = features.get(MODEL_SHA256)
    if data is not None and (
        not isinstance(digest, str) or digest.lower() != hashlib.sha256(data).hexdigest()
    ):
        problems.append(
            f"the {MODEL_SHA256} of its features model is not the SHA-256 of "
            f"{features.get('file')!r}: the two were written by different exports"
        )
    return problems


def micro_description_problems(description, data, structure):
    """Problems of a micro description against its model, as a list of
    strings (empty: it belongs to the model).

    Args:
        description: the parsed JSON.
        data: the bytes of the model.
        structure: `tflite_file.read_model_structure(data)`.
    """
    from keras_spela_device.tflite_file import io_names

    if not isinstance(description, dict):
        return [f"it must hold a JSON object, found a JSON {type(description).__name__}"]
    missing = [k for k in MICRO_DESCRIPTION_KEYS if k not in description]
    if missing:
        return [f"it is missing the keys {missing} of an export_tflite_micro description"]
    problems = [
        f"{key!r} must be {kind}, found {description[key]!r}"
        for key, (valid, kind) in MICRO_DESCRIPTION_KEYS.items()
        if not valid(description[key])
    ]
    if MODEL_SHA256 in description:
        digest = description[MODEL_SHA256]
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            problems.append(f"'{MODEL_SHA256}' must be 64 hex digits, found {digest!r}")
        elif digest.lower() != hashlib.sha256(data).hexdigest():
            problems.append(
                f"its {MODEL_SHA256} {digest[:12]}... is not the SHA-256 of the model "
                f"({hashlib.sha256(data).hexdigest()[:12]}...): it was written for another "
                f"(an earlier?) export"
            )
    if problems:
        return problems

    graph = structure["subgraphs"][0]
    inputs = io_names(structure, 0, "inputs")
    if description["inputs"] != inputs:
        problems.append(
            f"its inputs {description['inputs']} are not the model's inputs {inputs} (in index order)"
        )
        return problems
    tensors = dict(zip(inputs, graph["inputs"]))
    batch, shape = description["batch_size"], tuple(description["input_shape"])
    x_name, y_name = TRAIN_INPUTS
    x, y = tensors[x_name], tensors[y_name]
    if x.shape != (batch,) + shape:
        problems.append(
            f"its batch_size {batch} and input_shape {list(shape)} do not match the "
            f"model's x tensor {x.shape}"
        )
    problems.append(tensor_problem(x, "the model's x", "float32"))
    problems.append(tensor_problem(y, "the model's y", "int32", (x.shape[0] if x.shape else None,)))
    unknown = sorted(set(inputs) - {x_name, y_name, CLASS_MASK})
    if unknown:
        problems.append(f"its inputs {unknown} are not x, y or {CLASS_MASK}")
    if CLASS_MASK in tensors:
        classes = description["num_classes"]
        problems.append(
            tensor_problem(tensors[CLASS_MASK], f"the model's {CLASS_MASK}", "float32", (classes,))
        )
        active = description.get(CLASS_MASK)
        if not (
            isinstance(active, list)
            and all(_is_int(k, 0) and k < classes for k in active)
            and len(set(active)) == len(active)
        ):
            problems.append(
                f"its {CLASS_MASK} {active!r} is not a list of distinct class ids in [0, {classes})"
            )
    outputs = io_names(structure, 0, "outputs")
    declared = description["outputs"]
    if len(declared) != len(outputs) or any(
        o is not None and o != d for o, d in zip(outputs, declared)
    ):
        problems.append(
            f"its outputs {declared} are not the model's {len(outputs)} outputs "
            f"{outputs if any(o is not None for o in outputs) else ''}".rstrip()
        )
    elif not {ACCEPTED_OUTPUT, SCORES_OUTPUT, LOSS_OUTPUT} <= set(declared):
        problems.append(f"its outputs {declared} lack accepted, scores or loss")
    else:
        scores = graph["outputs"][declared.index(SCORES_OUTPUT)]
        if len(scores.shape) != 2 or scores.shape[-1] != description["num_classes"]:
            problems.append(
                f"its num_classes {description['num_classes']} does not match the "
                f"model's scores {scores.shape}"
            )
        # Only the learning exits have a loss (train_layers).
        if not any(exit_loss_name(e) in declared for e in description["exits"]):
            problems.append(f"none of its exits {description['exits']} has an <exit>_loss output")
    return [p for p in problems if p]
