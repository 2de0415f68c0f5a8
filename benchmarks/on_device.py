"""On-device training: LiteRT train signature vs the host step, TFLite Micro
arena vs a memory floor, and our builtin-only model vs a standard backprop export.

What is measured, side by side in one run (CPU):

(a) Step time of the LiteRT `train` signature of `keras_spela.export_tflite`
    (ai_edge_litert Interpreter, signature runner, XNNPACK on by default; with
    num_threads = all cores and = 1) vs SpelaModel's compiled train step on the
    SAME fixed batch: `model.train_on_batch(x, y)` (numpy in, numpy logs out)
    and the bare compiled `model.train_function` (tf tensors in, one loss read
    back). Nets 784-256-34 and 64-256-34 (library defaults: softmax_cosine,
    Adam 1e-2, on both sides), batch sizes 1, 8, 32. Calls are timed in
    blocks of `--block` calls, the four ways taking turns block by block;
    the median per-call time over the blocks and the ratio
    LiteRT / host (goal <= 1.0x) are printed.
(b) TFLite Micro arena bytes of the train step (`export_tflite_micro(...)
    .arena_bytes`, batch 8) for SGD and Adam, vs the floor = bytes of the
    learned weights + optimizer state + the two largest activations (input
    and layer outputs, batch x width, float32); goal 1.25x. The operator count and the
    kernel block size of the export are shown beside it. Next to it the
    backprop floor on paper for the same widths plus a Dense(10) head:
    weights + optimizer state + every activation kept for the backward pass
    (the input and every layer's output) + the gradient of every layer's
    output. Then the same for a small SPELA CNN (`micro_cnn`: 20x20x1 ->
    SpelaConv2D(8, 3, same) -> SpelaConv2D(16, 3, same) -> Flatten ->
    SpelaDense(34), batch 8) against a floor for conv layers (see
    `conv_floors`: weights + optimizer state + the largest live
    activations of one layer's step); goal 1.25x as for the dense rows.
(c) File size and operator count of our LiteRT model (4 signatures: train,
    infer, get_weights, set_weights) vs a backprop model exported the standard
    way (tf.Module with GradientTape `train`, `infer`, and tf.raw_ops.Save /
    Restore `save` / `restore`; converter with TFLITE_BUILTINS + SELECT_TF_OPS
    and experimental_enable_resource_variables; Keras Adam inside the train
    function) for the same widths plus a Dense(10) head. Operators are counted
    with keras_spela.lite.flatbuffer_ops.read_operators (all subgraphs) and,
    for the train signature alone, from its subgraph. Then both train
    signatures are run in LiteRT (ai_edge_litert) and, in a subprocess, in
    tflite-runtime (/work/main/.venv-tflite/bin/python, when it exists); the
    outcome or the error message is printed.

Run (from the repository root, with the project's virtualenv):

    python benchmarks/on_device.py            # 30 blocks of 20 calls
    python benchmarks/on_device.py --quick    # 5 blocks of 5 calls, 64-256-34 only
    python benchmarks/on_device.py --arena_only   # part (b) only, dense and CNN rows

Output: benchmarks/results/on_device[_quick].txt (--arena_only:
benchmarks/results/on_device_arena[_quick].txt)
"""

import argparse
import collections
import json
import os
import re
import subprocess
import tempfile
import time

import common  # sets the Keras backend; import before keras

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_spela  # noqa: E402
from keras_spela import SpelaConv2D, SpelaDense, SpelaModel  # noqa: E402
from keras_spela.core import conv_rules  # noqa: E402
from keras_spela.lite import read_operators  # noqa: E402

NUM_CLASSES = 10
MICRO_BATCH = 8
TFLITE_PYTHON = "/work/main/.venv-tflite/bin/python"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--nets", default=None, help="semicolon-separated nets, e.g. '784,256,34;64,256,34'"
    )
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--blocks", type=int, default=None, help="default 30, quick 5")
    parser.add_argument(
        "--block", type=int, default=None, help="calls per timed block (default 20, quick 5)"
    )
    parser.add_argument(
        "--arena_only",
        action="store_true",
        help="run part (b) only (TFLite Micro arenas, dense and CNN rows)",
    )
    parser.add_argument("--no_save", action="store_true")
    args = parser.parse_args()
    if args.nets is None:
        args.nets = "64,256,34" if args.quick else "784,256,34;64,256,34"
    args.nets = [[int(w) for w in net.split(",")] for net in args.nets.split(";")]
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.blocks is None:
        args.blocks = 5 if args.quick else 30
    if args.block is None:
        args.block = 5 if args.quick else 20
    return args


