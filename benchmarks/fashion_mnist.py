"""Fashion-MNIST: keras_spela (library defaults, the paper's recipe) against backprop, side by side.

What is measured: test accuracy (%) on Fashion-MNIST
(keras_spela.datasets.load_fashion_mnist(normalize=True): 60,000 train /
10,000 test images, pixels / 255; the first --train_examples training and
--test_examples test images)
after every epoch, at every exit, and the training seconds of every epoch
(inside fit; the per-epoch test evaluation is not counted), for several seeds
(keras.utils.set_random_seed, seed s for every configuration). Seeds run in
the outer loop, configurations in the inner one (interleaved), all in one
process. Configurations:

  MLP (inputs flattened to 784), batch --batch_size (default 50, the paper's):
  spela mlp 784-1000-34 defaults  SpelaModel([Input(784), SpelaDense(1000),
                                  SpelaDense(34)], num_classes=10); compile()
                                  (the library's defaults)
  spela mlp 784-1000-34 recipe    the paper's recipe: SpelaDense(...,
                                  local_loss="log_cosine", negative_slope=0.001),
                                  compile(SGD(2.5)), the rate lowered by 0.1
                                  every 10 epochs (the authors' notebooks)
  backprop mlp 784-1000-34+head   Keras Dense(1000), Dense(34) (leaky ReLU 0.01)
                                  and a Dense(10) softmax head; Adam(1e-3),
                                  sparse categorical cross-entropy

  CNN (28x28x1), batch --cnn_batch_size (default 50):
  spela cnn 32-64-256-34          SpelaModel([Input((28, 28, 1)),
                                  SpelaConv2D(32, 3, padding="same"),
                                  SpelaConv2D(64, 3, padding="same"), Flatten(),
                                  SpelaDense(256), SpelaDense(34)]); compile();
                                  every layer at the library's defaults
                                  (objective, loss, pooling, optimizer: whatever
                                  they are in the checkout that runs)
  spela cnn 32-64-128-256-34      the same with SpelaConv2D(128, 3, "same",
                                  pool_size=1) third: it keeps the 7x7 map (pooled
                                  once more to 3x3 it measured below the 2-block stack)
  backprop cnn 32-64-256-34+head  Conv2D(w, 3, same) + LeakyReLU(0.01) +
  backprop cnn 32-64-128-...      MaxPooling2D as the SPELA stack's, Flatten, Dense(256),
                                  Dense(34) (leaky ReLU 0.01), Dense(10) softmax
                                  head; Adam(1e-3)

Reported per configuration (mean ± std over seeds): the best exit after epoch
1, after epoch 5 and the best (epoch, exit) within all epochs (the maximum
over epochs and exits on the test split, as the project's goals define it: an
optimistic number), every exit's values, and the median epoch time of each
SPELA configuration over that of the backprop model of the same widths.
Verdict lines check the goals (MET, or MISSED by how many points). Plots of
the best exit's test accuracy against the epoch and against the training
seconds are saved next to the table.

Run (from the repository root, with the project's virtualenv):

    python benchmarks/fashion_mnist.py                 # 3 seeds, MLP 50 / CNN 30 epochs
    python benchmarks/fashion_mnist.py --quick         # 1,000 + 1,000 images, 2 epochs, 1 seed

A long run in pieces: give every piece the same --results_json (each trial
is appended to it as one JSON line when it ends), e.g.

    python benchmarks/fashion_mnist.py --part mlp --first_seed 0 --seeds 1 --results_json runs.jsonl
    python benchmarks/fashion_mnist.py --part cnn --first_seed 2 --seeds 1 --results_json runs.jsonl
    python benchmarks/fashion_mnist.py --report_only --results_json runs.jsonl

--report_only trains nothing: it reports every record of the file whose
settings (part, epochs, batch sizes, training and test examples) are the flags' (the
last record of a configuration and seed wins).

Outputs: benchmarks/results/fashion_mnist[_quick].txt and .png.
"""

