"""Small-network speed: SpelaModel.fit vs Keras backprop fit where per-step overhead rules.

At small sizes a training step's arithmetic is a few microseconds; what a
user waits for is the program around it (the compiled step's op count, the
metrics, the batch checks, Keras' data iterators and its per-step Python).
This script measures what a user sees, side by side in one run:

1. Seconds per epoch of `fit` on the embedded digits (1437 train rows),
   64-256-34, batch 50, each method's default: SpelaModel at the library
   defaults (`compile()`: Adam 1e-2, softmax_cosine, leaky ReLU 0.01) vs the
   Keras backprop MLP of the same widths plus a Dense(10) softmax head (leaky
   ReLU 0.01, Adam 1e-3, the baseline of every benchmark here; Keras'
   own `compile()` default, RMSprop, is reported too). Every epoch is timed
   by a callback (on_epoch_begin to on_epoch_end) inside `fit(epochs=3)`
   calls that alternate between the methods; medians over all epochs, and
   the ratio SPELA / backprop. Goal: <= 0.8.
2. Steps per second at batch 1 (one epoch of 300 digits per fit call,
   alternating, median). Goal: >= 1.25x backprop.
3. Where a step's time goes: the compiled step alone (`train_function` in
   a Python loop over a repeated dataset, no callbacks), and the `fit`
   epoch's time per step, for both.

The timed epochs include Keras' per-epoch work (metric reset and results,
the data iterator); SpelaModel.fit passes `steps_per_epoch` for inputs of
known length, so Keras makes one data iterator per epoch instead of two.

Run (from the repository root, with the project's virtualenv):

    python benchmarks/small_speed.py            # 15 rounds
    python benchmarks/small_speed.py --quick    # 3 rounds

Output: benchmarks/results/small_speed[_quick].txt
"""

import argparse
import time


EPOCH_GOAL = 0.8
BATCH1_GOAL = 1.25
WIDTHS = (256, 34)
NUM_CLASSES = 10


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="alternating fit calls per method (default 15, quick 3)",
    )
    parser.add_argument("--batch_size", type=int, default=50)
    parser.add_argument("--batch1_examples", type=int, default=300)
    parser.add_argument("--no_save", action="store_true")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 3 if args.quick else 15
    for name in ("rounds", "batch_size", "batch1_examples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, received {getattr(args, name)}")
    return args


if __name__ == "__main__":
    parse_args()  # a bad argument ends here, before TensorFlow is imported

from quiet_common import common  # TensorFlow, quietly

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_spela import SpelaDense, SpelaModel  # noqa: E402


def build(method, input_dim):
    keras.utils.set_random_seed(0)
    if method == "SPELA":
        model = SpelaModel(
            [keras.Input((input_dim,))] + [SpelaDense(w) for w in WIDTHS],
            num_classes=NUM_CLASSES,
        )
        model.compile()
        return model
    optimizer = keras.optimizers.RMSprop() if method == "backprop RMSprop" else None
    return common.backprop_mlp(input_dim, WIDTHS, NUM_CLASSES, optimizer)


def alternate_epochs(models, x, y, batch_size, rounds, epochs):
    """`{method: [epoch seconds]}` from `rounds` alternating `fit(epochs=...)`
    calls per method (one warm-up fit each first, not counted)."""
    for model in models.values():
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    seconds = {name: [] for name in models}
    names = list(models)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            timer = common.EpochTimer()
            models[name].fit(
                x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[timer]
            )
            seconds[name] += timer.epoch_seconds
    return seconds


def step_loop_seconds(model, x, y, batch_size, steps, rounds):
    """Median seconds of one `train_function` call in a Python loop (no
    callbacks, no epoch work) over a repeated dataset."""
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    iterator = iter(data.repeat())
    model.make_train_function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            logs = model.train_function(iterator)
        float(logs["loss"])
        times.append((time.perf_counter() - start) / steps)
    return common.median(times)