def build_spela(widths, optimizer=None):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((widths[0],))] + [SpelaDense(w) for w in widths[1:]]
    model = SpelaModel(layers, num_classes=NUM_CLASSES)
    model.compile(optimizer)  # None: the library default, Adam(1e-2)
    return model


def net_name(widths):
    return "-".join(map(str, widths))


def litert_interpreter(path, num_threads=None):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=path, num_threads=num_threads)


# ------------------------------------------------------------------ (a) step time
def step_times(args, workdir):
    rows, verdicts = [], []
    rng = np.random.default_rng(0)
    for widths in args.nets:
        keras.backend.clear_session()
        model = build_spela(widths)
        for batch in args.batches:
            x = rng.random((batch, widths[0]), np.float32)
            y = (np.arange(batch) % NUM_CLASSES).astype(np.int32)
            path = os.path.join(workdir, f"spela_{net_name(widths)}_b{batch}.tflite")
            keras_spela.export_tflite(model, path, batch_size=batch)
            runners = {
                threads: litert_interpreter(path, threads).get_signature_runner("train")
                for threads in (os.cpu_count(), 1)
            }
            x_tf, y_tf = tf.constant(x), tf.constant(y)
            model.train_on_batch(x, y)  # traces the step
            train_function = model.train_function

            def host_bare():
                float(train_function([(x_tf, y_tf)])["loss"])

            functions = {
                "host train_on_batch": lambda: model.train_on_batch(x, y),
                "host train_function": host_bare,
                f"LiteRT train ({os.cpu_count()} threads)": lambda: runners[os.cpu_count()](
                    x=x, y=y
                ),
                "LiteRT train (1 thread)": lambda: runners[1](x=x, y=y),
            }
            for fn in functions.values():  # warm-up
                for _ in range(3):
                    fn()
            times = {name: [] for name in functions}
            for _ in range(args.blocks):
                for name, fn in functions.items():
                    start = time.perf_counter()
                    for _ in range(args.block):
                        fn()
                    times[name].append((time.perf_counter() - start) / args.block)
            ms = {name: 1000 * common.median(t) for name, t in times.items()}
            names = list(functions)
            best_litert = min(ms[names[2]], ms[names[3]])
            ratio_tob = ms[names[2]] / ms[names[0]]
            ratio_bare = ms[names[2]] / ms[names[1]]
            rows.append(
                [net_name(widths), str(batch)]
                + [f"{ms[n]:.3f}" for n in names]
                + [f"{ratio_tob:.3f}", f"{ratio_bare:.3f}"]
            )
            verdicts.append(
                f"  {'PASS' if ratio_bare <= 1.0 else 'FAIL'} LiteRT/host <= 1.0x "
                f"({net_name(widths)}, batch {batch}): {ratio_bare:.3f} vs the bare "
                f"train_function, {ratio_tob:.3f} vs train_on_batch "
                f"(best LiteRT threads: {best_litert / ms[names[1]]:.3f})"
            )
            print(f"  step timing {net_name(widths)} batch {batch} done", flush=True)
    headers = [
        "net",
        "batch",
        "host train_on_batch ms",
        "host train_function ms",
        f"LiteRT {os.cpu_count()} thr ms",
        "LiteRT 1 thr ms",
        f"LiteRT({os.cpu_count()})/train_on_batch",
        f"LiteRT({os.cpu_count()})/train_function",
    ]
    print()
    print(
        common.format_table(
            headers,
            rows,
            title=(
                f"(a) Train step time, median per call over {args.blocks} interleaved "
                f"blocks of {args.block} calls (Adam 1e-2, softmax_cosine)"
            ),
        )
    )
    print("\n".join(verdicts))


