"""Training speed on CPU: SpelaModel.fit vs Keras backprop fit, same widths.

What is measured (synthetic data: uniform [0, 1) inputs, random labels of 10
classes; CPU only):

1. Seconds per epoch of `fit` for 784-1024-1024-1024-34: SpelaModel with
   SpelaDense layers (library defaults: softmax_cosine, leaky ReLU 0.01) vs a
   Keras backprop MLP with Dense layers of the same widths (leaky ReLU 0.01)
   plus a Dense(10) softmax head (sparse categorical cross-entropy, accuracy
   metric). Both: Adam(1e-3), batch 128 (default), the same `jit_compile`
   setting (False and True are both reported), the same tf.data pipeline
   (no shuffle), 10,240 examples. One warm-up epoch each (excluded), then
   SPELA and backprop epochs ALTERNATE; the median over >= 3 epochs each and
   the ratio SPELA/backprop (goal <= 0.9 with Adam, whose update costs the
   same for both; <= 0.8 with SGD) are printed. (With jit_compile=True, Keras compiles the whole
   backprop step with XLA; SpelaModel compiles its local rules and its
   optimizer update as one XLA function and keeps the batch checks
   outside XLA, which would drop them.)
   Then the same epoch comparison with SGD(1e-2) for both, whose update is
   much cheaper than Adam's.
2. Steps per second at batch 1 and batch 256, a fixed number of steps per
   `fit` call (one warm-up call each, excluded; calls alternate; median).
3. Multiply-accumulates per training step, counted analytically from the
   matrix products each step does (elementwise work and the optimizer
   update, equal for both, listed apart).
4. A breakdown of one batch-128 step (medians of interleaved calls of
   tf.functions, jit_compile=False): forward pass only, the SPELA local rule
   (forward + closed-form gradients) or backprop's GradientTape gradients,
   the Adam update alone, and the full `train_function` step; plus the two
   gradient computations as XLA-compiled tf.functions (what XLA could buy).
5. The estimate: the epoch ratio a step would have if it were only its
   matrix products and its optimizer update (from 4), next to the measured
   ratios.
6. The same breakdown at batch 1 and its estimate: the speed-up at batch 1
   if a step were only its matrix products and its Adam update (goal of the
   measured one: >= 1.25x).

Run (from the repository root, with the project's virtualenv):

    python benchmarks/train_speed.py            # 10,240 examples, 5 epochs each
    python benchmarks/train_speed.py --quick    # 2,048 examples, 3 epochs each

Output: benchmarks/results/train_speed[_quick].txt
"""

import argparse


NUM_CLASSES = 10
# Keras' Adam update is memory-bound and the same for both methods (the estimate
# printed at the end): its goal is 0.9, SGD's 0.8.
ADAM_GOAL = 0.9
SGD_GOAL = 0.8
# Steps per second at batch 1, SPELA / backprop (issue 11).
BATCH1_GOAL = 1.25


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--widths", default="784,1024,1024,1024,34", help="input dim then layer widths"
    )
    parser.add_argument("--examples", type=int, default=None, help="default 10240")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument(
        "--epochs", type=int, default=None, help="timed epochs per model (default 5, quick 3)"
    )
    parser.add_argument("--jit", default="both", choices=("both", "false", "true"))
    parser.add_argument(
        "--step_repeats",
        type=int,
        default=None,
        help="timed fit calls per model and batch size (default 5, quick 3)",
    )
    parser.add_argument("--steps_b1", type=int, default=300)
    parser.add_argument("--steps_b256", type=int, default=20)
    parser.add_argument("--profile_repeats", type=int, default=None, help="default 30, quick 10")
    parser.add_argument(
        "--no_sgd",
        dest="also_sgd",
        action="store_false",
        help="skip the extra SGD(1e-2) epoch comparison",
    )
    parser.add_argument("--no_save", action="store_true")
    args = parser.parse_args(argv)
    text = args.widths
    try:
        args.widths = [int(w) for w in text.split(",")]
    except ValueError:
        args.widths = []
    if len(args.widths) < 3 or min(args.widths) < 1:
        parser.error(
            f"--widths must be an input dim and at least two layer widths, "
            f"integers >= 1 separated by commas, got {text!r}"
        )
    if args.examples is None:
        args.examples = 2048 if args.quick else 10240
    if args.epochs is None:
        args.epochs = 3 if args.quick else 5
    if args.step_repeats is None:
        args.step_repeats = 3 if args.quick else 5
    if args.profile_repeats is None:
        args.profile_repeats = 10 if args.quick else 30
    if args.quick:
        args.steps_b1, args.steps_b256 = min(args.steps_b1, 100), min(args.steps_b256, 8)
    for name in (
        "examples",
        "batch_size",
        "epochs",
        "step_repeats",
        "steps_b1",
        "steps_b256",
        "profile_repeats",
    ):
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


