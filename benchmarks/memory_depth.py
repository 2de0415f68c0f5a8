"""Peak memory of one training step against depth: SpelaModel vs Keras backprop.

What is measured (CPU; synthetic data: uniform [0, 1) inputs of 784 features,
random labels of 10 classes): networks of 2, 4, 8 and 16 hidden layers of
1024 units at batch 512. SPELA: SpelaModel([Input(784)] + depth x
SpelaDense(1024)) at the library defaults (softmax_cosine, leaky ReLU 0.01);
backprop: depth x Dense(1024) (leaky ReLU 0.01) + a Dense(10) softmax head
(common.backprop_mlp). Both Adam(1e-3), the same `jit_compile` setting
(False and True are both reported).

Every (method, depth, jit_compile) runs in a FRESH subprocess, which builds
the model, runs two training steps (tracing, optimizer slots), and then
measures with TensorFlow's own CPU allocator statistics
(tf.config.experimental.get_memory_info("CPU:0"): bytes of live tensors,
reset_memory_stats before each measured call). TensorFlow's default CPU
allocator keeps no statistics (oneDNN's, its default on CPUs with AVX-512
VNNI or AMX, keeps them for allocations of 256 KB and more), so every
measuring process runs with TensorFlow's BFC allocator
(TF_CPU_ALLOCATOR_USE_BFC=true, `enable_allocator_statistics`), which counts
every allocation by the size of the block it occupies:

  persistent   live bytes before a step: weights + Adam slots (the batch,
               made from numpy arrays, is not counted by these statistics)
  step peak    peak - persistent during `train_on_batch`: everything the
               step allocates (activations, temporaries, and the weight
               gradients of every layer: both methods compute all gradients
               before the one optimizer update, so this grows with depth
               for both, by 4 bytes per parameter)
  activations  peak - persistent during the gradient computation alone
               (SPELA: compute_local_errors + compute_local_gradients;
               backprop: GradientTape) with each weight gradient reduced to
               a scalar as soon as it exists, so that no depth's worth of
               gradients is held: what remains are the activations kept for
               the gradients and the temporaries of the layer at work
  sequenced    SPELA only: the same gradient computation written layer by
               layer here (SpelaDense.local_error and parameter_gradients)
               with layer k+1's forward pass made to wait
               (tf.control_dependencies) for layer k's reduced gradients.
               The library's step orders its ops so with
               `compile(ordered_steps=True)` (`compute_local_errors(
               ordered=True)`), which both SPELA columns here measure (the
               default step is unordered, for speed): without
               it, TensorFlow's executor runs the cheap forward chain ahead
               and keeps each layer's input alive until its gradient is
               taken

Resident memory (VmHWM) cannot isolate one step here: TensorFlow keeps freed
blocks resident (checked: deleting a 64 MiB tensor leaves the resident size
unchanged, even with glibc told to unmap every block >= 64 KiB), so a warm
step's peak resident size barely moves; the allocator statistics see each
tensor's allocation and release.

The step peak and activation values are medians over `--repeats` calls (the
TensorFlow executor's op order, hence the peak, varies from call to call
without XLA). Printed: both series, the ratio SPELA / backprop at the
deepest network, and the slope per added layer in units of one layer's
activation (batch x width float32 = 2 MiB at 512 x 1024). Goal: SPELA's
activations flat in depth (slope < 0.25 of a layer), backprop's linear
(slope >= 1 layer: every layer's input is kept for the backward pass).

Run (from the repository root, with the project's virtualenv):

    python benchmarks/memory_depth.py            # depths 2, 4, 8, 16, width 1024, batch 512
    python benchmarks/memory_depth.py --quick    # depths 2, 4, width 256, batch 64

Output: benchmarks/results/memory_depth[_quick].txt
"""

import argparse
import json
import os
import sys
import time


NUM_CLASSES = 10
METHODS = ("SPELA", "backprop")
MIB = 2.0**20
# Goals: SPELA's activation slope below a quarter of one layer's activation per
# added layer; backprop's at least one layer's.
FLAT_SLOPE = 0.25
LINEAR_SLOPE = 1.0