# ------------------------------------------------------------------ (b) arena
def floors(widths, batch, kind):
    """(SPELA floor, backprop floor on paper), in bytes, with their parts."""
    params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    weights = 4 * params
    state = 0 if kind == "sgd" else 2 * weights + 8  # m, v (+ beta powers)
    activations = sorted((batch * d * 4 for d in widths), reverse=True)
    spela = {
        "weights": weights,
        "optimizer state": state,
        "two largest activations": sum(activations[:2]),
    }
    bp_widths = list(widths) + [NUM_CLASSES]
    bp_params = sum((a + 1) * b for a, b in zip(bp_widths[:-1], bp_widths[1:]))
    bp_weights = 4 * bp_params
    bp_state = 0 if kind == "sgd" else 2 * bp_weights
    backprop = {
        "weights": bp_weights,
        "optimizer state": bp_state,
        "all activations (input + every output)": 4 * batch * sum(bp_widths),
        "their gradients (every output)": 4 * batch * sum(bp_widths[1:]),
    }
    return spela, backprop


def arena(args, workdir):
    rows, verdicts = [], []
    for widths in args.nets:
        for kind, optimizer in (
            ("sgd", keras.optimizers.SGD(0.1)),
            ("adam", keras.optimizers.Adam(1e-2)),
        ):
            keras.backend.clear_session()
            model = build_spela(widths)
            path = os.path.join(workdir, f"micro_{net_name(widths)}_{kind}.tflite")
            export = keras_spela.export_tflite_micro(
                model, path, batch_size=MICRO_BATCH, optimizer=optimizer
            )
            spela, backprop = floors(widths, MICRO_BATCH, kind)
            with open(os.path.splitext(path)[0] + ".json") as f:
                block_bytes = json.load(f)["block_bytes"]
            floor, bp_floor = sum(spela.values()), sum(backprop.values())
            measured = export.arena_bytes
            ratio = measured / floor if measured else float("nan")
            rows.append(
                [
                    net_name(widths),
                    kind,
                    f"{measured:,}" if measured else "n/a",
                    f"{spela['weights']:,}",
                    f"{spela['optimizer state']:,}",
                    f"{spela['two largest activations']:,}",
                    f"{floor:,}",
                    f"{ratio:.2f}",
                    f"{bp_floor:,}",
                    f"{measured / bp_floor:.2f}" if measured else "n/a",
                    f"{sum(export.operators.values()):,}",
                    f"{block_bytes:,}",
                    f"{export.size_bytes:,}",
                ]
            )
            verdicts.append(
                f"  {'PASS' if ratio <= 1.25 else 'FAIL'} micro arena <= 1.25x floor "
                f"({net_name(widths)}, {kind}): {ratio:.2f}x"
            )
            report = _arena_report(export.path)
            if report:
                verdicts.append(f"    TFLite Micro allocation record: {report}")
            print(f"  micro export {net_name(widths)} {kind} done", flush=True)
    print()
    print(
        common.format_table(
            [
                "net",
                "optimizer",
                "arena bytes",
                "weights",
                "opt state",
                "2 largest act.",
                "SPELA floor",
                "arena/floor",
                "backprop floor (paper)",
                "arena/bp floor",
                "operators",
                "block bytes",
                "model bytes",
            ],
            rows,
            title=f"(b) TFLite Micro train step, batch {MICRO_BATCH}: arena vs floors (bytes)",
        )
    )
    print("\n".join(verdicts))
    print(
        "  (arena = the smallest arena in which the step runs, found by search; "
        "TFLite Micro also keeps ~100 bytes of bookkeeping per operator, which "
        "dominates the overhead of small nets.)"
    )


MICRO_CNN_INPUT = (20, 20, 1)
MICRO_CNN_NAME = "cnn 20x20x1-c8-c16-34"


def micro_cnn():
    """The small SPELA CNN of part (b): 20x20x1 -> SpelaConv2D(8, 3, same) ->
    SpelaConv2D(16, 3, same) -> Flatten -> SpelaDense(34), library defaults
    (2x2 max-pool), seeded."""
    keras.utils.set_random_seed(0)
    model = SpelaModel(
        [
            keras.Input(MICRO_CNN_INPUT),
            SpelaConv2D(8, 3, padding="same", name="conv1"),
            SpelaConv2D(16, 3, padding="same", name="conv2"),
            keras.layers.Flatten(),
            SpelaDense(34, name="d1"),
        ],
        num_classes=NUM_CLASSES,
    )
    model.compile()
    return model