def build_spela(widths, jit_compile, optimizer=None):
    layers = [keras.Input((widths[0],))] + [SpelaDense(w) for w in widths[1:]]
    model = SpelaModel(layers, num_classes=NUM_CLASSES)
    model.compile(optimizer or keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    return model


def build_backprop(widths, jit_compile, optimizer=None):
    return common.backprop_mlp(
        widths[0],
        widths[1:],
        NUM_CLASSES,
        optimizer or keras.optimizers.Adam(1e-3),
        jit_compile,
    )


def dataset(x, y, batch_size):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)


def fit_seconds(model, ds, repeats, warmup=True):
    """Times `repeats` one-epoch fit calls (per call, epoch body only)."""
    recorder = common.EpochTimer()
    if warmup:
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
    for _ in range(repeats):
        model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=[recorder])
    return recorder.epoch_seconds


def alternate(models, ds, repeats):
    """Warm-up epoch per model, then one epoch of each in turn, `repeats` times."""
    for model in models.values():
        fit_seconds(model, ds, 0, warmup=True)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            times[name] += fit_seconds(model, ds, 1, warmup=False)
    return times


def macs_per_step(widths, batch):
    """Analytic MACs of the matrix products of one training step."""
    c = NUM_CLASSES
    spela = {"forward h W": 0, "weight grad h^T dz": 0, "class-vector products": 0}
    for d_in, d in zip(widths[:-1], widths[1:]):
        spela["forward h W"] += batch * d_in * d
        spela["weight grad h^T dz"] += batch * d_in * d
        # scores u V^T, target vectors onehot V, softmax_cosine's error V
        spela["class-vector products"] += 3 * batch * c * d
    bp_widths = list(widths) + [c]
    backprop = {"forward h W": 0, "weight grad h^T dz": 0, "input grad dz W^T": 0}
    for k, (d_in, d) in enumerate(zip(bp_widths[:-1], bp_widths[1:])):
        backprop["forward h W"] += batch * d_in * d
        backprop["weight grad h^T dz"] += batch * d_in * d
        if k > 0:
            backprop["input grad dz W^T"] += batch * d_in * d
    params_spela = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    params_bp = sum((a + 1) * b for a, b in zip(bp_widths[:-1], bp_widths[1:]))
    return spela, backprop, params_spela, params_bp