def positive_int_list(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="depths 2,4, width 256, batch 64, 3 repeats"
    )
    parser.add_argument(
        "--depths",
        type=positive_int_list,
        default=None,
        help="hidden layer counts (default 2,4,8,16)",
    )
    parser.add_argument("--width", type=int, default=None, help="units per layer (default 1024)")
    parser.add_argument("--batch_size", type=int, default=None, help="default 512")
    parser.add_argument("--input_dim", type=int, default=784)
    parser.add_argument(
        "--repeats", type=int, default=None, help="measured calls per quantity (default 5, quick 3)"
    )
    parser.add_argument("--jit", default="both", choices=("both", "false", "true"))
    parser.add_argument("--no_save", action="store_true", help="write no results file")
    # Internal: measure one configuration and print it as one JSON line.
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.depths is None:
        args.depths = [2, 4] if args.quick else [2, 4, 8, 16]
    if args.width is None:
        args.width = 256 if args.quick else 1024
    if args.batch_size is None:
        args.batch_size = 64 if args.quick else 512
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    for name in ("width", "batch_size", "input_dim", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


if __name__ == "__main__":
    parse_args()  # a bad argument ends here, before TensorFlow is imported

from quiet_common import common  # TensorFlow, quietly

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_spela import SpelaDense, SpelaModel  # noqa: E402
from keras_spela.core import rules  # noqa: E402


# ------------------------------------------------------------- one configuration
def build(method, depth, width, input_dim, jit_compile):
    """The compiled SPELA or backprop network of `depth` hidden layers."""
    if method == "SPELA":
        model = SpelaModel(
            [keras.Input((input_dim,))] + [SpelaDense(width) for _ in range(depth)],
            num_classes=NUM_CLASSES,
        )
        model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit_compile, ordered_steps=True)
        return model
    return common.backprop_mlp(
        input_dim, [width] * depth, NUM_CLASSES, keras.optimizers.Adam(1e-3), jit_compile
    )


def gradient_function(model, jit_compile):
    """A tf.function (x, y) -> one scalar per weight gradient: the gradient
    computation without holding the gradients (see the module docstring)."""
    if isinstance(model, SpelaModel):

        def gradients(x, y):  # ordered, as compile(ordered_steps=True)
            errors, _ = model.compute_local_errors(x, y, ordered=True)
            return model.compute_local_gradients(errors)[0]
    else:
        loss_fn = keras.losses.SparseCategoricalCrossentropy()

        def gradients(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            return tape.gradient(loss, model.trainable_variables)

    return tf.function(
        lambda x, y: [tf.reduce_sum(g) for g in gradients(x, y)], jit_compile=jit_compile
    )


def sequenced_gradient_function(model, jit_compile):
    """Like `gradient_function` for a SpelaModel of SpelaDense layers, each
    layer's forward pass waiting for the previous layer's gradients."""

    def reduced_gradients(x, y):
        targets = rules.one_hot(y, model.num_classes)
        h, reduced = x, []
        for layer in model.exit_layers:
            error = layer.local_error(tf.cast(h, layer.compute_dtype), targets)
            sums = [tf.reduce_sum(g) for g in layer.parameter_gradients(error)]
            reduced += sums
            with tf.control_dependencies(sums):
                h = tf.identity(tf.stop_gradient(error.outputs))
        return reduced

    return tf.function(reduced_gradients, jit_compile=jit_compile)


def enable_allocator_statistics():
    """Gives this process TensorFlow's BFC CPU allocator, whose statistics
    `live_bytes` and `allocator_peak` read (TensorFlow's default CPU allocator
    keeps none). Call it before TensorFlow runs its first op: the allocator
    is made then, from TF_CPU_ALLOCATOR_USE_BFC.

    Raises:
        RuntimeError: TensorFlow already made an allocator without statistics.
    """
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    try:
        live_bytes()
    except ValueError as error:
        raise RuntimeError(
            f"{error}: enable_allocator_statistics() must run before TensorFlow's first op"
        ) from None


def live_bytes():
    return tf.config.experimental.get_memory_info("CPU:0")["current"]


def allocator_peak(call):
    """Peak live bytes above those before `call()`, by the allocator stats."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = live_bytes()
    result = call()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    del result
    return peak - before


def measure(method, depth, width, input_dim, batch_size, jit_compile, repeats):
    """The numbers of one configuration (a dict of bytes), in this process."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch_size, input_dim), np.float32))
    y = tf.constant(rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32))
    model = build(method, depth, width, input_dim, jit_compile)
    gradients = gradient_function(model, jit_compile)
    sequenced = (
        sequenced_gradient_function(model, jit_compile) if isinstance(model, SpelaModel) else None
    )

    def step():
        return model.train_on_batch(x, y)

    for _ in range(2):  # trace, compile, create the optimizer slots
        step()
        gradients(x, y)
        if sequenced is not None:
            sequenced(x, y)
    persistent = live_bytes()
    step_peaks = [allocator_peak(step) for _ in range(repeats)]
    activation_peaks = [allocator_peak(lambda: gradients(x, y)) for _ in range(repeats)]
    sequenced_peaks = (
        [allocator_peak(lambda: sequenced(x, y)) for _ in range(repeats)]
        if sequenced is not None
        else [0]
    )
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return {
        "persistent": persistent,
        "step": common.median(step_peaks),
        "activations": common.median(activation_peaks),
        "activations_range": [min(activation_peaks), max(activation_peaks)],
        "sequenced": common.median(sequenced_peaks),
        "gradient_bytes": 4 * params,
        "params": params,
    }