import argparse
import inspect
import json
import os
import subprocess
import sys
import time

NUM_CLASSES = 10
TRAIN_IMAGES = 60000
TEST_IMAGES = 10000
MLP_WIDTHS = (1000, 34)
HEAD_WIDTHS = (256, 34)
CNN_STACKS = {2: (32, 64), 3: (32, 64, 128)}
# Each block's max-pooling window (1: none).
CNN_POOLS = {2: (2, 2), 3: (2, 2, 1)}
GOAL_SEEDS = 3
GOAL_MLP_EPOCHS = 50
GOAL_CNN_EPOCHS = 30
GOAL_MLP_BEST = 0.898
GOAL_CNN_BEST = 0.925
GOAL_CONV_EXIT = 0.85
RECIPE_RATE, RECIPE_RATE_STEP, RECIPE_RATE_EVERY = 2.5, 0.1, 10
QUICK = {
    "seeds": 1,
    "mlp_epochs": 2,
    "cnn_epochs": 2,
    "train_examples": 1000,
    "test_examples": 1000,
}
FULL = {
    "seeds": GOAL_SEEDS,
    "mlp_epochs": GOAL_MLP_EPOCHS,
    "cnn_epochs": GOAL_CNN_EPOCHS,
    "train_examples": TRAIN_IMAGES,
    "test_examples": TEST_IMAGES,
}
EVAL_BATCH_SIZE = 1000

SPELA_MLP = "spela mlp 784-1000-34 defaults"
SPELA_MLP_RECIPE = "spela mlp 784-1000-34 recipe"
BACKPROP_MLP = "backprop mlp 784-1000-34+head"


def cnn_name(method, blocks):
    widths = "-".join(str(w) for w in CNN_STACKS[blocks] + HEAD_WIDTHS)
    return f"{method} cnn {widths}" + ("+head" if method == "backprop" else "")


SPELA_CNN = {blocks: cnn_name("spela", blocks) for blocks in CNN_STACKS}
BACKPROP_CNN = {blocks: cnn_name("backprop", blocks) for blocks in CNN_STACKS}
# Every configuration, in the order they run, with its exits.
EXITS = {
    SPELA_MLP: ["d1", "d2"],
    SPELA_MLP_RECIPE: ["d1", "d2"],
    BACKPROP_MLP: ["output"],
}
for _blocks in CNN_STACKS:
    EXITS[SPELA_CNN[_blocks]] = [f"conv{i + 1}" for i in range(_blocks)] + ["d1", "d2"]
    EXITS[BACKPROP_CNN[_blocks]] = ["output"]
# Each SPELA configuration's epoch time is divided by its backprop partner's.
PAIRS = {
    SPELA_MLP: BACKPROP_MLP,
    SPELA_MLP_RECIPE: BACKPROP_MLP,
    **{SPELA_CNN[b]: BACKPROP_CNN[b] for b in CNN_STACKS},
}