def layer_activation_sizes(model, input_shape):
    """Per-example float counts of each SPELA layer's step tensors.

    Args:
        model: a built SpelaModel of SpelaConv2D / SpelaDense layers (and
            plain Keras layers such as Flatten, which only reshape).
        input_shape: the shape of one example, e.g. `(20, 20, 1)`.

    Returns:
        `(sizes, last_output)`: `sizes` maps each SPELA layer's name to
        `(inputs, full_resolution, outputs)` (full_resolution is the conv
        map before pooling, None for a SpelaDense) and `last_output` is the
        size of the model's output.
    """
    sizes, shape = {}, (1,) + tuple(input_shape)
    for layer in model.layers:
        output_shape = tuple(layer.compute_output_shape(shape))
        inputs, outputs = int(np.prod(shape[1:])), int(np.prod(output_shape[1:]))
        if isinstance(layer, SpelaConv2D):
            (height, width), _ = conv_rules.output_shapes(shape, layer.rule)
            sizes[layer.name] = (inputs, height * width * layer.filters, outputs)
        elif isinstance(layer, SpelaDense):
            sizes[layer.name] = (inputs, None, outputs)
        shape = output_shape
    return sizes, int(np.prod(shape[1:]))


def conv_floors(model, input_shape, batch, kind):
    """(SPELA floor, backprop floor on paper), in bytes, of a SpelaModel with
    SpelaConv2D layers, with their parts.

    The SPELA floor is what any implementation of the layer-local step must
    hold at once, float32: the learned weights (every trainable variable),
    the optimizer state (SGD: none; Adam: two slots per weight, + 8 bytes of
    beta powers) and the largest live activations of ONE layer's step, the
    maximum over the SPELA layers (the other layers' activations are dead by
    then): for a SpelaConv2D its input, its conv map at full resolution
    (counted once: the activation can replace the pre-activation, whose sign
    it keeps) and its pooled output; for a SpelaDense its input and its
    output. The layer's error and gradient temporaries are not counted, so
    the floor is a lower bound.

    The backprop floor on paper is the same network trained by backprop with
    a Dense(10) head: weights + optimizer state + every activation kept for
    the backward pass (the input, each conv layer's full-resolution map and
    pooled output, each dense output, the head's output) + the gradient of
    every kept activation but the input.

    Args:
        model: a built SpelaModel.
        input_shape: the shape of one example, e.g. `(20, 20, 1)`.
        batch: the micro train step's batch size.
        kind: `"sgd"` or `"adam"`.

    Returns:
        `(spela, backprop)`: two dicts of named byte counts; `spela` also
        names the layer of the largest step under `"largest layer"`.

    Example:

    ```python
    spela, backprop = conv_floors(micro_cnn(), (20, 20, 1), 8, "adam")
    floor = sum(v for k, v in spela.items() if k != "largest layer")
    ```
    """
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    weights = 4 * params
    state = 0 if kind == "sgd" else 2 * weights + 8
    sizes, last_output = layer_activation_sizes(model, input_shape)
    steps, kept = {}, [int(np.prod(input_shape))]
    for name, (inputs, full, outputs) in sizes.items():
        steps[name] = inputs + (full or 0) + outputs
        kept += [full, outputs] if full else [outputs]
    largest = max(steps, key=steps.get)
    spela = {
        "weights": weights,
        "optimizer state": state,
        "largest layer step activations": 4 * batch * steps[largest],
        "largest layer": largest,
    }
    head_params = (last_output + 1) * NUM_CLASSES
    bp_weights = weights + 4 * head_params
    kept.append(NUM_CLASSES)
    backprop = {
        "weights": bp_weights,
        "optimizer state": 0 if kind == "sgd" else 2 * bp_weights,
        "kept activations": 4 * batch * sum(kept),
        "their gradients": 4 * batch * sum(kept[1:]),
    }
    return spela, backprop


