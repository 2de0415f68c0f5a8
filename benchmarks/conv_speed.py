"""SPELA CNN training step vs the same CNN by backprop: step time per lowering, memory, primitives.

What is measured (CPU), side by side in one run:

(1) Step time. The CNNs of benchmarks/cnn_accuracy.py, imported from it and
    used as they are built there: `spela_cnn()` (SpelaConv2D(32, 5, same) ->
    SpelaConv2D(64, 3, same) -> Flatten -> SpelaDense(256) ->
    SpelaDense(34), every layer and compile() at the library defaults; the
    conv objective is printed with the table) and `backprop_cnn()` (the same
    widths by Keras backprop, Conv2D + LeakyReLU(0.01) + MaxPooling2D(2)
    blocks, Dense(256), a Dense(10) softmax head, Adam 1e-3). The SPELA CNN
    runs with each host lowering of the rule's primitives
    (`keras_spela.core.primitives`): `compile(lowering="fused")` (the default:
    TensorFlow's MaxPoolGrad and Conv2DBackpropFilter) and
    `compile(lowering="builtins")` (the TFLite builtins that every export
    runs); SpelaModel's XLA step traces the builtins whatever the lowering,
    so with `jit_compile=True` the two SPELA models run the same step. Every
    model runs with `jit_compile=False` and `True` (re-compiled from the
    builder's compile config; SpelaModel with True runs its local rules and
    optimizer update as one XLA function, Keras compiles the whole backprop
    step). On ONE fixed batch of load_canvas_digits() (20x20x1, the first
    `batch` training images) at batch 1 and 64, two ways per model:
    `model.train_on_batch(x, y)` (numpy in, numpy logs out) and the bare
    compiled `model.train_function` (tf tensors in, one loss read back), as
    benchmarks/on_device.py does. After warm-up calls, the twelve (model,
    jit_compile, way) functions are timed in blocks of `--block` calls,
    taking turns block by block; the median per-call time over the blocks is
    reported, with the ratio SPELA / backprop for each lowering at the same
    jit_compile setting and best against best (each model at its faster
    jit_compile). Goals, one PASS/FAIL line per batch and way for the
    default lowering, best against best: SPELA <= 0.8x backprop at batch 64
    and <= 1.0x at batch 1.
(2) Peak memory of one training step against the number of conv blocks,
    by benchmarks/memory_depth.py's method (its helpers are imported: a fresh
    subprocess per (method, blocks, jit_compile) with TensorFlow's BFC CPU
    allocator and its statistics, medians over `--repeats` calls): CNNs of
    1, 2, 3, 4 blocks on synthetic 64x64x1 inputs (uniform [0, 1), random
    labels of 10 classes), batch 64, each block 32 filters, 3x3, padding
    same, 2x2 max-pool. SPELA: SpelaModel([Input] + blocks x
    SpelaConv2D(32, 3, same)) (every block an exit, the library's default
    conv objective and lowering); backprop: blocks x (Conv2D(32, 3, same) +
    LeakyReLU(0.01) + MaxPooling2D(2)) + GlobalAveragePooling2D + Dense(10)
    softmax. Both Adam 1e-3. Columns as memory_depth.py, but weights + Adam
    slots are counted (3 x 4 bytes per parameter), not measured: step peak
    (train_on_batch, all gradients held), activations (the gradient
    computation with every gradient reduced to a scalar at once: what is
    kept for the gradients) and, SPELA only, sequenced (each layer's forward
    waiting for the previous layer's gradients). The unit "block 1" is the
    first block's full-resolution feature map, batch x 64 x 64 x 32 float32
    = 32 MiB; each further block's is 4x smaller (the pooling halves each
    side). Both series and their ratio at the deepest are printed; no goal
    is set.
(3) The primitives' lowerings, at the largest timing batch (64): for every
    SpelaConv2D layer of the SPELA CNN, on its real forward tensors of the
    batch (each layer's input the previous layer's output; the filter
    gradient's dL/dz the layer's own; a seeded normal dL/dp for the max-pool
    gradient, whose cost does not depend on its values), every primitive
    that has a fused lowering (`max_pool_gradient`, `conv_filter_gradient`)
    by `primitives.PRIMITIVES[name].builtins` and `.fused`, each alone in a
    tf.function (jit_compile False), timed in interleaved blocks as in (1).
    Printed: the median ms per call of each and the ratio fused / builtins.
    (`dense_kernel_gradient` has one lowering, a MATMUL.)

The load average is printed at the start and at the end: above ~3 on this
2-core machine, other processes took CPU time and the timings are noisy.

Run (from the repository root, with the project's virtualenv; do not nice it):

    python benchmarks/conv_speed.py            # 20 blocks of 10 calls; memory 1-4 blocks; (3)
    python benchmarks/conv_speed.py --quick    # 5 blocks of 3 calls; memory 1-2 blocks, 32x32

Output: benchmarks/results/conv_speed[_quick].txt
"""

