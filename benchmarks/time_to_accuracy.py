"""Time to accuracy: SpelaModel at the library defaults vs Keras backprop, same widths.

What is measured: the wall-clock seconds inside `fit`, from the start of
training until the test accuracy first reaches a target, side by side in one
run, with several seeds (keras.utils.set_random_seed(s) before each model).
For SPELA the accuracy is that of the BEST EXIT (every SpelaDense /
SpelaConv2D layer classifies; the first exit to reach the target counts);
for backprop, the model's output. Tasks:

  digits  target 97%. SPELA: digits_accuracy.py's library defaults,
          SpelaModel([Input(64), SpelaDense(256), SpelaDense(34)]),
          compile() (Adam 1e-2); backprop: Dense(256) + Dense(34) (leaky
          ReLU 0.01) + Dense(10) softmax head, Adam(1e-3). Embedded digits
          split (1437 train / 360 test), batch 50, at most 50 epochs.
  cnn     target 85%. cnn_accuracy.py's SPELA CNN at the library defaults
          (conv 32 5x5, conv 64 3x3, dense 256, dense 34; compile() = Adam
          1e-2) and its backprop CNN of the same widths (Adam 1e-3) on
          load_canvas_digits() (20x20), batch 50, at most 40 epochs.

How: a callback evaluates every exit on the whole test split every
`--eval_every` training steps and at every epoch end; the time it spends
evaluating is excluded from the clock (so the clock holds the training steps,
the first step's tracing and Keras' own per-step work), and training stops
at the first evaluation at or above the target. A run that never gets
there within the epochs is "not reached" (counted as infinitely slow in the
median). Seeds run in the outer loop, the two methods in the inner one, in
alternating order (SPELA first for even seeds, backprop first for odd), so
both see the same machine load; the load average is printed at the start
and the end. Printed per task: the median seconds (and steps, epochs) to
the target of each method, the ratio of the medians SPELA / backprop and the
median of the per-seed ratios. Goal: <= 0.5x backprop.

Run (from the repository root, with the project's virtualenv):

    python benchmarks/time_to_accuracy.py            # digits and cnn, 5 seeds
    python benchmarks/time_to_accuracy.py --quick    # 2 seeds, at most 10 epochs

Output: benchmarks/results/time_to_accuracy[_quick].txt
"""

import argparse
import math
import time

from quiet_common import capture_native_stderr, common  # first: TensorFlow, quietly

import cnn_accuracy  # noqa: E402
import digits_accuracy  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_spela  # noqa: E402


GOAL_RATIO = 0.5
METHODS = ("SPELA", "backprop")


class Task:
    """One comparison: data, the two model builders, target and limits."""

    def __init__(self, name, load, builders, target, max_epochs, description):
        self.name = name
        self.load = load
        self.builders = builders
        self.target = target
        self.max_epochs = max_epochs
        self.description = description


def tasks():
    return {
        "digits": Task(
            "digits",
            common.load_digits,
            {"SPELA": digits_accuracy.spela_defaults(34), "backprop": digits_accuracy.backprop},
            0.97,
            50,
            "MLP 64-256-34 (SPELA defaults) vs backprop 64-256-34+head",
        ),
        "cnn": Task(
            "cnn",
            keras_spela.datasets.load_canvas_digits,
            {"SPELA": cnn_accuracy.spela_cnn, "backprop": cnn_accuracy.backprop_cnn},
            0.85,
            40,
            f"{cnn_accuracy.SPELA_CNN} vs {cnn_accuracy.BACKPROP_CNN} (canvas digits)",
        ),
    }