def profile(widths, batch, repeats):
    """Medians (ms) of the parts of one step, interleaved (jit_compile=False;
    the two gradient computations also under XLA, as plain tf.functions)."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.random((batch, widths[0]), np.float32))
    y = tf.constant(rng.integers(0, NUM_CLASSES, batch).astype(np.int32))
    keras.utils.set_random_seed(0)
    spela = build_spela(widths, False)
    backprop = build_backprop(widths, False)
    jit = False

    spela_forward = tf.function(lambda: spela.exit_scores(x), jit_compile=jit)

    def spela_gradients():
        return spela.compute_local_gradients(spela.compute_local_errors(x, y)[0])[0]

    spela_rule = tf.function(spela_gradients, jit_compile=jit)
    spela_grads = [tf.zeros_like(v) for v in spela.trainable_variables]
    spela.optimizer.build(spela.trainable_variables)
    spela_adam = tf.function(
        lambda: spela.optimizer.apply(spela_grads, spela.trainable_variables), jit_compile=jit
    )

    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def bp_gradients():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, backprop(x, training=True))
        return tape.gradient(loss, backprop.trainable_variables)

    bp_forward = tf.function(lambda: backprop(x, training=False), jit_compile=jit)
    bp_grad = tf.function(bp_gradients, jit_compile=jit)
    kernels = [layer.kernel for layer in spela.exit_layers]

    def spela_matmuls():
        # The matrix products of the local rule alone: h W and h^T dz per layer.
        h, grads = x, []
        for kernel in kernels:
            z = tf.matmul(h, kernel)
            grads.append(tf.matmul(h, z[:, : kernel.shape[1]], transpose_a=True))
            h = z
        return grads

    bp_kernels = [layer.kernel for layer in backprop.layers if hasattr(layer, "kernel")]

    def bp_matmuls():
        # The matrix products of backprop alone: forward, weight and input grads.
        hs, h = [x], x
        for kernel in bp_kernels:
            h = tf.matmul(h, kernel)
            hs.append(h)
        dz, grads = hs[-1], []
        for k in range(len(bp_kernels) - 1, -1, -1):
            grads.append(tf.matmul(hs[k], dz, transpose_a=True))
            if k > 0:
                dz = tf.matmul(dz, bp_kernels[k], transpose_b=True)
        return grads

    spela_rule_xla = tf.function(spela_gradients, jit_compile=True)
    bp_grad_xla = tf.function(bp_gradients, jit_compile=True)
    bp_grads = [tf.zeros_like(v) for v in backprop.trainable_variables]
    backprop.optimizer.build(backprop.trainable_variables)
    bp_adam = tf.function(
        lambda: backprop.optimizer.apply(bp_grads, backprop.trainable_variables), jit_compile=jit
    )

    one_batch = dataset(x, y, batch)
    spela.make_train_function()
    backprop.make_train_function()
    spela_step, bp_step = spela.train_function, backprop.train_function

    def full(step):
        def run():
            logs = step(iter(one_batch))
            float(logs["loss"])  # wait for the result

        return run

    def sync(fn):
        def run():
            out = fn()
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)

        return run

    functions = {
        "SPELA forward (exit scores)": sync(spela_forward),
        "SPELA local rule (fwd + closed-form grads)": sync(spela_rule),
        "SPELA Adam update alone": sync(spela_adam),
        "SPELA full train step": full(spela_step),
        "backprop forward": sync(bp_forward),
        "backprop GradientTape grads (fwd + bwd)": sync(bp_grad),
        "backprop Adam update alone": sync(bp_adam),
        "backprop full train step": full(bp_step),
        "SPELA matrix products only (h W, h^T dz)": sync(tf.function(spela_matmuls)),
        "backprop matrix products only (fwd, weight, input grads)": sync(tf.function(bp_matmuls)),
        "SPELA local rule under XLA (tf.function jit_compile=True)": sync(spela_rule_xla),
        "backprop GradientTape grads under XLA": sync(bp_grad_xla),
    }
    for fn in functions.values():  # trace / compile
        fn()
        fn()
    times = common.interleaved(functions, repeats)
    return {name: 1000 * common.median(t) for name, t in times.items()}


def breakdown(widths, batch, repeats, digits):
    """Profiles one step's parts at `batch` (`profile`) and prints them as a
    table (ms with `digits` decimals); returns the parts."""
    keras.backend.clear_session()
    parts = profile(widths, batch, repeats)
    print()
    print(
        common.format_table(
            ["part of one step", "ms (median)"],
            [[k, f"{v:.{digits}f}"] for k, v in parts.items()],
            title=(
                f"Step breakdown, batch {batch}, jit_compile=False, "
                f"median of {repeats} interleaved calls"
            ),
        )
    )
    return parts


def print_estimate(parts, epoch_rows):
    """The ratio a step could reach if it were only its matrix products and
    its optimizer update (both measured in `profile`), next to the measured
    epoch ratios: what the rest of each step (elementwise work, checks,
    metrics) costs."""
    matmuls_s = parts["SPELA matrix products only (h W, h^T dz)"]
    matmuls_b = parts["backprop matrix products only (fwd, weight, input grads)"]
    adam_s, adam_b = parts["SPELA Adam update alone"], parts["backprop Adam update alone"]
    measured = {row[0]: row[3] for row in epoch_rows}
    print()
    print("Estimate: the epoch ratio if a step were only its matrix products and its optimizer")
    print("update (parts timed alone, which overlap in a full step: an estimate, not a floor)")
    print(
        f"  Adam: (SPELA matrix products {matmuls_s:.2f} + Adam {adam_s:.2f} ms) / (backprop "
        f"{matmuls_b:.2f} + {adam_b:.2f} ms) = {(matmuls_s + adam_s) / (matmuls_b + adam_b):.3f}"
        f"; measured (jit_compile=False): {measured.get('jit_compile=False', 'n/a')}"
    )
    print(
        f"  SGD (its update is a few elementwise passes): matrix products alone "
        f"{matmuls_s:.2f} / {matmuls_b:.2f} ms = {matmuls_s / matmuls_b:.3f}; measured "
        f"(jit_compile=False): {measured.get('jit_compile=False, SGD', 'n/a')}"
    )
    print(
        "  What a measured ratio has above its estimate is the rest of the steps: SPELA's "
        "elementwise passes (norms, scores, the loss gradient, act', the acceptance bounds) "
        "against backprop's fused kernels (BiasAdd, LeakyReluGrad, BiasAddGrad)."
    )


def print_batch1_estimate(parts, step_rows):
    """The batch-1 speed-up a step could reach if it were only its matrix
    products and its Adam update (from `profile` at batch 1), next to the
    measured one: at batch 1 the update, the same for both methods, is most
    of either step."""
    matmuls_s = parts["SPELA matrix products only (h W, h^T dz)"]
    matmuls_b = parts["backprop matrix products only (fwd, weight, input grads)"]
    adam_s, adam_b = parts["SPELA Adam update alone"], parts["backprop Adam update alone"]
    step_s = parts["SPELA full train step"]
    measured = {row[0]: row[5] for row in step_rows if row[1] == "1"}
    print()
    print(
        "Estimate at batch 1: the speed-up if a step were only its matrix products and its "
        "Adam update"
    )
    print(
        f"  (backprop matrix products {matmuls_b:.3f} + Adam {adam_b:.3f} ms) / (SPELA "
        f"{matmuls_s:.3f} + {adam_s:.3f} ms) = "
        f"{(matmuls_b + adam_b) / (matmuls_s + adam_s):.2f}x; measured (jit_compile=False): "
        f"{measured.get('jit_compile=False', 'n/a')}x (goal >= {BATCH1_GOAL}x)"
    )
    step_b = parts["backprop full train step"]
    print(
        f"  SPELA's Adam update alone is {adam_s:.3f} of its {step_s:.3f} ms step "
        f"({100 * adam_s / step_s:.0f} %): Keras' Adam reads and writes every parameter "
        "and its two slots each step, whatever the batch"
    )
    print(
        f"  a SPELA step that were only its Adam update would be {step_b / adam_s:.2f}x "
        f"backprop's speed (backprop's full step {step_b:.3f} ms / {adam_s:.3f} ms); "
        f"{BATCH1_GOAL}x leaves {step_b / BATCH1_GOAL - adam_s:.3f} ms for everything else, "
        f"where SPELA's matrix products alone take {matmuls_s:.3f} ms"
    )


def main():
    args = parse_args()
    txt = None if args.no_save else common.results_path("train_speed.txt", args.quick)
    widths = args.widths
    with common.Tee(txt):
        print(__doc__.split("\n\n")[0])
        print(common.environment_line())
        print(
            f"tf intra-op threads: {tf.config.threading.get_intra_op_parallelism_threads()} "
            f"(0 = all cores); visible devices: {[d.device_type for d in tf.config.list_physical_devices()]}"
        )
        net = "-".join(map(str, widths))
        print(
            f"settings: net {net} (backprop: + Dense {NUM_CLASSES} head), {args.examples} "
            f"synthetic examples, batch {args.batch_size}, Adam 1e-3, {args.epochs} timed "
            f"epochs each (alternating){' (QUICK MODE)' if args.quick else ''}"
        )
        rng = np.random.default_rng(0)
        x = rng.random((args.examples, widths[0]), np.float32)
        y = rng.integers(0, NUM_CLASSES, args.examples).astype(np.int32)
        jits = {"both": (False, True), "false": (False,), "true": (True,)}[args.jit]

        epoch_rows, step_rows, verdicts = [], [], []
        for jit in jits:
            keras.backend.clear_session()
            keras.utils.set_random_seed(0)
            try:
                models = {
                    "SPELA": build_spela(widths, jit),
                    "backprop": build_backprop(widths, jit),
                }
            except ValueError as error:
                message = f"jit_compile={jit}: not measured: SpelaModel.compile refuses it: {error}"
                verdicts.append(f"  SKIP {message}")
                print(f"  {message}", flush=True)
                continue
            times = alternate(models, dataset(x, y, args.batch_size), args.epochs)
            spela_s, bp_s = common.median(times["SPELA"]), common.median(times["backprop"])
            ratio = spela_s / bp_s
            steps = args.examples // args.batch_size
            epoch_rows.append(
                [
                    f"jit_compile={jit}",
                    f"{spela_s:.3f}",
                    f"{bp_s:.3f}",
                    f"{ratio:.3f}",
                    " ".join(f"{t:.2f}" for t in times["SPELA"]),
                    " ".join(f"{t:.2f}" for t in times["backprop"]),
                    f"{1000 * spela_s / steps:.1f} / {1000 * bp_s / steps:.1f}",
                ]
            )
            verdicts.append(
                f"  {'PASS' if ratio <= ADAM_GOAL else 'FAIL'} SPELA/backprop epoch time, Adam "
                f"(jit_compile={jit}): {ratio:.3f} (goal <= {ADAM_GOAL})"
            )
            print(
                f"  epoch timing jit_compile={jit}: SPELA {spela_s:.3f} s, backprop "
                f"{bp_s:.3f} s, ratio {ratio:.3f}",
                flush=True,
            )

            if args.also_sgd:
                keras.backend.clear_session()
                keras.utils.set_random_seed(0)
                sgd_models = {
                    "SPELA": build_spela(widths, jit, keras.optimizers.SGD(1e-2)),
                    "backprop": build_backprop(widths, jit, keras.optimizers.SGD(1e-2)),
                }
                t = alternate(sgd_models, dataset(x, y, args.batch_size), args.epochs)
                s_s, b_s = common.median(t["SPELA"]), common.median(t["backprop"])
                epoch_rows.append(
                    [
                        f"jit_compile={jit}, SGD",
                        f"{s_s:.3f}",
                        f"{b_s:.3f}",
                        f"{s_s / b_s:.3f}",
                        " ".join(f"{v:.2f}" for v in t["SPELA"]),
                        " ".join(f"{v:.2f}" for v in t["backprop"]),
                        f"{1000 * s_s / steps:.1f} / {1000 * b_s / steps:.1f}",
                    ]
                )
                verdicts.append(
                    f"  {'PASS' if s_s / b_s <= SGD_GOAL else 'FAIL'} SPELA/backprop epoch time, "
                    f"SGD (jit_compile={jit}): {s_s / b_s:.3f} (goal <= {SGD_GOAL})"
                )
                print(f"  epoch timing SGD: ratio {s_s / b_s:.3f}", flush=True)
                del sgd_models

            for batch, n_steps in ((1, args.steps_b1), (256, args.steps_b256)):
                ds = dataset(x[: batch * n_steps], y[: batch * n_steps], batch)
                if batch * n_steps > len(x):
                    reps = int(np.ceil(batch * n_steps / len(x)))
                    ds = dataset(
                        np.tile(x, (reps, 1))[: batch * n_steps],
                        np.tile(y, reps)[: batch * n_steps],
                        batch,
                    )
                t = alternate(models, ds, args.step_repeats)
                sps = {k: n_steps / common.median(v) for k, v in t.items()}
                step_rows.append(
                    [
                        f"jit_compile={jit}",
                        str(batch),
                        str(n_steps),
                        f"{sps['SPELA']:.1f}",
                        f"{sps['backprop']:.1f}",
                        f"{sps['SPELA'] / sps['backprop']:.2f}",
                    ]
                )
                print(
                    f"  steps/s batch {batch} jit_compile={jit}: SPELA {sps['SPELA']:.1f}, "
                    f"backprop {sps['backprop']:.1f}",
                    flush=True,
                )

        print()
        print(
            common.format_table(
                [
                    "setting",
                    "SPELA s/epoch",
                    "backprop s/epoch",
                    "ratio SPELA/bp",
                    "SPELA epochs (s)",
                    "backprop epochs (s)",
                    "ms/step SPELA / bp",
                ],
                epoch_rows,
                title=(
                    f"Seconds per epoch, {net}, {args.examples} examples, batch "
                    f"{args.batch_size} (median of {args.epochs} alternating epochs)"
                ),
            )
        )
        print("\n".join(verdicts))
        print()
        print(
            common.format_table(
                [
                    "setting",
                    "batch",
                    "steps per call",
                    "SPELA steps/s",
                    "backprop steps/s",
                    "speed-up SPELA/bp",
                ],
                step_rows,
                title=f"Steps per second (median of {args.step_repeats} alternating fit calls)",
            )
        )

        spela_macs, bp_macs, p_spela, p_bp = macs_per_step(widths, args.batch_size)
        rows = []
        for key in (
            "forward h W",
            "weight grad h^T dz",
            "input grad dz W^T",
            "class-vector products",
        ):
            rows.append(
                [key, f"{spela_macs.get(key, 0) / 1e6:.1f}", f"{bp_macs.get(key, 0) / 1e6:.1f}"]
            )
        total_s, total_b = sum(spela_macs.values()), sum(bp_macs.values())
        rows.append(["total", f"{total_s / 1e6:.1f}", f"{total_b / 1e6:.1f}"])
        rows.append(["ratio SPELA/backprop", f"{total_s / total_b:.3f}", ""])
        rows.append(["parameters (Adam updates each: elementwise)", f"{p_spela:,}", f"{p_bp:,}"])
        print()
        print(
            common.format_table(
                ["matrix products per step", "SPELA MMACs", "backprop MMACs"],
                rows,
                title=f"Analytic multiply-accumulates per training step, batch {args.batch_size}",
            )
        )

        parts = breakdown(widths, args.batch_size, args.profile_repeats, digits=2)
        print_estimate(parts, epoch_rows)
        print_batch1_estimate(breakdown(widths, 1, args.profile_repeats, digits=3), step_rows)


if __name__ == "__main__":
    main()