import argparse
import json
import os
import sys
import time

from quiet_common import capture_native_stderr, common  # first: TensorFlow, quietly

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import cnn_accuracy  # noqa: E402  (the CNN builders)
import keras_spela  # noqa: E402
import memory_depth  # noqa: E402  (the memory method's helpers)
from keras_spela import SpelaConv2D, SpelaModel  # noqa: E402
from keras_spela.core import conv_rules  # noqa: E402
from keras_spela.core import primitives  # noqa: E402
from keras_spela.core import rules  # noqa: E402

# Twelve models trace their steps here on purpose: no retracing warnings.
tf.get_logger().setLevel("ERROR")

NUM_CLASSES = 10
METHODS = ("SPELA", "backprop")
# The timed models: the SPELA CNN with each lowering, then backprop.
MODELS = tuple(f"SPELA {name}" for name in primitives.LOWERINGS) + ("backprop",)
DEFAULT_SPELA = f"SPELA {primitives.DEFAULT_LOWERING}"
WAYS = ("train_on_batch", "train_function")
PARTS = ("time", "memory", "kernels")
MIB = 2.0**20
# Goals: SPELA step / backprop step at each batch size.
GOAL_RATIO = {64: 0.8, 1: 1.0}
LOAD_WARNING = 3.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5 blocks of 3 calls; memory: 1,2 conv blocks on 32x32, 3 repeats",
    )
    parser.add_argument(
        "--parts",
        default="time,memory,kernels",
        help="comma-separated parts to run: time, memory, kernels (default all)",
    )
    parser.add_argument(
        "--batches",
        type=memory_depth.positive_int_list,
        default=[1, 64],
        help="batch sizes of the step timing (default 1,64)",
    )
    parser.add_argument(
        "--blocks", type=int, default=None, help="timed blocks per function (default 20, quick 5)"
    )
    parser.add_argument(
        "--block", type=int, default=None, help="calls per timed block (default 10, quick 3)"
    )
    parser.add_argument("--jit", default="both", choices=("both", "false", "true"))
    parser.add_argument(
        "--conv_blocks",
        type=memory_depth.positive_int_list,
        default=None,
        help="conv block counts of the memory part (default 1,2,3,4)",
    )
    parser.add_argument(
        "--image_size",
        type=int,
        default=None,
        help="side of the memory part's square input (default 64, quick 32)",
    )
    parser.add_argument("--filters", type=int, default=32, help="filters per conv block")
    parser.add_argument("--memory_batch", type=int, default=64)
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="measured calls per memory quantity (default 5, quick 3)",
    )
    parser.add_argument("--no_save", action="store_true", help="write no results file")
    # Internal: measure one memory configuration and print it as one JSON line.
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        named = ", ".join(unknown) or repr(args.parts)
        parser.error(f"unknown part {named}; choose from {', '.join(PARTS)}")
    args.parts = parts
    defaults = {"blocks": (20, 5), "block": (10, 3), "image_size": (64, 32), "repeats": (5, 3)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.conv_blocks is None:
        args.conv_blocks = [1, 2] if args.quick else [1, 2, 3, 4]
    for name in ("blocks", "block", "filters", "memory_batch", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    smallest = 2 ** max(args.conv_blocks)
    if "memory" in args.parts and args.image_size < smallest:
        parser.error(
            f"--image_size {args.image_size} is too small for "
            f"{max(args.conv_blocks)} pooled blocks (at least {smallest})"
        )
    return args


def recompiled(model, **overrides):
    """Re-compiles `model` from its own compile config with `overrides`
    (e.g. `jit_compile`, `lowering`; a fresh optimizer of the same
    configuration); returns the model."""
    config = model.get_compile_config()
    config.update(overrides)
    model.compile_from_config(config)
    return model


# ------------------------------------------------------------- (1) step time
def timed_models(jits):
    """`{(model name, jit_compile): compiled model}`, each seeded alike."""
    models = {}
    for jit in jits:
        for name in MODELS:
            keras.utils.set_random_seed(0)
            if name == "backprop":
                models[(name, jit)] = recompiled(cnn_accuracy.backprop_cnn(), jit_compile=jit)
            else:
                lowering = name.split()[1]
                models[(name, jit)] = recompiled(
                    cnn_accuracy.spela_cnn(), jit_compile=jit, lowering=lowering
                )
    return models


def conv_objectives(model):
    """The objectives of `model`'s SpelaConv2D layers, comma-separated."""
    return ", ".join(
        sorted({layer.objective for layer in model.layers if isinstance(layer, SpelaConv2D)})
    )


def step_functions(models, x, y):
    """The timed callables: `{(model name, jit_compile, way): no-arg function}`."""
    x_tf, y_tf = tf.constant(x), tf.constant(y)
    functions = {}
    for (name, jit), model in models.items():
        with capture_native_stderr():  # grappler's notices while tracing
            model.train_on_batch(x, y)  # traces the step
        train_function = model.train_function

        def bare(train_function=train_function):
            float(train_function([(x_tf, y_tf)])["loss"])

        functions[(name, jit, "train_on_batch")] = lambda model=model: model.train_on_batch(x, y)
        functions[(name, jit, "train_function")] = bare
    return functions


def time_in_blocks(functions, blocks, block):
    """Median seconds per call of each function over `blocks` blocks of
    `block` calls, the functions taking turns block by block."""
    for function in functions.values():  # warm-up
        for _ in range(3):
            function()
    times = {key: [] for key in functions}
    for _ in range(blocks):
        for key, function in functions.items():
            start = time.perf_counter()
            for _ in range(block):
                function()
            times[key].append((time.perf_counter() - start) / block)
    return {key: common.median(t) for key, t in times.items()}


def step_times(args, jits):
    (x_train, y_train), _ = keras_spela.datasets.load_canvas_digits()
    rows, verdicts, objectives = [], [], None
    spela_models = MODELS[:-1]
    for batch in args.batches:
        keras.backend.clear_session()
        models = timed_models(jits)
        objectives = conv_objectives(models[(DEFAULT_SPELA, jits[0])])
        x, y = x_train[:batch], y_train[:batch]
        seconds = time_in_blocks(step_functions(models, x, y), args.blocks, args.block)
        for way in WAYS:
            ms = {(n, j): 1000 * seconds[(n, j, way)] for n in MODELS for j in jits}
            for jit in jits:
                rows.append(
                    [str(batch), way, str(jit)]
                    + [f"{ms[(n, jit)]:.2f}" for n in MODELS]
                    + [f"{ms[(n, jit)] / ms[('backprop', jit)]:.3f}" for n in spela_models]
                )
            best_jit = {n: min(jits, key=lambda j, n=n: ms[(n, j)]) for n in MODELS}
            best = {n: ms[(n, best_jit[n])] for n in MODELS}
            best_ratio = {n: best[n] / best["backprop"] for n in spela_models}
            rows.append(
                [str(batch), way, "best"]
                + [f"{best[n]:.2f} ({best_jit[n]})" for n in MODELS]
                + [f"{best_ratio[n]:.3f}" for n in spela_models]
            )
            goal = GOAL_RATIO.get(batch)
            if goal is not None:
                ratio = best_ratio[DEFAULT_SPELA]
                verdicts.append(
                    f"  {'PASS' if ratio <= goal else 'FAIL'} batch {batch}, {way}: "
                    f"{DEFAULT_SPELA} (default lowering) best / backprop best "
                    f"{ratio:.3f} (goal <= {goal})"
                )
        print(f"  step timing batch {batch} done", flush=True)
    headers = (
        ["batch", "way", "jit_compile"]
        + [f"{n} ms" for n in MODELS]
        + [f"{n} / bp" for n in spela_models]
    )
    print()
    print(
        common.format_table(
            headers,
            rows,
            title=(
                f"(1) CNN train step, load_canvas_digits 20x20x1, SPELA conv objective "
                f"{objectives}, median ms per call over {args.blocks} interleaved blocks of "
                f"{args.block} calls; 'best': each model at its faster jit_compile (in "
                "parentheses), ratios best / best"
            ),
        )
    )
    print("\n".join(verdicts))


# ------------------------------------------------------- (2) memory vs blocks
def build_cnn(method, blocks, image_size, filters, jit_compile):
    """The compiled SPELA or backprop CNN of `blocks` conv blocks."""
    inputs = keras.Input((image_size, image_size, 1))
    if method == "SPELA":
        model = SpelaModel(
            [inputs] + [SpelaConv2D(filters, 3, padding="same") for _ in range(blocks)],
            num_classes=NUM_CLASSES,
        )
        # The memory-lean step (each layer's gradients before the next layer).
        model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit_compile, ordered_steps=True)
        return model
    layers = [inputs]
    for _ in range(blocks):
        layers += [
            keras.layers.Conv2D(filters, 3, padding="same"),
            keras.layers.LeakyReLU(negative_slope=common.BACKPROP_NEGATIVE_SLOPE),
            keras.layers.MaxPooling2D(2),
        ]
    layers += [
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(NUM_CLASSES, activation="softmax"),
    ]
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def measure(method, blocks, args, jit_compile):
    """The memory numbers of one configuration (a dict of bytes), in this
    process, as memory_depth.measure takes them."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    shape = (args.memory_batch, args.image_size, args.image_size, 1)
    x = tf.constant(rng.random(shape, np.float32))
    y = tf.constant(rng.integers(0, NUM_CLASSES, args.memory_batch).astype(np.int32))
    model = build_cnn(method, blocks, args.image_size, args.filters, jit_compile)
    gradients = memory_depth.gradient_function(model, jit_compile)
    sequenced = (
        memory_depth.sequenced_gradient_function(model, jit_compile) if method == "SPELA" else None
    )

    def step():
        return model.train_on_batch(x, y)

    with capture_native_stderr():  # trace, compile, create the optimizer slots
        for _ in range(2):
            step()
            gradients(x, y)
            if sequenced is not None:
                sequenced(x, y)
    persistent = memory_depth.live_bytes()
    peak = memory_depth.allocator_peak
    step_peaks = [peak(step) for _ in range(args.repeats)]
    activation_peaks = [peak(lambda: gradients(x, y)) for _ in range(args.repeats)]
    sequenced_peaks = (
        [peak(lambda: sequenced(x, y)) for _ in range(args.repeats)]
        if sequenced is not None
        else [0]
    )
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return {
        "persistent": persistent,
        "step": common.median(step_peaks),
        "activations": common.median(activation_peaks),
        "sequenced": common.median(sequenced_peaks),
        "gradient_bytes": 4 * params,
    }


def run_child(args, method, blocks, jit_compile):
    """Measures one memory configuration in a fresh Python process."""
    flags = [
        "--image_size",
        str(args.image_size),
        "--filters",
        str(args.filters),
        "--memory_batch",
        str(args.memory_batch),
        "--repeats",
        str(args.repeats),
        "--conv_blocks",
        str(blocks),
    ]
    return common.run_child(
        __file__,
        f"{method},{blocks},{jit_compile}",
        flags,
        f"{method} {blocks} blocks jit_compile={jit_compile}",
    )


def child_main(args):
    method, blocks, jit = args.child.split(",")
    memory_depth.enable_allocator_statistics()
    print(json.dumps(measure(method, int(blocks), args, jit == "True")))


def mib(value):
    """Bytes as MiB with two decimals (a conv block's weights are ~0.04 MiB)."""
    return f"{value / MIB:.2f}"


def ratio(numerator, denominator):
    """`numerator / denominator` with two decimals, or "n/a" when the
    denominator is 0 (a peak the allocator statistics did not see)."""
    return f"{numerator / denominator:.2f}" if denominator else "n/a"


def memory_report(args, results, jit_compile):
    depths = args.conv_blocks
    block_bytes = 4 * args.memory_batch * args.image_size**2 * args.filters
    rows = []
    for depth in depths:
        s, b = results["SPELA"][depth], results["backprop"][depth]
        rows.append(
            [
                str(depth),
                mib(3 * s["gradient_bytes"]),
                mib(3 * b["gradient_bytes"]),
                mib(s["step"]),
                mib(b["step"]),
                ratio(s["step"], b["step"]),
                mib(s["activations"]),
                mib(b["activations"]),
                ratio(s["activations"], b["activations"]),
                mib(s["sequenced"]),
                ratio(s["sequenced"], b["activations"]),
            ]
        )
    print()
    print(
        common.format_table(
            [
                "conv blocks",
                "weights+slots SPELA",
                "weights+slots bp",
                "step peak SPELA",
                "step peak bp",
                "ratio",
                "activations SPELA",
                "activations bp",
                "ratio",
                "SPELA sequenced",
                "ratio",
            ],
            rows,
            title=(
                f"(2) MiB, jit_compile={jit_compile}, {args.image_size}x{args.image_size}x1, "
                f"{args.filters} filters per block, batch {args.memory_batch} (block 1's "
                f"feature map = {block_bytes / MIB:.1f} MiB); medians of {args.repeats} calls"
            ),
        )
    )
    for key, label in (("activations", "activations"), ("step", "step peak")):
        for method in METHODS:
            series = [results[method][d][key] for d in depths]
            growth = (series[-1] - series[0]) / block_bytes
            print(
                f"  {method} {label} (MiB) by conv blocks {depths}: "
                f"{', '.join(mib(v) for v in series)}; from {depths[0]} to "
                f"{depths[-1]} blocks +{growth:.2f} x block 1's feature map"
            )
    deepest = depths[-1]
    s, b = results["SPELA"][deepest], results["backprop"][deepest]
    print(
        f"  ratio SPELA / backprop at {deepest} conv blocks (jit_compile={jit_compile}): "
        f"activations {ratio(s['activations'], b['activations'])}, step peak "
        f"{ratio(s['step'], b['step'])}; SPELA sequenced / backprop activations "
        f"{ratio(s['sequenced'], b['activations'])}"
    )


def memory_part(args, jits):
    start = time.perf_counter()
    for jit in jits:
        results = {method: {} for method in METHODS}
        for blocks in args.conv_blocks:
            for method in METHODS:
                try:
                    results[method][blocks] = run_child(args, method, blocks, jit)
                except RuntimeError as error:
                    sys.exit(f"conv_speed.py: memory measurement failed: {error}")
            print(
                f"  memory jit_compile={jit} {blocks} conv blocks measured "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        memory_report(args, results, jit)


# ------------------------------------------------ (3) the primitives' lowerings
def primitive_functions(model, x, y):
    """Part (3)'s timed callables on the real forward tensors of every
    SpelaConv2D layer of `model` on the batch `(x, y)`: `{(layer name,
    primitive name, lowering): no-arg function}` and `{(layer name, primitive
    name): its operands' shapes, as text}`."""
    functions, shapes = {}, {}
    targets = rules.one_hot(tf.constant(y, tf.int32), model.num_classes)
    rng = np.random.default_rng(0)
    h = tf.constant(x)
    for layer in model.layers:
        if not isinstance(layer, SpelaConv2D):
            h = layer(h)
            continue
        rule = layer.rule
        error = layer.local_error(h, targets)
        _, _, a, p, _ = conv_rules.conv_forward(
            h, layer.kernel, layer.bias if layer.use_bias else None, rule
        )
        grad_p = tf.constant(rng.normal(size=p.shape).astype(np.float32))
        operands = {
            "max_pool_gradient": (grad_p, a, p, rule.pool_size),
            "conv_filter_gradient": (
                error.inputs,
                conv_rules.conv_gradient(error),
                rule.kernel_size,
                rule.strides,
            ),
        }
        shapes[(layer.name, "max_pool_gradient")] = (
            f"a {'x'.join(map(str, a.shape))}, pool {'x'.join(map(str, rule.pool_size))}"
        )
        shapes[(layer.name, "conv_filter_gradient")] = (
            f"h {'x'.join(map(str, error.inputs.shape))}, dL/dz "
            f"{'x'.join(map(str, operands['conv_filter_gradient'][1].shape))}"
        )
        for name, args in operands.items():
            for lowering in primitives.LOWERINGS:
                function = tf.function(
                    lambda f=getattr(primitives.PRIMITIVES[name], lowering), args=args: f(*args)
                )
                functions[(layer.name, name, lowering)] = lambda f=function: f().numpy()
        h = error.outputs
    return functions, shapes


def kernel_part(args):
    """Part (3): each primitive's two lowerings on the SpelaConv2D layers'
    activations at the largest timing batch, timed side by side."""
    batch = max(args.batches)
    (x_train, y_train), _ = keras_spela.datasets.load_canvas_digits()
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    functions, shapes = primitive_functions(
        cnn_accuracy.spela_cnn(), x_train[:batch], y_train[:batch]
    )
    with capture_native_stderr():
        seconds = time_in_blocks(functions, args.blocks, args.block)
    rows = []
    for (layer, name), operands in shapes.items():
        builtins, fused = (
            1000 * seconds[(layer, name, lowering)] for lowering in ("builtins", "fused")
        )
        rows.append(
            [layer, name, operands, f"{builtins:.3f}", f"{fused:.3f}", f"{fused / builtins:.2f}"]
        )
    print()
    print(
        common.format_table(
            ["layer", "primitive", "operands", "builtins ms", "fused ms", "fused / builtins"],
            rows,
            title=(
                f"(3) The primitives' lowerings on the SPELA CNN's activations, batch {batch}, "
                f"each alone in a tf.function, median ms per call over {args.blocks} "
                f"interleaved blocks of {args.block} calls"
            ),
        )
    )


def main():
    args = parse_args()
    if args.child:
        child_main(args)
        return
    txt = None if args.no_save else common.results_path("conv_speed.txt", args.quick)
    jits = {"both": (False, True), "false": (False,), "true": (True,)}[args.jit]
    with common.Tee(txt):
        print(__doc__.split("\n\n")[0])
        print(common.environment_line())
        print(
            f"settings: parts {', '.join(args.parts)}; timing batches {args.batches}, "
            f"{args.blocks} blocks of {args.block} calls; memory conv blocks "
            f"{args.conv_blocks}, {args.image_size}x{args.image_size}x1, {args.filters} "
            f"filters, batch {args.memory_batch}, {args.repeats} repeats; jit_compile "
            f"{list(jits)}{' (QUICK MODE)' if args.quick else ''}"
        )
        load = os.getloadavg()[0]
        print(f"load average at the start (1, 5, 15 min): {common.load_average()}")
        if "time" in args.parts:
            step_times(args, jits)
        if "memory" in args.parts:
            memory_part(args, jits)
        if "kernels" in args.parts:
            kernel_part(args)
        end_load = os.getloadavg()[0]
        print()
        print(f"load average at the end (1, 5, 15 min): {common.load_average()}")
        if max(load, end_load) > LOAD_WARNING:
            print(
                f"  NOTE: load above {LOAD_WARNING} on {os.cpu_count()} cores: other "
                "processes shared the CPU, the step times are noisy (memory is not affected)"
            )


if __name__ == "__main__":
    main()