class TimeToAccuracy(keras.callbacks.Callback):
    """Training seconds until the best exit's test accuracy reaches `target`.

    Evaluates every exit (a SpelaModel's `exit_scores`, a plain model's
    output) on the test split every `eval_every` steps and at every epoch
    end; its own evaluation time is left out of the clock. Stops training
    at the first evaluation at or above the target.

    Args:
        x_test, y_test: the test split.
        target: accuracy in (0, 1].
        eval_every: training steps between evaluations.

    Attributes (after `fit`):
        reached: None, or a dict with `seconds` (training seconds from
            `on_train_begin`), `step` (steps done), `epoch` (1-based),
            `exit` (index of the first exit at the target), `accuracy`.
        best_accuracy: the highest best-exit accuracy evaluated.
        first_step_seconds: the first step's seconds (tracing included).
        evaluations: number of evaluations.

    Example:

    ```python
    timer = TimeToAccuracy(x_test, y_test, target=0.97, eval_every=5)
    model.fit(x_train, y_train, epochs=50, callbacks=[timer], verbose=0)
    print(timer.reached)
    ```
    """

    def __init__(self, x_test, y_test, target, eval_every):
        super().__init__()
        self.x_test = tf.constant(x_test)
        self.y_test = np.asarray(y_test)
        self.target = target
        self.eval_every = eval_every
        self.reached = None
        self.best_accuracy = 0.0
        self.first_step_seconds = None
        self.evaluations = 0
        self._scores = None
        self._start = None
        self._excluded = 0.0
        self._steps = 0
        self._epoch = 0
        self._last_evaluated_step = -1

    def set_model(self, model):
        super().set_model(model)
        self._scores = common.exit_scores_function(model)

    def _training_seconds(self):
        return time.perf_counter() - self._start - self._excluded

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self.first_step_seconds is None:
            self.first_step_seconds = self._training_seconds()
        if self._steps % self.eval_every == 0:
            self._evaluate()

    def on_epoch_end(self, epoch, logs=None):
        if self._last_evaluated_step != self._steps:
            self._evaluate()

    def _evaluate(self):
        seconds = self._training_seconds()
        begin = time.perf_counter()
        accuracies = common.exit_accuracies(self._scores, self.x_test, self.y_test)
        self.evaluations += 1
        self._last_evaluated_step = self._steps
        self.best_accuracy = max(self.best_accuracy, max(accuracies))
        if self.reached is None and max(accuracies) >= self.target:
            best = int(np.argmax(accuracies))
            self.reached = {
                "seconds": seconds,
                "step": self._steps,
                "epoch": self._epoch,
                "exit": best,
                "accuracy": accuracies[best],
            }
            self.model.stop_training = True
        self._excluded += time.perf_counter() - begin


def run(task, method, seed, data, args):
    """Fits one model until the target (or `max_epochs`); its `TimeToAccuracy`."""
    (x_train, y_train), (x_test, y_test) = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = task.builders[method]()
    timer = TimeToAccuracy(x_test, y_test, args.targets[task.name], args.eval_every)
    # Grappler's C++ notices (e.g. "remapper failed" on the backprop CNN) are
    # dropped; they are shown if fit raises.
    with capture_native_stderr():
        model.fit(
            x_train,
            y_train,
            batch_size=args.batch_size,
            epochs=args.max_epochs[task.name],
            verbose=0,
            callbacks=[timer],
        )
    return timer


def unit_interval(text):
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected an accuracy in (0, 1], got {text}")
    return value