def main():
    args = parse_args()
    txt = None if args.no_save else common.results_path("small_speed.txt", args.quick)
    (x, y), _ = common.load_digits()
    x, y = x.astype(np.float32), y.astype(np.int32)
    methods = ("SPELA", "backprop", "backprop RMSprop")
    with common.Tee(txt):
        print(__doc__.split("\n\n")[0])
        print(common.environment_line())
        print(f"load average at the start (1, 5, 15 min): {common.load_average()}")
        net = "-".join(map(str, (x.shape[1],) + WIDTHS))
        print(
            f"settings: digits {len(x)} train rows, net {net} (backprop: + Dense "
            f"{NUM_CLASSES} head), {args.rounds} rounds{' (QUICK MODE)' if args.quick else ''}"
        )
        models = {name: build(name, x.shape[1]) for name in methods}
        verdicts, rows = [], []

        epochs = alternate_epochs(models, x, y, args.batch_size, args.rounds, epochs=3)
        medians = {name: common.median(t) for name, t in epochs.items()}
        steps = -(-len(x) // args.batch_size)
        for name in methods:
            rows.append(
                [
                    f"{name}, batch {args.batch_size}",
                    f"{1000 * medians[name]:.1f}",
                    f"{1000 * medians[name] / steps:.2f}",
                    f"{medians[name] / medians['backprop']:.3f}",
                    f"{medians[name] / medians['backprop RMSprop']:.3f}",
                ]
            )
        ratio = medians["SPELA"] / medians["backprop"]
        verdicts.append(
            f"  {'PASS' if ratio <= EPOCH_GOAL else 'FAIL'} epoch time SPELA / backprop "
            f"(Adam), batch {args.batch_size}: {ratio:.3f} (goal <= {EPOCH_GOAL})"
        )
        print(
            f"  batch {args.batch_size}: SPELA {1000 * medians['SPELA']:.1f} ms/epoch, "
            f"backprop {1000 * medians['backprop']:.1f}, ratio {ratio:.3f}",
            flush=True,
        )

        x1, y1 = x[: args.batch1_examples], y[: args.batch1_examples]
        epochs1 = alternate_epochs(models, x1, y1, 1, args.rounds, epochs=1)
        rates = {name: len(x1) / common.median(t) for name, t in epochs1.items()}
        for name in methods:
            rows.append(
                [
                    f"{name}, batch 1",
                    f"{1000 * len(x1) / rates[name]:.1f}",
                    f"{1000 / rates[name]:.2f}",
                    f"{rates['backprop'] / rates[name]:.3f}",
                    f"{rates['backprop RMSprop'] / rates[name]:.3f}",
                ]
            )
        speedup = rates["SPELA"] / rates["backprop"]
        verdicts.append(
            f"  {'PASS' if speedup >= BATCH1_GOAL else 'FAIL'} steps per second at batch 1, "
            f"SPELA / backprop (Adam): {speedup:.2f}x (goal >= {BATCH1_GOAL}x)"
        )
        print(
            f"  batch 1: SPELA {rates['SPELA']:.0f} steps/s, backprop "
            f"{rates['backprop']:.0f}, speed-up {speedup:.2f}x",
            flush=True,
        )

        print()
        print(
            common.format_table(
                [
                    "method, batch",
                    "ms per epoch (median)",
                    "ms per step",
                    "time / backprop Adam",
                    "time / backprop RMSprop",
                ],
                rows,
                title="fit epochs, alternating (time ratios: below 1 is faster than backprop)",
            )
        )

        loop_rows = []
        for batch, epoch_medians, n in (
            (args.batch_size, medians, len(x)),
            (1, {k: len(x1) / v for k, v in rates.items()}, len(x1)),
        ):
            step = {
                name: step_loop_seconds(models[name], x, y, batch, 100, args.rounds)
                for name in ("SPELA", "backprop")
            }
            per_step = {name: epoch_medians[name] / -(-n // batch) for name in step}
            loop_rows.append(
                [
                    str(batch),
                    f"{1000 * step['SPELA']:.3f} / {1000 * step['backprop']:.3f}",
                    f"{step['SPELA'] / step['backprop']:.3f}",
                    f"{1000 * per_step['SPELA']:.3f} / {1000 * per_step['backprop']:.3f}",
                    f"{1000 * (per_step['SPELA'] - step['SPELA']):.3f} / "
                    f"{1000 * (per_step['backprop'] - step['backprop']):.3f}",
                ]
            )
        print()
        print(
            common.format_table(
                [
                    "batch",
                    "compiled step ms SPELA / bp",
                    "ratio",
                    "fit ms per step SPELA / bp",
                    "fit's own ms per step SPELA / bp",
                ],
                loop_rows,
                title="Where a step's time goes (compiled step: train_function in a loop; "
                "fit's own: the rest of an epoch, per step)",
            )
        )
        print()
        print("Goals:")
        for verdict in verdicts:
            print(verdict)
        print(f"load average at the end (1, 5, 15 min): {common.load_average()}")


if __name__ == "__main__":
    main()