def run_child(args, method, depth, jit_compile):
    """Measures one configuration in a fresh Python process."""
    flags = [
        "--width",
        str(args.width),
        "--batch_size",
        str(args.batch_size),
        "--input_dim",
        str(args.input_dim),
        "--repeats",
        str(args.repeats),
    ]
    return common.run_child(
        __file__,
        f"{method},{depth},{jit_compile}",
        flags,
        f"{method} depth {depth} jit_compile={jit_compile}",
    )


def child_main(args):
    method, depth, jit = args.child.split(",")
    enable_allocator_statistics()
    numbers = measure(
        method,
        int(depth),
        args.width,
        args.input_dim,
        args.batch_size,
        jit == "True",
        args.repeats,
    )
    print(json.dumps(numbers))


# --------------------------------------------------------------------- report
def slope(depths, values):
    """Least-squares bytes per added layer."""
    return float(np.polyfit(np.asarray(depths, float), np.asarray(values, float), 1)[0])


def mib(value):
    return f"{value / MIB:.1f}"


def report(args, results, jit_compile):
    depths = args.depths
    layer_bytes = 4 * args.batch_size * args.width
    rows = []
    for depth in depths:
        s, b = results["SPELA"][depth], results["backprop"][depth]
        rows.append(
            [
                str(depth),
                mib(s["persistent"]),
                mib(b["persistent"]),
                mib(s["gradient_bytes"]),
                mib(s["step"]),
                mib(b["step"]),
                f"{s['step'] / b['step']:.2f}",
                mib(s["activations"]),
                mib(b["activations"]),
                f"{s['activations'] / b['activations']:.2f}",
                mib(s["sequenced"]),
                f"{s['sequenced'] / b['activations']:.2f}",
            ]
        )
    print()
    print(
        common.format_table(
            [
                "hidden layers",
                "persistent SPELA",
                "persistent bp",
                "SPELA grads",
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
                f"MiB, jit_compile={jit_compile}, width {args.width}, batch {args.batch_size} "
                f"(one layer's activation = {layer_bytes / MIB:.1f} MiB); medians of "
                f"{args.repeats} calls"
            ),
        )
    )
    deepest = depths[-1]
    activation_slopes, step_slopes = {}, {}
    for method in METHODS:
        series = [results[method][d]["activations"] for d in depths]
        steps = [results[method][d]["step"] for d in depths]
        activation_slopes[method] = slope(depths, series) / layer_bytes if len(depths) > 1 else 0.0
        step_slopes[method] = slope(depths, steps) / layer_bytes if len(depths) > 1 else 0.0
        ranges = ", ".join(
            f"{mib(results[method][d]['activations_range'][0])}-"
            f"{mib(results[method][d]['activations_range'][1])}"
            for d in depths
        )
        print(
            f"  {method} activations (MiB) by depth {depths}: "
            f"{', '.join(mib(v) for v in series)} (min-max over calls: {ranges}); "
            f"slope {activation_slopes[method]:.2f} layers per added layer; step peak slope "
            f"{step_slopes[method]:.2f} layers per added layer"
        )
    sequenced = [results["SPELA"][d]["sequenced"] for d in depths]
    sequenced_slope = slope(depths, sequenced) / layer_bytes if len(depths) > 1 else 0.0
    print(
        f"  SPELA sequenced (MiB) by depth {depths}: {', '.join(mib(v) for v in sequenced)}; "
        f"slope {sequenced_slope:.2f} layers per added layer"
    )
    ratio = results["SPELA"][deepest]["activations"] / results["backprop"][deepest]["activations"]
    step_ratio = results["SPELA"][deepest]["step"] / results["backprop"][deepest]["step"]
    sequenced_ratio = sequenced[-1] / results["backprop"][deepest]["activations"]
    print(
        f"  ratio SPELA / backprop at {deepest} hidden layers: activations {ratio:.2f}, "
        f"step peak {step_ratio:.2f}; SPELA sequenced / backprop activations "
        f"{sequenced_ratio:.2f}"
    )
    verdicts = [
        f"  {'PASS' if activation_slopes['SPELA'] < FLAT_SLOPE else 'FAIL'} "
        f"jit_compile={jit_compile}: SPELA activations flat in depth: slope "
        f"{activation_slopes['SPELA']:.2f} layers per added layer (goal < {FLAT_SLOPE})",
        f"  {'PASS' if activation_slopes['backprop'] >= LINEAR_SLOPE else 'FAIL'} "
        f"jit_compile={jit_compile}: backprop activations linear in depth: slope "
        f"{activation_slopes['backprop']:.2f} layers per added layer (expected >= {LINEAR_SLOPE})",
        f"  ({'PASS' if sequenced_slope < FLAT_SLOPE else 'FAIL'} jit_compile={jit_compile}: "
        f"SPELA sequenced (not the library's step) flat: slope {sequenced_slope:.2f})",
    ]
    return verdicts


