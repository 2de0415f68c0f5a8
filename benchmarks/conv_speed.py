"""SPELA CNN training step vs the same CNN by backprop: step time, memory, where the time goes.

What is measured (CPU), side by side in one run:

(1) Step time. The CNNs of benchmarks/cnn_accuracy.py, imported from it:
    `spela_cnn()` (SpelaConv2D(32, 5, same) -> SpelaConv2D(64, 3, same) ->
    Flatten -> SpelaDense(256) -> SpelaDense(34), the library defaults,
    Adam 1e-2) and `backprop_cnn()` (the same widths by Keras backprop,
    Conv2D + LeakyReLU(0.01) + MaxPooling2D(2) blocks, Dense(256), a Dense(10)
    softmax head, Adam 1e-3), each with `jit_compile=False` and `True`
    (re-compiled from the builder's compile config; SpelaModel with True runs
    its local rules and optimizer update as one XLA function, Keras compiles
    the whole backprop step). On ONE fixed batch of load_canvas_digits()
    (20x20x1, the first `batch` training images) at batch 1 and 64, two ways
    per model: `model.train_on_batch(x, y)` (numpy in, numpy logs out) and the
    bare compiled `model.train_function` (tf tensors in, one loss read back),
    as benchmarks/on_device.py does. After warm-up calls, the eight
    (method, jit_compile, way) functions are timed in blocks of `--block`
    calls, taking turns block by block; the median per-call time over the
    blocks is reported, with the ratios SPELA / backprop at the same
    jit_compile setting and of each method's best setting (its faster
    jit_compile). Goal (issue 13): SPELA <= 0.8x backprop at batch 64 and not
    slower (<= 1.0x) at batch 1.
(2) Peak memory of one training step against the number of conv blocks,
    by benchmarks/memory_depth.py's method (its helpers are imported: a fresh
    subprocess per (method, blocks, jit_compile), TensorFlow's CPU allocator
    statistics, medians over `--repeats` calls): CNNs of 1, 2, 3, 4 blocks on
    synthetic 64x64x1 inputs (uniform [0, 1), random labels of 10 classes),
    batch 64, each block 32 filters, 3x3, padding same, 2x2 max-pool. SPELA:
    SpelaModel([Input] + blocks x SpelaConv2D(32, 3, same)) (every block an
    exit, scored by global average pooling against its class vectors);
    backprop: blocks x (Conv2D(32, 3, same) + LeakyReLU(0.01) +
    MaxPooling2D(2)) + GlobalAveragePooling2D + Dense(10) softmax, the same
    scoring with a learned head. Both Adam 1e-3. Columns as memory_depth.py,
    but weights + Adam slots are counted (3 x 4 bytes per parameter), not
    measured (see below): step peak (train_on_batch, all
    gradients held), activations (the gradient computation with every
    gradient reduced to a scalar at once: what is kept for the gradients)
    and, SPELA only, sequenced (each layer's forward waiting for the
    previous layer's gradients). The unit "block 1" is the first block's
    full-resolution feature map, batch x 64 x 64 x 32 float32 = 32 MiB; each
    further block's is 4x smaller (the pooling halves each side). Both
    series and their ratio at the deepest are printed; no goal is set.
    TensorFlow's CPU statistics do not see allocations below ~0.5 MB
    (measured here: a 256 KB tensor adds 0 bytes, a 512 KB one 512 KB), so
    the conv weights (~37 KB a block, measured persistent bytes read 0 or
    1 MiB) are counted instead, and block 4's pooled output (128 KB) is not
    seen; blocks 1-3's feature maps are above the threshold.

(3) Where the time goes, at the largest timing batch (64), jit_compile=False,
    timed side by side in blocks as in (1): the SPELA and backprop steps
    (`train_function`); a block-local reference step (the backprop CNN's
    blocks, each with its own cross-entropy through a fixed random read-out,
    differentiated by a GradientTape scoped to the block, so TensorFlow
    computes no input gradients: layer-local learning with TensorFlow's
    fused MaxPoolGrad and Conv2DBackpropFilter, a measuring stick and not a
    method of the library); and, per SpelaConv2D layer on its real forward
    tensors, the rule's two full-resolution pieces against TensorFlow's:
    the max-pool with `conv_rules.max_unpool` (TFLite builtins) against the
    max-pool differentiated by a GradientTape scoped to it (MaxPool, whose
    oneDNN kernel keeps where the maxima were, and MaxPoolGrad), and
    `conv_rules.conv_kernel_gradient` (transposes and one CONV_2D) against
    Conv2DBackpropFilter. Printed: each piece's ratio, the reference's
    ratio to backprop, and the estimate of the SPELA step with TensorFlow's
    kernels in those pieces (pieces timed alone overlap in a step: an
    estimate, not a floor).

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
from keras_spela import SpelaConv2D, SpelaModel, conv_rules  # noqa: E402

# Eight models trace their steps here on purpose: no retracing warnings.
tf.get_logger().setLevel("ERROR")

NUM_CLASSES = 10
METHODS = ("SPELA", "backprop")
WAYS = ("train_on_batch", "train_function")
PARTS = ("time", "memory", "kernels")
MIB = 2.0**20
# Issue 13's goals: SPELA step / backprop step at each batch size.
GOAL_RATIO = {64: 0.8, 1: 1.0}
LOAD_WARNING = 3.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 blocks of 3 calls; memory: 1,2 conv blocks on 32x32, 3 repeats")
    parser.add_argument("--parts", default="time,memory,kernels",
                        help="comma-separated parts to run: time, memory, kernels (default all)")
    parser.add_argument("--batches", type=memory_depth.positive_int_list, default=[1, 64],
                        help="batch sizes of the step timing (default 1,64)")
    parser.add_argument("--blocks", type=int, default=None,
                        help="timed blocks per function (default 20, quick 5)")
    parser.add_argument("--block", type=int, default=None,
                        help="calls per timed block (default 10, quick 3)")
    parser.add_argument("--jit", default="both", choices=("both", "false", "true"))
    parser.add_argument("--conv_blocks", type=memory_depth.positive_int_list, default=None,
                        help="conv block counts of the memory part (default 1,2,3,4)")
    parser.add_argument("--image_size", type=int, default=None,
                        help="side of the memory part's square input (default 64, quick 32)")
    parser.add_argument("--filters", type=int, default=32, help="filters per conv block")
    parser.add_argument("--memory_batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None,
                        help="measured calls per memory quantity (default 5, quick 3)")
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
        parser.error(f"--image_size {args.image_size} is too small for "
                     f"{max(args.conv_blocks)} pooled blocks (at least {smallest})")
    return args


def with_jit_compile(model, jit_compile):
    """Re-compiles `model` from its own compile config with `jit_compile`
    (a fresh optimizer of the same configuration); returns the model."""
    config = model.get_compile_config()
    config["jit_compile"] = jit_compile
    model.compile_from_config(config)
    return model


# ------------------------------------------------------------- (1) step time
def step_functions(models, x, y):
    """The timed callables: `{(method, jit_compile, way): no-arg function}`."""
    x_tf, y_tf = tf.constant(x), tf.constant(y)
    functions = {}
    for (method, jit), model in models.items():
        with capture_native_stderr():  # grappler's notices while tracing
            model.train_on_batch(x, y)  # traces the step
        train_function = model.train_function

        def bare(train_function=train_function):
            float(train_function([(x_tf, y_tf)])["loss"])

        functions[(method, jit, "train_on_batch")] = (
            lambda model=model: model.train_on_batch(x, y))
        functions[(method, jit, "train_function")] = bare
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
    rows, verdicts = [], []
    for batch in args.batches:
        keras.backend.clear_session()
        models = {}
        for jit in jits:
            for method, build in (("SPELA", cnn_accuracy.spela_cnn),
                                  ("backprop", cnn_accuracy.backprop_cnn)):
                keras.utils.set_random_seed(0)
                models[(method, jit)] = with_jit_compile(build(), jit)
        x, y = x_train[:batch], y_train[:batch]
        seconds = time_in_blocks(step_functions(models, x, y), args.blocks, args.block)
        for way in WAYS:
            ms = {(m, j): 1000 * seconds[(m, j, way)] for m in METHODS for j in jits}
            best = {m: min(ms[(m, j)] for j in jits) for m in METHODS}
            best_jit = {m: min(jits, key=lambda j: ms[(m, j)]) for m in METHODS}
            ratios = {j: ms[("SPELA", j)] / ms[("backprop", j)] for j in jits}
            best_ratio = best["SPELA"] / best["backprop"]
            rows.append(
                [str(batch), way]
                + [f"{ms[(m, j)]:.2f}" for m in METHODS for j in jits]
                + [f"{ratios[j]:.3f}" for j in jits]
                + [f"{best_ratio:.3f} (jit {best_jit['SPELA']} / {best_jit['backprop']})"]
            )
            goal = GOAL_RATIO.get(batch)
            if goal is None:
                continue
            comparisons = [(f"jit_compile={j}", ratios[j]) for j in jits]
            comparisons.append(("best of each", best_ratio))
            for label, ratio in comparisons:
                verdicts.append(
                    f"  {'PASS' if ratio <= goal else 'FAIL'} batch {batch}, {way}, {label}: "
                    f"SPELA / backprop step {ratio:.3f} (goal <= {goal})"
                )
        print(f"  step timing batch {batch} done", flush=True)
    headers = (["batch", "way"]
               + [f"{m} jit={j} ms" for m in METHODS for j in jits]
               + [f"SPELA/bp jit={j}" for j in jits]
               + ["SPELA best / bp best"])
    print()
    print(common.format_table(
        headers, rows,
        title=(f"(1) CNN train step, load_canvas_digits 20x20x1, median ms per call over "
               f"{args.blocks} interleaved blocks of {args.block} calls")))
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
    layers += [keras.layers.GlobalAveragePooling2D(),
               keras.layers.Dense(NUM_CLASSES, activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit_compile)
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
    sequenced = (memory_depth.sequenced_gradient_function(model, jit_compile)
                 if method == "SPELA" else None)

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
    sequenced_peaks = ([peak(lambda: sequenced(x, y)) for _ in range(args.repeats)]
                       if sequenced is not None else [0])
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
        "--image_size", str(args.image_size), "--filters", str(args.filters),
        "--memory_batch", str(args.memory_batch), "--repeats", str(args.repeats),
        "--conv_blocks", str(blocks),
    ]
    return common.run_child(
        __file__, f"{method},{blocks},{jit_compile}", flags,
        f"{method} {blocks} blocks jit_compile={jit_compile}",
    )


def child_main(args):
    method, blocks, jit = args.child.split(",")
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
        rows.append([
            str(depth), mib(3 * s["gradient_bytes"]), mib(3 * b["gradient_bytes"]),
            mib(s["step"]), mib(b["step"]),
            ratio(s["step"], b["step"]),
            mib(s["activations"]), mib(b["activations"]),
            ratio(s["activations"], b["activations"]),
            mib(s["sequenced"]), ratio(s["sequenced"], b["activations"]),
        ])
    print()
    print(common.format_table(
        ["conv blocks", "weights+slots SPELA", "weights+slots bp", "step peak SPELA",
         "step peak bp", "ratio", "activations SPELA", "activations bp", "ratio",
         "SPELA sequenced", "ratio"],
        rows,
        title=(f"(2) MiB, jit_compile={jit_compile}, {args.image_size}x{args.image_size}x1, "
               f"{args.filters} filters per block, batch {args.memory_batch} (block 1's "
               f"feature map = {block_bytes / MIB:.1f} MiB); medians of {args.repeats} calls"),
    ))
    for key, label in (("activations", "activations"), ("step", "step peak")):
        for method in METHODS:
            series = [results[method][d][key] for d in depths]
            growth = (series[-1] - series[0]) / block_bytes
            print(f"  {method} {label} (MiB) by conv blocks {depths}: "
                  f"{', '.join(mib(v) for v in series)}; from {depths[0]} to "
                  f"{depths[-1]} blocks +{growth:.2f} x block 1's feature map")
    deepest = depths[-1]
    s, b = results["SPELA"][deepest], results["backprop"][deepest]
    print(f"  ratio SPELA / backprop at {deepest} conv blocks (jit_compile={jit_compile}): "
          f"activations {ratio(s['activations'], b['activations'])}, step peak "
          f"{ratio(s['step'], b['step'])}; SPELA sequenced / backprop activations "
          f"{ratio(s['sequenced'], b['activations'])}")


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
            print(f"  memory jit_compile={jit} {blocks} conv blocks measured "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        memory_report(args, results, jit)


# ------------------------------------------------- (3) where the time goes
class BlockLocalReference:
    """The reference step of part (3): the backprop CNN's blocks, each trained
    by its own local loss through TensorFlow's own gradient kernels.

    Every block (conv + LeakyReLU + max-pool, or dense + LeakyReLU) takes its
    input as a constant and has a fixed random linear read-out to the classes
    (of its channel means for conv blocks); each block's cross-entropy is
    differentiated by a GradientTape scoped to that block only, so TensorFlow
    computes no input gradients: the cost of layer-local learning when the
    max-pool and filter gradients are TensorFlow's fused MaxPoolGrad and
    Conv2DBackpropFilter. A measuring stick for part (3), not a method of the
    library (which writes its rule in TFLite builtins)."""

    def __init__(self, model, num_classes=NUM_CLASSES, seed=0):
        layers = model.layers
        self.blocks, block = [], []
        for previous, layer in zip([None] + layers[:-1], layers):
            block.append(layer)
            if isinstance(layer, keras.layers.MaxPooling2D) or (
                isinstance(layer, keras.layers.LeakyReLU)
                and isinstance(previous, keras.layers.Dense)
            ):
                self.blocks.append(block)
                block = []
        self.blocks.append(block)  # the softmax head
        rng = np.random.default_rng(seed)
        self.readouts = [
            tf.constant(rng.normal(size=(self._width(b), num_classes)).astype(np.float32))
            for b in self.blocks[:-1]
        ]
        self.optimizer = keras.optimizers.Adam(1e-3)
        self.variables = [v for layer in layers for v in layer.trainable_variables]
        self.optimizer.build(self.variables)
        self.step = tf.function(self._step)

    @staticmethod
    def _width(block):
        """The channels (conv) or units (dense) of a block's output."""
        learned = [layer for layer in block if isinstance(layer, (keras.layers.Conv2D,
                                                                  keras.layers.Dense))]
        return learned[0].filters if hasattr(learned[0], "filters") else learned[0].units

    def _step(self, x, y):
        h, losses, gradients, variables = x, [], [], []
        for index, block in enumerate(self.blocks):
            block_variables = [v for layer in block for v in layer.trainable_variables]
            with tf.GradientTape() as tape:
                out = tf.stop_gradient(h)
                for layer in block:
                    out = layer(out, training=True)
                if index < len(self.readouts):
                    features = out if out.shape.rank == 2 else tf.reduce_mean(out, axis=[1, 2])
                    logits = features @ self.readouts[index]
                else:
                    logits = tf.math.log(out + 1e-7)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            gradients += tape.gradient(loss, block_variables)
            variables += block_variables
            losses.append(loss)
            h = out
        self.optimizer.apply(gradients, variables)
        return tf.add_n(losses)