def conv_arena(workdir):
    """Part (b) for the small SPELA CNN (`micro_cnn`), SGD and Adam."""
    rows, verdicts = [], []
    for kind, optimizer in (
        ("sgd", keras.optimizers.SGD(0.1)),
        ("adam", keras.optimizers.Adam(1e-2)),
    ):
        keras.backend.clear_session()
        model = micro_cnn()
        path = os.path.join(workdir, f"micro_cnn_{kind}.tflite")
        export = keras_spela.export_tflite_micro(
            model, path, batch_size=MICRO_BATCH, optimizer=optimizer
        )
        spela, backprop = conv_floors(model, MICRO_CNN_INPUT, MICRO_BATCH, kind)
        largest = spela.pop("largest layer")
        with open(os.path.splitext(path)[0] + ".json") as f:
            block_bytes = json.load(f)["block_bytes"]
        floor, bp_floor = sum(spela.values()), sum(backprop.values())
        measured = export.arena_bytes
        ratio = measured / floor if measured else float("nan")
        rows.append(
            [
                MICRO_CNN_NAME,
                kind,
                f"{measured:,}" if measured else "n/a",
                f"{spela['weights']:,}",
                f"{spela['optimizer state']:,}",
                f"{spela['largest layer step activations']:,} ({largest})",
                f"{floor:,}",
                f"{ratio:.2f}",
                f"{bp_floor:,}",
                f"{measured / bp_floor:.2f}" if measured else "n/a",
                f"{sum(export.operators.values()):,}",
                f"{block_bytes:,}",
                f"{export.size_bytes:,}",
            ]
        )
        verdicts.append(
            f"  {'PASS' if ratio <= 1.25 else 'FAIL'} micro arena <= 1.25x floor "
            f"({MICRO_CNN_NAME}, {kind}): {ratio:.2f}x"
        )
        report = _arena_report(export.path)
        if report:
            verdicts.append(f"    TFLite Micro allocation record: {report}")
            head = re.search(r"Arena allocation head ([0-9]+) bytes", report)
            sizes, _ = layer_activation_sizes(model, MICRO_CNN_INPUT)
            map_name, map_size = max(
                ((n, s[1]) for n, s in sizes.items() if s[1]), key=lambda item: item[1]
            )
            map_bytes = 4 * MICRO_BATCH * map_size
            if head:
                verdicts.append(
                    f"    the head (the planned intermediate tensors) is "
                    f"{int(head.group(1)) / map_bytes:.1f} x {map_name}'s full-resolution "
                    f"map ({map_bytes:,} bytes), of which the floor counts one"
                )
        print(f"  micro export {MICRO_CNN_NAME} {kind} done", flush=True)
    print()
    print(
        common.format_table(
            [
                "net",
                "optimizer",
                "arena bytes",
                "weights",
                "opt state",
                "largest layer step act.",
                "SPELA floor",
                "arena/floor",
                "backprop floor (paper)",
                "arena/bp floor",
                "operators",
                "block bytes",
                "model bytes",
            ],
            rows,
            title=(
                f"(b) TFLite Micro train step of a SPELA CNN, batch {MICRO_BATCH}: arena vs "
                "floors (bytes; floor: weights + optimizer state + one layer's input, "
                "full-resolution map and pooled output)"
            ),
        )
    )
    print("\n".join(verdicts))


def _arena_report(model_path):
    """Head/tail split and the largest record lines of TFLite Micro's report."""
    try:
        from tflite_micro import runtime as micro_runtime

        from keras_spela.lite.micro_arena import captured_output as _captured_output
    except ImportError:
        return None
    with open(model_path, "rb") as f:
        data = f.read()
    interpreter = micro_runtime.Interpreter.from_bytes(data, arena_size=64 * 1024 * 1024)
    for index in range(2):
        detail = interpreter.get_input_details(index)
        fill = -1 if np.issubdtype(detail["dtype"], np.integer) else 0
        interpreter.set_input(np.full(detail["shape"], fill, detail["dtype"]), index)
    interpreter.invoke()
    text = _captured_output(interpreter.print_allocations)
    keep = []
    for line in text.splitlines():
        line = line.replace("[RecordingMicroAllocator] ", "").strip()
        if line.startswith(
            ("Arena allocation head", "Arena allocation tail", "'Persistent buffer data'")
        ):
            keep.append(line)
    return "; ".join(keep)