def main():
    args = parse_args()
    if args.child:
        child_main(args)
        return
    txt = None if args.no_save else common.results_path("memory_depth.txt", args.quick)
    jits = {"both": (False, True), "false": (False,), "true": (True,)}[args.jit]
    with common.Tee(txt):
        print(__doc__.split("\n\n")[0])
        print(common.environment_line())
        print(
            f"settings: depths {args.depths} x {args.width} units, input {args.input_dim}, "
            f"batch {args.batch_size}, Adam 1e-3, {args.repeats} measured calls each, a fresh "
            f"process per (method, depth, jit_compile){' (QUICK MODE)' if args.quick else ''}"
        )
        start = time.perf_counter()
        verdicts = []
        for jit in jits:
            results = {method: {} for method in METHODS}
            for depth in args.depths:
                for method in METHODS:
                    try:
                        results[method][depth] = run_child(args, method, depth, jit)
                    except RuntimeError as error:
                        sys.exit(f"memory_depth.py: measurement failed: {error}")
                print(
                    f"  measured jit_compile={jit} depth {depth} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
            verdicts += report(args, results, jit)
        print()
        print("Goals (activations: the gradient computation with no gradients held):")
        print("\n".join(verdicts))
        if (args.depths, args.width, args.batch_size) != ([2, 4, 8, 16], 1024, 512):
            print(
                "  NOTE: reduced setting; the goals are stated for depths 2, 4, 8, 16 of "
                "1024 units at batch 512 (small nets are dominated by the input layer's "
                "gradient and fixed temporaries)."
            )


if __name__ == "__main__":
    main()