def kernel_functions(model, x):
    """Part (3)'s timed callables for every SpelaConv2D of `model` on the batch
    `x`, on the layer's real activations: the max-pool with the rule's
    unpooling (`conv_rules.max_unpool`) against the max-pool differentiated
    by TensorFlow (MaxPool, whose oneDNN kernel keeps the window maxima'
    positions, and MaxPoolGrad), and the rule's filter gradient
    (`conv_rules.conv_kernel_gradient`) against Conv2DBackpropFilter."""
    functions, h = {}, tf.constant(x)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if not isinstance(layer, SpelaConv2D):
            h = layer(h)
            continue
        rule = layer.rule
        padded, _, a, p, _ = conv_rules.conv_forward(h, layer.kernel, layer.bias, rule)
        grad_p = tf.constant(rng.normal(size=p.shape).astype(np.float32))
        grad_z = conv_rules.max_unpool(grad_p, a, p, rule)
        kernel_shape = list(layer.kernel.shape)
        name = layer.name

        def rule_pooling(g=grad_p, a=a, r=rule):
            p = tf.nn.max_pool2d(a, r.pool_size, r.pool_size, padding="VALID")
            return conv_rules.max_unpool(g, a, p, r)

        def tensorflow_pooling(g=grad_p, a=a, r=rule):
            with tf.GradientTape() as tape:  # scoped to the max-pool alone
                tape.watch(a)
                p = tf.nn.max_pool2d(a, r.pool_size, r.pool_size, padding="VALID")
            return tape.gradient(p, a, output_gradients=g)

        functions.update({
            (name, "max-pool and its gradient", "builtins"): tf.function(rule_pooling),
            (name, "max-pool and its gradient", "tensorflow"): tf.function(tensorflow_pooling),
            (name, "filter gradient", "builtins"): tf.function(
                lambda h=padded, g=grad_z, r=rule: conv_rules.conv_kernel_gradient(h, g, r)),
            (name, "filter gradient", "tensorflow"): tf.function(
                lambda h=padded, g=grad_z, s=kernel_shape, r=rule:
                    tf.raw_ops.Conv2DBackpropFilter(
                        input=h, filter_sizes=s, out_backprop=g,
                        strides=[1, *r.strides, 1], padding="VALID")),
        })
        h = p
    return functions