def parse_args(argv=None):
    known = tasks()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, at most 10 epochs")
    parser.add_argument(
        "--tasks", default="digits,cnn", help=f"comma-separated, of {', '.join(known)}"
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5)")
    parser.add_argument(
        "--max_epochs",
        type=int,
        default=None,
        help="epoch limit for every task (default: digits 50, cnn 40; quick 10)",
    )
    parser.add_argument(
        "--eval_every",
        type=int,
        default=5,
        help="training steps between test evaluations (and every epoch end)",
    )
    parser.add_argument("--batch_size", type=int, default=50)
    for name, task in known.items():
        parser.add_argument(
            f"--{name}_target",
            type=unit_interval,
            default=task.target,
            help=f"test accuracy to reach (default {task.target})",
        )
    parser.add_argument("--no_save", action="store_true", help="write no results file")
    args = parser.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.tasks if t not in known]
    if unknown or not args.tasks:
        parser.error(
            f"unknown task {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}"
        )
    if args.seeds is None:
        args.seeds = 2 if args.quick else 5
    for name in ("seeds", "eval_every", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_epochs is not None and args.max_epochs < 1:
        parser.error(f"--max_epochs must be >= 1, got {args.max_epochs}")
    limit = args.max_epochs if args.max_epochs is not None else (10 if args.quick else None)
    args.max_epochs = {name: limit or task.max_epochs for name, task in known.items()}
    args.targets = {name: getattr(args, f"{name}_target") for name in known}
    return args


def seconds_of(timer, after_first_step=False):
    """Seconds to the target (inf if not reached); optionally without the
    first step (tracing)."""
    if timer.reached is None:
        return math.inf
    return timer.reached["seconds"] - (timer.first_step_seconds if after_first_step else 0.0)


def ratio_text(spela, backprop):
    """(ratio, text) of two medians, either of which may be inf."""
    if math.isinf(spela):
        return math.inf, "SPELA not reached"
    if math.isinf(backprop):
        return 0.0, "backprop not reached"
    return spela / backprop, f"{spela / backprop:.2f}"


def describe(timer):
    if timer.reached is None:
        return f"not reached (best {100 * timer.best_accuracy:.1f}%)"
    r = timer.reached
    return (
        f"{r['seconds']:.2f} s, step {r['step']}, epoch {r['epoch']}, exit {r['exit']} "
        f"at {100 * r['accuracy']:.1f}%"
    )


def fmt_seconds(value):
    return "not reached" if math.isinf(value) else f"{value:.2f}"


def report(task, args, timers):
    target = args.targets[task.name]
    rows, medians, later = [], {}, {}
    for method in METHODS:
        runs = timers[method]
        seconds = [seconds_of(t) for t in runs]
        reached = [t.reached for t in runs if t.reached]
        medians[method] = common.median(seconds)
        later[method] = common.median([seconds_of(t, after_first_step=True) for t in runs])
        rows.append(
            [
                method,
                f"{len(reached)}/{len(runs)}",
                fmt_seconds(medians[method]),
                " ".join(fmt_seconds(s) for s in seconds),
                fmt_seconds(later[method]),
                f"{common.median([r['step'] for r in reached]):.0f}" if reached else "-",
                f"{common.median([r['epoch'] for r in reached]):.0f}" if reached else "-",
                f"{common.median([t.first_step_seconds for t in runs]):.2f}",
            ]
        )
    print()
    print(
        common.format_table(
            [
                "method",
                "reached",
                "median s",
                "per seed s",
                "median s after step 1",
                "median steps",
                "median epoch",
                "first step s (tracing)",
            ],
            rows,
            title=(
                f"{task.name}: training seconds to {100 * target:.0f}% test accuracy (best "
                f"exit for SPELA), {task.description}, batch {args.batch_size}, at most "
                f"{args.max_epochs[task.name]} epochs, evaluated every {args.eval_every} steps"
            ),
        )
    )
    ratio, text = ratio_text(medians["SPELA"], medians["backprop"])
    per_seed = [
        ratio_text(seconds_of(s), seconds_of(b))[0]
        for s, b in zip(timers["SPELA"], timers["backprop"])
    ]
    _, later_text = ratio_text(later["SPELA"], later["backprop"])
    print(
        f"  ratio of the medians SPELA / backprop: {text}; median of the per-seed ratios: "
        f"{fmt_seconds(common.median(per_seed))}; without the first step (tracing): "
        f"{later_text}"
    )
    verdict = "PASS" if ratio <= GOAL_RATIO else "FAIL"
    return (
        f"  {verdict} {task.name}: SPELA / backprop time to {100 * target:.0f}%: {text} "
        f"(goal <= {GOAL_RATIO})"
    )


def main():
    args = parse_args()
    txt = None if args.no_save else common.results_path("time_to_accuracy.txt", args.quick)
    all_tasks = tasks()
    with common.Tee(txt):
        print(__doc__.split("\n\n")[0])
        print(common.environment_line())
        print(
            f"settings: tasks {', '.join(args.tasks)}, seeds 0..{args.seeds - 1}, batch "
            f"{args.batch_size}, test evaluation every {args.eval_every} steps and every epoch "
            f"end (not timed){' (QUICK MODE)' if args.quick else ''}"
        )
        print(f"load average at the start (1, 5, 15 min): {common.load_average()}")
        verdicts = []
        start = time.perf_counter()
        for name in args.tasks:
            task = all_tasks[name]
            data = task.load()
            timers = {method: [] for method in METHODS}
            for seed in range(args.seeds):
                order = METHODS if seed % 2 == 0 else METHODS[::-1]
                for method in order:
                    timers[method].append(run(task, method, seed, data, args))
                print(
                    f"  {name} seed {seed} ({time.perf_counter() - start:.0f} s): "
                    + "; ".join(f"{m} {describe(timers[m][-1])}" for m in METHODS),
                    flush=True,
                )
            verdicts.append(report(task, args, timers))
        print()
        print("Goal: time to the target <= 0.5x backprop's (ratio of the medians):")
        print("\n".join(verdicts))
        print(
            f"load average at the end (1, 5, 15 min): {common.load_average()} (above ~2 on 2 "
            "cores, other processes shared the CPU: both methods' seconds are inflated)"
        )
        if args.seeds < 5 or args.quick:
            print(f"  NOTE: reduced setting ({args.seeds} seeds); the goal is stated for 5 seeds.")


if __name__ == "__main__":
    main()
