"""New classes on the device: SPELA on LiteRT and TFLite Micro vs a nearest-class-mean classifier.

The scenario is `examples/new_classes.py` at its defaults, run through that
script's own functions (same splits, same host model, same device settings) for
every seed: a 64-256-34 `SpelaModel(num_classes=8, max_classes=10)` trained on
the host on the embedded digits 0-7 (10 epochs, library defaults), exported with
only the last SPELA layer learning on the device (SGD 1.0, batch 16); the device
activates classes 8 and 9 and fine-tunes for 10 epochs on 20 training examples
of each plus 80 stored host examples (replay).

Measured for each runtime (LiteRT: `export_tflite`; TFLite Micro:
`export_tflite_micro`; both through `DeviceTrainer`), at the last exit, on the
test digits:

- new-class accuracy: the test examples of classes 8 and 9 after fine-tuning
  (all 10 classes active);
- old-class accuracy drop: accuracy on the test examples of classes 0-7 as
  exported (only they are active) minus after fine-tuning, in points.

Next to it, a nearest-class-mean classifier (what Core ML's on-device k-NN
offers; Euclidean distance) on the same frozen features: the output of the
hidden SPELA layer, which is what the device head (the last SPELA layer, the
only one that learns) sees. Its old classes' means are those of every host
training example, the new classes' means those of the same 20 device examples;
its drop is its accuracy on the old classes with the 8 old means minus with
all 10 means. It stores no replay set.

Goal (issue 12): new-class accuracy >= 85 % and a drop <= 3 points (means over
the seeds) on LiteRT and TFLite Micro alike, and SPELA better than the nearest
class mean (compared on the accuracy over all 10 test classes). The device
settings were chosen on seeds 0-4 (see the example's docstring); `--seeds
5,6,7,8,9` measured 85.1 ± 3.8 % new, drop 2.8 ± 0.8 on both runtimes (nearest
class mean: 87.6 ± 3.8 %, drop 3.8 ± 0.5; all 10 classes 93.9 % vs 92.8 %).

Run (from the repository root, with the project's virtualenv):

    python benchmarks/new_classes.py            # seeds 0-4
    python benchmarks/new_classes.py --quick    # seed 0

Output: benchmarks/results/new_classes[_quick].txt
"""

import argparse
import importlib.util
import os
import sys
import tempfile
import time

# The example's own functions. It shares this file's module name, so it is
# loaded from its path; its example_setup imports TensorFlow quietly and puts
# export/ on the path.
_EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(1, _EXAMPLES)
_spec = importlib.util.spec_from_file_location(
    "new_classes_example", os.path.join(_EXAMPLES, "new_classes.py")
)
scenario = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scenario)

import common  # noqa: E402  sets the Keras backend

import numpy as np  # noqa: E402

import keras  # noqa: E402

from keras_spela.training import train_layers as train_layers_lib  # noqa: E402

RUNTIMES = ("litert", "micro")
NEAREST_CLASS_MEAN = "nearest class mean"
MIN_NEW_ACCURACY = 85.0  # %
MAX_OLD_DROP = 3.0  # points
MICRO_BUDGET_KIB = 128
FEATURE_BATCH = 1000  # images per call when computing the frozen features
# {seed: (train step arena, int8 features model arena or None)} in bytes.
MICRO_ARENAS = {}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seed 0 only")
    parser.add_argument(
        "--dataset",
        default="digits",
        choices=["digits", "fashion_mnist"],
        help="the example's --dataset (default digits); fashion_mnist: the example's "
        "Fashion-MNIST CNN and device settings, TFLite Micro with the int8 features model",
    )
    parser.add_argument("--seeds", default=None, help="comma-separated; default 0,1,2,3,4")
    parser.add_argument("--no_save", action="store_true", help="do not write the results file")
    args = parser.parse_args()
    if args.seeds is None:
        args.seeds = "0" if args.quick else "0,1,2,3,4"
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.exit(
            2, f"error: --seeds must be comma-separated integers, received {args.seeds!r}\n"
        )
    return args