def part_settings(part, args):
    """The settings a record of `part` must share to be reported together."""
    epochs, batch = (
        (args.mlp_epochs, args.batch_size)
        if part == "mlp"
        else (args.cnn_epochs, args.cnn_batch_size)
    )
    return {
        "part": part,
        "train_examples": args.train_examples,
        "test_examples": args.test_examples,
        "epochs": epochs,
        "batch_size": batch,
    }


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="all", help="mlp, cnn or all (default all)")
    parser.add_argument(
        "--seeds", type=int, default=None, help=f"number of seeds (default {GOAL_SEEDS}; quick 1)"
    )
    parser.add_argument(
        "--first_seed",
        type=int,
        default=0,
        help="the first seed (default 0): seeds first_seed, first_seed + 1, ...",
    )
    parser.add_argument(
        "--mlp_epochs",
        type=int,
        default=None,
        help=f"MLP epochs (default {GOAL_MLP_EPOCHS}; quick 2)",
    )
    parser.add_argument(
        "--cnn_epochs",
        type=int,
        default=None,
        help=f"CNN epochs (default {GOAL_CNN_EPOCHS}; quick 2)",
    )
    parser.add_argument(
        "--train_examples",
        type=int,
        default=None,
        help=f"the first N training images (default all {TRAIN_IMAGES}; quick 1000)",
    )
    parser.add_argument(
        "--test_examples",
        type=int,
        default=None,
        help=f"the first N test images (default all {TEST_IMAGES}; quick 1000)",
    )
    parser.add_argument("--batch_size", type=int, default=50, help="MLP batch (default 50)")
    parser.add_argument("--cnn_batch_size", type=int, default=50, help="CNN batch (default 50)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1,000 training and 1,000 test images, 2 epochs, 1 seed",
    )
    parser.add_argument(
        "--results_json", default=None, help="a JSON lines file every trial is appended to"
    )
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="train nothing: report the records of --results_json",
    )
    parser.add_argument("--no_save", action="store_true", help="write no results files")
    args = parser.parse_args()
    for name, value in QUICK.items():
        if getattr(args, name) is None:
            setattr(args, name, value if args.quick else FULL[name])
    if args.part not in ("mlp", "cnn", "all"):
        parser.error(f"unknown part {args.part}; choose from mlp, cnn, all")
    args.parts = ["mlp", "cnn"] if args.part == "all" else [args.part]
    for name in ("seeds", "mlp_epochs", "cnn_epochs", "batch_size", "cnn_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, received {getattr(args, name)}")
    if args.first_seed < 0:
        parser.error(f"--first_seed must be >= 0, received {args.first_seed}")
    for name, most in (("train_examples", TRAIN_IMAGES), ("test_examples", TEST_IMAGES)):
        if not 1 <= getattr(args, name) <= most:
            parser.error(f"--{name} must be 1 to {most}, received {getattr(args, name)}")
    if args.report_only:
        if not args.results_json:
            parser.error(
                "--report_only reports the records of --results_json; give --results_json FILE"
            )
        try:
            args.records = read_records(args)
        except (OSError, ValueError) as error:
            parser.error(str(error))
    return args


def read_records(args):
    """The records of `args.results_json` matching the flags' settings, the
    last one of each configuration and seed; ValueError naming the file when
    none does or a line is not a record."""
    records = {}
    with open(args.results_json) as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                settings = {key: record[key] for key in part_settings("mlp", args)}
            except (ValueError, KeyError, TypeError):
                raise ValueError(
                    f"{args.results_json} line {number} is not a record of this benchmark"
                ) from None
            if settings in [part_settings(part, args) for part in args.parts]:
                records[record["configuration"], record["seed"]] = record
    if not records:
        raise ValueError(
            f"{args.results_json} holds no record with these settings: "
            + "; ".join(
                ", ".join(f"{k} {v}" for k, v in part_settings(p, args).items()) for p in args.parts
            )
        )
    return list(records.values())


if __name__ == "__main__":
    parse_args()  # a bad argument ends here, before TensorFlow is imported


from quiet_common import common  # first: TensorFlow, quietly

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

import keras_spela  # noqa: E402
from keras_spela import SpelaConv2D, SpelaDense, SpelaModel  # noqa: E402


def spela_mlp():
    model = SpelaModel(
        [keras.Input((784,))] + [SpelaDense(w, name=f"d{i + 1}") for i, w in enumerate(MLP_WIDTHS)],
        num_classes=NUM_CLASSES,
    )
    model.compile()
    return model