# ------------------------------------------------------ (c) size, ops, runtimes
class BackpropModule(tf.Module):
    """The standard recipe: GradientTape train, infer, raw-ops save/restore."""

    def __init__(self, model, optimizer, batch):
        super().__init__()
        self.model = model
        self.optimizer = optimizer
        optimizer.build(model.trainable_variables)
        # The tf.Module must hold the Keras variables explicitly.
        self.model_variables = [v.value for v in model.variables]
        self.optimizer_variables = [v.value for v in optimizer.variables]
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        d = model.inputs[0].shape[-1]
        self.train = tf.function(
            self._train,
            input_signature=[
                tf.TensorSpec([batch, d], tf.float32, name="x"),
                tf.TensorSpec([batch], tf.int32, name="y"),
            ],
        )
        self.infer = tf.function(
            self._infer, input_signature=[tf.TensorSpec([None, d], tf.float32, name="x")]
        )
        path_spec = [tf.TensorSpec([], tf.string, name="checkpoint_path")]
        self.save = tf.function(self._save, input_signature=path_spec)
        self.restore = tf.function(self._restore, input_signature=path_spec)

    def _train(self, x, y):
        with tf.GradientTape() as tape:
            loss = self.loss_fn(y, self.model(x, training=True))
        gradients = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        return {"loss": loss}

    def _infer(self, x):
        return {"output": self.model(x)}

    def _save(self, checkpoint_path):
        tf.raw_ops.Save(
            filename=checkpoint_path,
            tensor_names=[w.path for w in self.model.weights],
            data=[w.value.read_value() for w in self.model.weights],
            name="save",
        )
        return {"checkpoint_path": checkpoint_path}

    def _restore(self, checkpoint_path):
        restored = {}
        for w in self.model.weights:
            value = tf.raw_ops.Restore(
                file_pattern=checkpoint_path, tensor_name=w.path, dt=tf.float32, name="restore"
            )
            value = tf.reshape(value, w.shape)
            w.value.assign(value)
            restored[w.path.replace("/", "_")] = value
        return restored


def export_backprop(widths, batch, path):
    keras.utils.set_random_seed(0)
    model = common.backprop_mlp(widths[0], widths[1:], NUM_CLASSES)
    module = BackpropModule(model, keras.optimizers.Adam(1e-2), batch)
    signatures = {
        name: getattr(module, name).get_concrete_function()
        for name in ("train", "infer", "save", "restore")
    }
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(module, saved, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=list(signatures))
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS,
            tf.lite.OpsSet.SELECT_TF_OPS,
        ]
        converter.experimental_enable_resource_variables = True
        data = converter.convert()
    with open(path, "wb") as f:
        f.write(data)
    return data


def signature_operators(data, signature):
    """Operators of the subgraph of one signature (a Counter)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(bytearray(data), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    for i in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(i)
        if sig.SignatureKey().decode() == signature:
            subgraph = model.Subgraphs(sig.SubgraphIndex())
            counts = collections.Counter()
            for o in range(subgraph.OperatorsLength()):
                code = model.OperatorCodes(subgraph.Operators(o).OpcodeIndex())
                builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
                if builtin == schema.BuiltinOperator.CUSTOM:
                    counts[f"CUSTOM:{code.CustomCode().decode()}"] += 1
                else:
                    counts[names.get(builtin, f"BUILTIN_{builtin}")] += 1
            return counts
    return collections.Counter()


def try_litert_train(path, widths, batch, steps=3):
    try:
        runner = litert_interpreter(path).get_signature_runner("train")
        rng = np.random.default_rng(0)
        x = rng.random((batch, widths[0]), np.float32)
        y = (np.arange(batch) % NUM_CLASSES).astype(np.int32)
        losses = [float(runner(x=x, y=y)["loss"]) for _ in range(steps)]
        return "runs: loss over %d steps on one batch %s" % (
            steps,
            " -> ".join(f"{v:.4f}" for v in losses),
        )
    except Exception as error:  # report whatever the runtime raises
        return f"FAILS: {type(error).__name__}: {error}"


TFLITE_RUNTIME_PROBE = r"""
import json, sys
import numpy as np
out = {}
try:
    from tflite_runtime.interpreter import Interpreter
    import tflite_runtime
    out["version"] = tflite_runtime.__version__
except Exception as error:
    print(json.dumps({"import": f"{type(error).__name__}: {error}"})); sys.exit()
for name, path, d, batch in json.loads(sys.argv[1]):
    try:
        runner = Interpreter(model_path=path).get_signature_runner("train")
        x = np.random.default_rng(0).random((batch, d), dtype=np.float32)
        y = (np.arange(batch) % 10).astype(np.int32)
        losses = [float(runner(x=x, y=y)["loss"]) for _ in range(3)]
        out[name] = "runs: loss over 3 steps on one batch " + " -> ".join(
            f"{v:.4f}" for v in losses)
    except Exception as error:
        out[name] = f"FAILS: {type(error).__name__}: {error}"