def frozen_features(model, x, learning_layers):
    """The input of the first SPELA layer that learns on the device: what
    the device head sees (the hidden layer's output with `train_layers=1`)."""
    first = next(layer for layer in model.exit_layers if layer.name in learning_layers)
    chunks = []
    for start in range(0, len(x), FEATURE_BATCH):
        features = keras.ops.convert_to_tensor(x[start : start + FEATURE_BATCH])
        for layer in model.stack:
            if layer is first:
                break
            features = layer(features)
        chunks.append(keras.ops.convert_to_numpy(features))
    return np.concatenate(chunks)


def nearest_class_mean(model, learning_layers, host_data, device_data, tests, new_classes):
    """The nearest-class-mean classifier's accuracies, shaped like
    `scenario.add_classes_on_device`'s."""

    def features(x):
        return frozen_features(model, x, learning_layers)

    (x_host, y_host), (x_device, y_device) = host_data, device_data
    host_features = features(x_host)
    old_classes = sorted(set(int(k) for k in y_host))
    means = {k: host_features[y_host == k].mean(axis=0) for k in old_classes}
    device_features = features(x_device)
    for k in new_classes:
        means[k] = device_features[y_device == k].mean(axis=0)

    def accuracy(x, y, classes):
        centres = np.stack([means[k] for k in classes])
        f = features(x)
        distances = ((f[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
        return float(np.mean(np.asarray(classes)[np.argmin(distances, axis=1)] == y))

    every = old_classes + list(new_classes)
    return {
        "exported": {"old": accuracy(*tests["old"], old_classes)},
        "activated": {"new": 0.0, "old": accuracy(*tests["old"], old_classes)},
        "fine-tuned": {
            "new": accuracy(*tests["new"], every),
            "old": accuracy(*tests["old"], every),
        },
    }


def summary(results, tests):
    """(new %, drop in points, all-10-classes %) of one method's results."""
    tuned = results["fine-tuned"]
    n_new, n_old = len(tests["new"][1]), len(tests["old"][1])
    overall = (tuned["new"] * n_new + tuned["old"] * n_old) / (n_new + n_old)
    return (
        100 * tuned["new"],
        100 * (results["exported"]["old"] - tuned["old"]),
        100 * overall,
        100 * tuned["old"],
    )


def run_seed(seed, workdir, dataset):
    """{method: (new %, drop, all %, old after %)} for one seed."""
    scenario.FLAGS.unparse_flags()
    scenario.FLAGS(
        ["new_classes", f"--seed={seed}", f"--output_dir={workdir}", f"--dataset={dataset}"]
    )
    train_layers = scenario.flag_settings()  # and the dataset's defaults
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    host_data, device_data, tests, new_classes = scenario.make_splits(seed)
    model = scenario.pretrain(*host_data)
    learning = train_layers_lib.resolve_train_layers(
        [layer.name for layer in model.exit_layers], train_layers
    )
    rows = {}
    for runtime in RUNTIMES:
        export = scenario.export(
            model,
            train_layers,
            runtime,
            os.path.join(workdir, runtime),
            host_data[0][: scenario.REPRESENTATIVE],
        )
        results = scenario.add_classes_on_device(
            export.path, runtime, device_data, tests, new_classes, seed
        )
        rows[runtime] = summary(results, tests)
        if runtime == "micro":
            MICRO_ARENAS[seed] = (export.arena_bytes, export.features_arena_bytes)
    rows[NEAREST_CLASS_MEAN] = summary(
        nearest_class_mean(model, learning, host_data, device_data, tests, new_classes), tests
    )
    return rows


def issue_line(name, new, drop):
    """The issue's line, with the means; the std over seeds after it."""
    return (
        f"{name}: new-class accuracy {np.mean(new):.1f}%, old-class accuracy drop "
        f"{np.mean(drop):.1f} points (std over {len(new)} seeds: {np.std(new):.1f}, "
        f"{np.std(drop):.1f})"
    )


def report(per_seed, seeds, dataset):
    methods = list(RUNTIMES) + [NEAREST_CLASS_MEAN]
    values = {m: np.array([per_seed[s][m] for s in seeds]) for m in methods}
    print()
    rows = [
        [m] + [f"{values[m][:, i].mean():.1f} ± {values[m][:, i].std():.1f}" for i in (0, 3, 1, 2)]
        for m in methods
    ]
    print(
        common.format_table(
            ["method", "new-class %", "old-class % after", "old drop (points)", "all 10 classes %"],
            rows,
            title=f"Last exit, {dataset} test set, mean ± std over seeds {seeds}",
        )
    )
    gap = max(
        abs(per_seed[s]["litert"][i] - per_seed[s]["micro"][i]) for s in seeds for i in range(4)
    )
    print(f"largest LiteRT - TFLite Micro difference over seeds and columns: {gap:.2f} points")
    print()
    for m in methods:
        print(issue_line(m, values[m][:, 0], values[m][:, 1]))
    print()
    ncm_overall = values[NEAREST_CLASS_MEAN][:, 2].mean()
    for runtime in RUNTIMES:
        new, drop = values[runtime][:, 0].mean(), values[runtime][:, 1].mean()
        passed = new >= MIN_NEW_ACCURACY and drop <= MAX_OLD_DROP
        print(
            f"{'PASS' if passed else 'FAIL'} {runtime}: new-class accuracy {new:.1f}% "
            f"(goal >= {MIN_NEW_ACCURACY:g}%), old-class drop {drop:.1f} points "
            f"(goal <= {MAX_OLD_DROP:g})"
        )
        overall = values[runtime][:, 2].mean()
        print(
            f"{'PASS' if overall > ncm_overall else 'FAIL'} {runtime} vs {NEAREST_CLASS_MEAN}: "
            f"all 10 classes {overall:.1f}% vs {ncm_overall:.1f}%"
        )


def micro_arena_line():
    """The TFLite Micro arena of the fine-tune (the same for every seed), against
    the budget."""
    step, features = MICRO_ARENAS[min(MICRO_ARENAS)]
    total = (step + (features or 0)) / 1024
    parts = f"train step {step / 1024:.1f} KiB" + (
        f" + int8 features model {features / 1024:.1f} KiB" if features else ""
    )
    verdict = "PASS" if total <= MICRO_BUDGET_KIB else "FAIL"
    return (
        f"{verdict} TFLite Micro arena: {parts} = {total:.1f} KiB (budget {MICRO_BUDGET_KIB} KiB)"
    )


def main():
    args = parse_args()
    scenario.logging.set_verbosity(scenario.logging.WARNING)  # TensorFlow's INFO logs
    name = "new_classes.txt" if args.dataset == "digits" else f"new_classes_{args.dataset}.txt"
    path = None if args.no_save else common.results_path(name, args.quick)
    with common.Tee(path):
        print(__doc__.split("\n\n")[0])
        print(common.environment_line())
        print(f"{args.dataset}; seeds {args.seeds}; load average {common.load_average()}")
        per_seed = {}
        with tempfile.TemporaryDirectory() as workdir:
            for seed in args.seeds:
                start = time.perf_counter()
                per_seed[seed] = run_seed(seed, workdir, args.dataset)
                cells = "; ".join(
                    f"{m} new {v[0]:.1f}% old drop {v[1]:.1f}" for m, v in per_seed[seed].items()
                )
                print(f"  seed {seed} ({time.perf_counter() - start:.0f} s): {cells}", flush=True)
        report(per_seed, args.seeds, args.dataset)
        if args.dataset != "digits":
            print(micro_arena_line())
    if path:
        print(f"results: {path}")


if __name__ == "__main__":
    main()