def recipe_rate(steps_per_epoch, epochs):
    """SGD's rate of the paper's recipe: 2.5, minus 0.1 every 10 epochs."""
    changes = max(0, (epochs - 1) // RECIPE_RATE_EVERY)
    return (
        keras.optimizers.schedules.PiecewiseConstantDecay(
            # The rate is values[i] while the step index is <= boundaries[i].
            [RECIPE_RATE_EVERY * steps_per_epoch * (k + 1) - 1 for k in range(changes)],
            [RECIPE_RATE - RECIPE_RATE_STEP * k for k in range(changes + 1)],
        )
        if changes
        else RECIPE_RATE
    )


def spela_mlp_recipe(steps_per_epoch, epochs):
    def build():
        model = SpelaModel(
            [keras.Input((784,))]
            + [
                SpelaDense(w, local_loss="log_cosine", negative_slope=0.001, name=f"d{i + 1}")
                for i, w in enumerate(MLP_WIDTHS)
            ],
            num_classes=NUM_CLASSES,
        )
        model.compile(keras.optimizers.SGD(recipe_rate(steps_per_epoch, epochs)))
        return model

    return build


def backprop_mlp():
    return common.backprop_mlp(784, MLP_WIDTHS, NUM_CLASSES)


def spela_cnn(blocks):
    def build():
        model = SpelaModel(
            [keras.Input((28, 28, 1))]
            + [
                SpelaConv2D(w, 3, padding="same", pool_size=pool, name=f"conv{i + 1}")
                for i, (w, pool) in enumerate(zip(CNN_STACKS[blocks], CNN_POOLS[blocks]))
            ]
            + [keras.layers.Flatten()]
            + [SpelaDense(w, name=f"d{i + 1}") for i, w in enumerate(HEAD_WIDTHS)],
            num_classes=NUM_CLASSES,
        )
        model.compile()
        return model

    return build


def backprop_cnn(blocks):
    def build():
        def leaky():
            return keras.layers.LeakyReLU(negative_slope=common.BACKPROP_NEGATIVE_SLOPE)

        layers = [keras.Input((28, 28, 1))]
        for w, pool in zip(CNN_STACKS[blocks], CNN_POOLS[blocks]):
            layers += [keras.layers.Conv2D(w, 3, padding="same"), leaky()]
            if pool > 1:
                layers.append(keras.layers.MaxPooling2D(pool))
        layers.append(keras.layers.Flatten())
        for w in HEAD_WIDTHS:
            layers += [keras.layers.Dense(w), leaky()]
        layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax"))
        model = keras.Sequential(layers)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    return build


def configurations(part, args):
    """`{name: build}` of one part, in the order they run."""
    if part == "mlp":
        steps = -(-args.train_examples // args.batch_size)
        return {
            SPELA_MLP: spela_mlp,
            SPELA_MLP_RECIPE: spela_mlp_recipe(steps, args.mlp_epochs),
            BACKPROP_MLP: backprop_mlp,
        }
    configs = {}
    for blocks in CNN_STACKS:
        configs[SPELA_CNN[blocks]] = spela_cnn(blocks)
        configs[BACKPROP_CNN[blocks]] = backprop_cnn(blocks)
    return configs


def load_data(train_examples, test_examples):
    """`{part: ((x_train, y_train), (x_test, y_test))}`: flattened for the
    MLP, `(N, 28, 28, 1)` for the CNN. A data set that cannot be read is one
    error line and exit code 1."""
    try:
        (x_train, y_train), (x_test, y_test) = keras_spela.datasets.load_fashion_mnist(
            normalize=True, channel_axis=True
        )
    except keras_spela.datasets.DatasetError as error:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {error}")
    x_train, y_train = x_train[:train_examples], y_train[:train_examples].astype("int32")
    x_test, y_test = x_test[:test_examples], y_test[:test_examples].astype("int32")
    return {
        "cnn": ((x_train, y_train), (x_test, y_test)),
        "mlp": (
            (x_train.reshape(len(x_train), -1), y_train),
            (x_test.reshape(len(x_test), -1), y_test),
        ),
    }


def checkout():
    """The repository's commit (`+ changes` when the tree differs from it),
    or `unknown` outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*command):
        return subprocess.run(
            ["git", "-C", root, *command], capture_output=True, text=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "keras_spela")
    except OSError:
        return "unknown"
    return (commit or "unknown") + (" + changes in keras_spela/" if changed else "")


def train(args, data, environment):
    """Runs every configuration of the chosen parts for every seed on `data`
    (`load_data`); returns the records (each noting `environment`, and
    appended to --results_json as it ends)."""
    records = []
    start = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for part in args.parts:
            settings = part_settings(part, args)
            for name, build in configurations(part, args).items():
                accuracy, seconds = common.run_trial(
                    build,
                    seed,
                    data[part],
                    settings["epochs"],
                    settings["batch_size"],
                    eval_batch_size=EVAL_BATCH_SIZE,
                )
                record = dict(
                    settings,
                    configuration=name,
                    seed=seed,
                    exits=EXITS[name],
                    accuracy=accuracy.tolist(),
                    epoch_seconds=seconds.tolist(),
                    environment=environment,
                )
                records.append(record)
                if args.results_json:
                    with open(args.results_json, "a") as file:
                        file.write(json.dumps(record) + "\n")
                best = accuracy.max(axis=1)
                print(
                    f"  seed {seed} | {name} | epoch 1 {100 * best[0]:.2f} | best "
                    f"{100 * best.max():.2f} (epoch {int(best.argmax()) + 1}) | epoch s "
                    f"{seconds[0]:.3f} first, {common.median(later(seconds)):.3f} median | "
                    f"{time.perf_counter() - start:.0f} s",
                    flush=True,
                )
    return records


def later(seconds):
    """The epoch times after the first (which traces the step), or all if
    there is one epoch."""
    seconds = np.asarray(seconds)
    return seconds[..., 1:].ravel() if seconds.shape[-1] > 1 else seconds.ravel()


def group(records):
    """`{configuration: {"part", "exits", "epochs", "seeds", "accuracy"
    (seeds, epochs, exits), "seconds" (seeds, epochs)}}` in the benchmark's
    order."""
    groups = {}
    for name in EXITS:
        mine = sorted((r for r in records if r["configuration"] == name), key=lambda r: r["seed"])
        if mine:
            groups[name] = {
                "part": mine[0]["part"],
                "exits": mine[0]["exits"],
                "epochs": mine[0]["epochs"],
                "seeds": [r["seed"] for r in mine],
                "accuracy": np.array([r["accuracy"] for r in mine]),
                "seconds": np.array([r["epoch_seconds"] for r in mine]),
            }
    return groups


def report(args, groups):
    """Prints the accuracy and time tables and the goals' verdicts."""
    rows = []
    summaries = {}
    for name, g in groups.items():
        epochs_at = [e for e in (1, 5) if e <= g["epochs"]]
        summary = common.best_exit_summary(list(g["accuracy"]), epochs_at)
        summaries[name] = summary

        def cells(values_at, best):
            return [
                common.mean_std(values_at(e), digits=2) if e <= g["epochs"] else "-" for e in (1, 5)
            ] + [common.mean_std(best, digits=2)]

        label = "best exit" if name in PAIRS else "output"
        rows.append(
            [name, f"{len(g['seeds'])}", g["epochs"], label]
            + cells(lambda e: summary[f"after_{e}"], summary["best"])
        )
        if name in PAIRS:
            for k, exit_name in enumerate(g["exits"]):
                acc = g["accuracy"][:, :, k]
                rows.append(
                    ["", "", "", exit_name] + cells(lambda e: acc[:, e - 1], acc.max(axis=1))
                )
    print()
    print(
        common.format_table(
            ["configuration", "seeds", "epochs", "exit", "epoch 1", "epoch 5", "best within"],
            rows,
            title="Test accuracy %, mean ± std over seeds (best within: the best epoch "
            "of each seed)",
        )
    )

    rows = []
    medians = {name: common.median(later(g["seconds"])) for name, g in groups.items()}
    for name, g in groups.items():
        partner = PAIRS.get(name)
        ratio = f"{medians[name] / medians[partner]:.3f}" if partner in medians else "-"
        rows.append(
            [
                name,
                f"{g['seconds'][:, 0].mean():.3f}",
                f"{medians[name]:.3f}",
                f"{g['seconds'].sum():.1f}",
                ratio,
            ]
        )
    print()
    print(
        common.format_table(
            [
                "configuration",
                "epoch 1 s (mean)",
                "median epoch s",
                "train s (all seeds)",
                "SPELA / backprop",
            ],
            rows,
            title="Training seconds per epoch (inside fit, without the evaluation; the "
            "median over the epochs after the first, all seeds; the ratio is of the medians)",
        )
    )

    print()
    print("Goals (library defaults, on the seed means):")
    verdicts(groups, summaries)
    seeds = min(len(g["seeds"]) for g in groups.values())
    epochs = {g["part"]: g["epochs"] for g in groups.values()}
    if (
        seeds < GOAL_SEEDS
        or epochs.get("mlp", GOAL_MLP_EPOCHS) < GOAL_MLP_EPOCHS
        or epochs.get("cnn", GOAL_CNN_EPOCHS) < GOAL_CNN_EPOCHS
        or args.train_examples < TRAIN_IMAGES
        or args.test_examples < TEST_IMAGES
    ):
        print(
            f"  NOTE: reduced setting ({args.train_examples} training, "
            f"{args.test_examples} test images, fewest seeds per configuration {seeds}, "
            + ", ".join(f"{part.upper()} {e} epochs" for part, e in epochs.items())
            + f"); the goals are stated for {TRAIN_IMAGES} training, {TEST_IMAGES} test "
            f"images, {GOAL_SEEDS} seeds, {GOAL_MLP_EPOCHS} MLP / {GOAL_CNN_EPOCHS} CNN "
            "epochs."
        )


def verdict(text, value, goal, strict=False):
    met = value > goal if strict else value >= goal
    difference = 100 * (value - goal)
    tail = f"{difference:+.2f} points" if met else f"missed by {abs(difference):.2f} points"
    print(f"  {'MET   ' if met else 'MISSED'} {text} ({tail})")


def verdicts(groups, summaries):
    def best(name):
        return float(np.mean(summaries[name]["best"]))

    if SPELA_MLP in groups:
        value, epochs = best(SPELA_MLP), groups[SPELA_MLP]["epochs"]
        verdict(
            f"{SPELA_MLP}, best exit within {epochs} epochs >= "
            f"{100 * GOAL_MLP_BEST:.1f}%: {100 * value:.2f}%",
            value,
            GOAL_MLP_BEST,
        )
        if BACKPROP_MLP in groups:
            ref = best(BACKPROP_MLP)
            verdict(
                f"{SPELA_MLP} >= {BACKPROP_MLP}, best within {epochs}: "
                f"{100 * value:.2f}% vs {100 * ref:.2f}%",
                value,
                ref,
            )
    for blocks in CNN_STACKS:
        name = SPELA_CNN[blocks]
        if name not in groups:
            continue
        value, epochs = best(name), groups[name]["epochs"]
        verdict(
            f"{name}, best exit within {epochs} epochs >= {100 * GOAL_CNN_BEST:.1f}%: "
            f"{100 * value:.2f}%",
            value,
            GOAL_CNN_BEST,
        )
        if BACKPROP_CNN[blocks] in groups:
            ref = best(BACKPROP_CNN[blocks])
            verdict(
                f"{name} >= {BACKPROP_CNN[blocks]}, best within {epochs}: "
                f"{100 * value:.2f}% vs {100 * ref:.2f}%",
                value,
                ref,
            )
        for k, exit_name in enumerate(groups[name]["exits"]):
            if exit_name.startswith("conv"):
                exit_best = float(groups[name]["accuracy"][:, :, k].max(axis=1).mean())
                verdict(
                    f"{name}, conv exit {exit_name} best within {epochs} >= "
                    f"{100 * GOAL_CONV_EXIT:.0f}%: {100 * exit_best:.2f}%",
                    exit_best,
                    GOAL_CONV_EXIT,
                )
    if all(SPELA_CNN[b] in groups for b in CNN_STACKS):
        three, two = best(SPELA_CNN[3]), best(SPELA_CNN[2])
        verdict(
            f"{SPELA_CNN[3]} better than {SPELA_CNN[2]}, best exit: "
            f"{100 * three:.2f}% vs {100 * two:.2f}%",
            three,
            two,
            strict=True,
        )


def plot(groups, path):
    parts = [p for p in ("mlp", "cnn") if any(g["part"] == p for g in groups.values())]
    fig, axes = plt.subplots(len(parts), 2, figsize=(13, 4.8 * len(parts)), squeeze=False)
    colors = plt.get_cmap("tab10")
    for row, part in zip(axes, parts):
        goal = GOAL_MLP_BEST if part == "mlp" else GOAL_CNN_BEST
        for index, (name, g) in enumerate(groups.items()):
            if g["part"] != part:
                continue
            best = 100 * g["accuracy"].max(axis=2).mean(axis=0)  # best exit, seed mean
            epochs = np.arange(1, len(best) + 1)
            seconds = np.cumsum(g["seconds"].mean(axis=0))
            style = ":" if name.startswith("backprop") else "-"
            for ax, x in zip(row, (epochs, seconds)):
                ax.plot(
                    x,
                    best,
                    style,
                    marker=".",
                    color=colors(index),
                    linewidth=1.5,
                    label=f"{name} ({len(g['seeds'])} seed{'s' if len(g['seeds']) > 1 else ''})",
                )
        for ax, xlabel in zip(
            row, ("epoch", "training seconds, cumulative (inside fit, seed mean)")
        ):
            ax.axhline(100 * goal, color="grey", linestyle="--", linewidth=1)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy %, best exit (seed mean)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        row[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        row[0].set_title(
            f"{part.upper()}: against epochs (dashed: {100 * goal:.1f}% goal)", fontsize=10
        )
        row[1].set_title(f"{part.upper()}: against training seconds", fontsize=10)
    fig.suptitle("Fashion-MNIST: SPELA (library defaults, paper's recipe) against backprop")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    args = parse_args()
    data = None if args.report_only else load_data(args.train_examples, args.test_examples)
    txt = None if args.no_save else common.results_path("fashion_mnist.txt", args.quick)
    png = None if args.no_save else common.results_path("fashion_mnist.png", args.quick)
    with common.Tee(txt):
        print(__doc__.split("\n\n")[0])
        conv_objective = inspect.signature(SpelaConv2D).parameters["objective"].default
        environment = (
            f"{common.environment_line()}, commit {checkout()}, SpelaConv2D's "
            f"default objective {conv_objective!r}"
        )
        print(environment)
        seeds = (
            "seeds as recorded"
            if args.report_only
            else f"seeds {args.first_seed}..{args.first_seed + args.seeds - 1}"
        )
        parts = [
            f"{part.upper()} {settings['epochs']} epochs, batch {settings['batch_size']}"
            for part, settings in ((p, part_settings(p, args)) for p in args.parts)
        ]
        print(
            f"settings: {'; '.join(parts)}; {seeds}; {args.train_examples} training images, "
            f"{args.test_examples} test{' (QUICK MODE)' if args.quick else ''}"
        )
        if args.report_only:
            records = args.records
            print(
                f"report only: {len(records)} records of {args.results_json} "
                "(the seeds line of each configuration says which)"
            )
            for recorded in sorted({r["environment"] for r in records}):
                print(f"  recorded with: {recorded}")
        else:
            print(f"load average at the start (1, 5, 15 min): {common.load_average()}")
            records = train(args, data, environment)
            print(
                f"load average at the end (1, 5, 15 min): {common.load_average()} (above "
                f"{os.cpu_count()}, other processes shared the CPU: the seconds are "
                "inflated, the accuracies are not affected)"
            )
        groups = group(records)
        for name, g in groups.items():
            print(f"  {name}: seeds {', '.join(map(str, g['seeds']))}")
        report(args, groups)
        if png:
            plot(groups, png)
            print(f"plot: {png}")


if __name__ == "__main__":
    main()