print(json.dumps(out))
"""


def compare_exports(args, workdir):
    rows, outcomes = [], []
    for widths in args.nets:
        keras.backend.clear_session()
        model = build_spela(widths)
        ours_path = os.path.join(workdir, f"ours_{net_name(widths)}.tflite")
        keras_spela.export_tflite(model, ours_path, batch_size=MICRO_BATCH)
        with open(ours_path, "rb") as f:
            ours = f.read()
        bp_path = os.path.join(workdir, f"backprop_{net_name(widths)}.tflite")
        keras.backend.clear_session()
        bp = export_backprop(widths, MICRO_BATCH, bp_path)
        for label, data in (("SPELA (export_tflite)", ours), ("backprop (standard, +Flex)", bp)):
            ops = read_operators(data)
            train_ops = signature_operators(data, "train")
            flex = sorted({k for k in ops if k.startswith("CUSTOM:")})
            rows.append(
                [
                    net_name(widths),
                    label,
                    f"{len(data):,}",
                    str(sum(ops.values())),
                    str(len(ops)),
                    str(sum(train_ops.values())),
                    str(len(train_ops)),
                    ", ".join(f"{k.replace('CUSTOM:', '')} x{ops[k]}" for k in flex) or "none",
                ]
            )
        outcomes.append(
            (net_name(widths), "SPELA", "LiteRT", try_litert_train(ours_path, widths, MICRO_BATCH))
        )
        outcomes.append(
            (net_name(widths), "backprop", "LiteRT", try_litert_train(bp_path, widths, MICRO_BATCH))
        )
        if os.path.exists(TFLITE_PYTHON):
            jobs = [
                ("SPELA", ours_path, widths[0], MICRO_BATCH),
                ("backprop", bp_path, widths[0], MICRO_BATCH),
            ]
            result = subprocess.run(
                [TFLITE_PYTHON, "-c", TFLITE_RUNTIME_PROBE, json.dumps(jobs)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            try:
                found = json.loads(result.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                found = {
                    "SPELA": f"probe failed: {result.stderr[-500:]}",
                    "backprop": f"probe failed: {result.stderr[-500:]}",
                }
            runtime = f"tflite-runtime {found.get('version', '?')}"
            for name in ("SPELA", "backprop"):
                outcomes.append((net_name(widths), name, runtime, found.get(name, found)))
        else:
            outcomes.append(
                (
                    net_name(widths),
                    "both",
                    "tflite-runtime",
                    f"skipped: {TFLITE_PYTHON} does not exist",
                )
            )
        print(f"  exports {net_name(widths)} done", flush=True)
    print()
    print(
        common.format_table(
            [
                "net",
                "model",
                "file bytes",
                "ops (all subgraphs)",
                "op kinds",
                "train-signature ops",
                "train op kinds",
                "Flex / custom ops",
            ],
            rows,
            title=(
                f"(c) Exported LiteRT models, train batch {MICRO_BATCH} (backprop: + Dense "
                f"{NUM_CLASSES} head, Adam 1e-2 inside train; SPELA: 4 signatures incl. "
                "gated updates and input checks)"
            ),
        )
    )
    print()
    print("(c) Running the train signature (3 steps on one batch):")
    for net, name, runtime, outcome in outcomes:
        print(f"  [{net}] {name} on {runtime}: {outcome}")


def main():
    args = parse_args()
    name = "on_device_arena.txt" if args.arena_only else "on_device.txt"
    txt = None if args.no_save else common.results_path(name, args.quick)
    with common.Tee(txt), tempfile.TemporaryDirectory() as workdir:
        print(__doc__.split("\n\n")[0])
        print(common.environment_line())
        try:
            import ai_edge_litert

            print(f"ai_edge_litert {getattr(ai_edge_litert, '__version__', '?')}")
        except ImportError:
            print("ai_edge_litert not installed")
        print(
            f"settings: nets {[net_name(w) for w in args.nets]}, batches {args.batches}, "
            f"{args.blocks} blocks of {args.block} calls"
            f"{' (QUICK MODE)' if args.quick else ''}"
            f"{' (part (b) only: --arena_only)' if args.arena_only else ''}"
        )
        if not args.arena_only:
            step_times(args, workdir)
        arena(args, workdir)
        conv_arena(workdir)
        if not args.arena_only:
            compare_exports(args, workdir)


if __name__ == "__main__":
    main()