def kernel_part(args):
    """Part (3): at the largest timing batch, the SPELA and backprop steps, the
    block-local reference step and the rule's two full-resolution pieces
    against TensorFlow's kernels, timed side by side; then the estimate of
    the SPELA step with TensorFlow's kernels in those two places."""
    batch = max(args.batches)
    (x_train, y_train), _ = keras_spela.datasets.load_canvas_digits()
    x, y = x_train[:batch], y_train[:batch]
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    spela, backprop = cnn_accuracy.spela_cnn(), cnn_accuracy.backprop_cnn()
    steps = step_functions({("SPELA", False): spela, ("backprop", False): backprop}, x, y)
    reference = BlockLocalReference(cnn_accuracy.backprop_cnn())
    x_tf, y_tf = tf.constant(x), tf.constant(y)
    functions = {
        "SPELA step": steps[("SPELA", False, "train_function")],
        "backprop step": steps[("backprop", False, "train_function")],
        "block-local reference step": lambda: float(reference.step(x_tf, y_tf)),
    }
    for key, function in kernel_functions(spela, x).items():
        functions[key] = lambda f=function: f().numpy()
    with capture_native_stderr():
        seconds = time_in_blocks(functions, args.blocks, args.block)
    ms = {key: 1000 * value for key, value in seconds.items()}
    rows = []
    layers = sorted({key[0] for key in ms if isinstance(key, tuple)},
                    key=lambda n: [layer.name for layer in spela.layers].index(n))
    for name in layers:
        for piece in ("max-pool and its gradient", "filter gradient"):
            own, theirs = ms[(name, piece, "builtins")], ms[(name, piece, "tensorflow")]
            rows.append([name, piece, f"{own:.2f}", f"{theirs:.2f}", f"{own / theirs:.2f}"])
    print()
    print(common.format_table(
        ["layer", "piece", "rule (TFLite builtins) ms", "TensorFlow kernel ms", "ratio"], rows,
        title=(f"(3) Where the time goes, batch {batch}, jit_compile=False, median ms per call "
               f"over {args.blocks} interleaved blocks of {args.block} calls (pieces timed "
               "alone; TensorFlow's: MaxPool + MaxPoolGrad, Conv2DBackpropFilter)")))
    step, bp, ref = ms["SPELA step"], ms["backprop step"], ms["block-local reference step"]
    own = sum(v for k, v in ms.items() if isinstance(k, tuple) and k[2] == "builtins")
    theirs = sum(v for k, v in ms.items() if isinstance(k, tuple) and k[2] == "tensorflow")
    estimate = step - own + theirs
    goal = GOAL_RATIO.get(batch)
    goal_text = f" (goal {goal})" if goal else ""
    print(f"  steps: SPELA {step:.2f} ms, backprop {bp:.2f} ms, ratio {step / bp:.3f}{goal_text}")
    print(f"  block-local reference step (each block its own loss, TensorFlow's gradient "
          f"kernels, a tape per block): {ref:.2f} ms = {ref / bp:.3f} x backprop")
    print(f"  estimate, SPELA with TensorFlow's kernels in the two pieces: {step:.2f} - "
          f"{own:.2f} + {theirs:.2f} = {estimate:.2f} ms = {estimate / bp:.3f} x backprop "
          "(pieces timed alone overlap in a step: an estimate, not a floor)")


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
        print(f"settings: parts {', '.join(args.parts)}; timing batches {args.batches}, "
              f"{args.blocks} blocks of {args.block} calls; memory conv blocks "
              f"{args.conv_blocks}, {args.image_size}x{args.image_size}x1, {args.filters} "
              f"filters, batch {args.memory_batch}, {args.repeats} repeats; jit_compile "
              f"{list(jits)}{' (QUICK MODE)' if args.quick else ''}")
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
            print(f"  NOTE: load above {LOAD_WARNING} on {os.cpu_count()} cores: other "
                  "processes shared the CPU, the step times are noisy (memory is not affected)")


if __name__ == "__main__":
    main()
