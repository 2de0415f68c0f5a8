"""Training in 128 KB: which export settings fit the main job in a small TFLite Micro arena.

The scenario is the README's main job, `examples/on_device_finetune.py` at its
defaults, run through that script's own functions (same split, same seed, same
host model): a 64-256-34 SPELA MLP pre-trained on the embedded digits, then
fine-tuned on the device on 400 digits rotated by 90 degrees plus 200 replayed
host digits (`DeviceTrainer.fit`, seed = the run's seed; 5 epochs by default).

For every row of settings (which SPELA layers learn on the device, optimizer,
learning rate, train batch, and device epochs, which cost time, not arena),
measured side by side:

- the TFLite Micro arena of the train step (`export_tflite_micro(...)
  .arena_bytes`: the smallest arena in which the step allocates and runs,
  found by the search of `keras_spela/lite/micro_arena.py`), its operator count
  and file size (frozen layers are float32 constants in the file, i.e. flash);
- the accuracy after fine-tuning on TFLite Micro (`--runtime micro`: the last
  exit, which is all a micro step reports) on the rotated test digits (new) and
  on the plain ones (old);
- the same with the LiteRT export of the same settings (`export_tflite`,
  `DeviceTrainer` on LiteRT).

The reference is LiteRT's fine-tune at the main job's defaults (every layer
learns, Adam 1e-2, batch 16). A row passes when its arena is <= the budget
(`--budget_kib`, 128 KiB = 131072 bytes) and its Micro accuracy on the new
task is within 2 points of the reference (mean over `--seeds`), with the old
task within 2 points too.

Run (from the repository root, with the project's virtualenv):

    python benchmarks/micro_budget.py            # seeds 0,1,2, every row
    python benchmarks/micro_budget.py --quick    # seed 0, rows 0 and 4

Output: benchmarks/results/micro_budget[_quick].txt
"""

import argparse
import collections
import os
import sys
import tempfile
import time

Settings = collections.namedtuple(
    "Settings",
    ["name", "train_layers", "kind", "learning_rate", "momentum", "batch_size", "epochs"],
)
# The main job's defaults first (the reference), then the candidates; row 4 is
# what `examples/on_device_finetune.py --micro_budget_kib 128` exports.
SETTINGS = [
    Settings("defaults: all layers, adam 1e-2, batch 16, 5 ep", "all", "adam", 1e-2, 0.0, 16, 5),
    Settings("all layers, sgd 0.1, batch 8, 5 ep", "all", "sgd", 0.1, 0.0, 8, 5),
    Settings("last only, adam 1e-2, batch 8, 5 ep", 1, "adam", 1e-2, 0.0, 8, 5),
    Settings("last only, sgd 1.0, batch 8, 5 ep", 1, "sgd", 1.0, 0.0, 8, 5),
    Settings("last only, sgd 1.0, batch 8, 20 ep", 1, "sgd", 1.0, 0.0, 8, 20),
    Settings("last only, sgd 1.0, batch 4, 20 ep", 1, "sgd", 1.0, 0.0, 4, 20),
    Settings("last only, momentum 0.9 0.1, batch 8, 20 ep", 1, "sgd", 0.1, 0.9, 8, 20),
]
QUICK_ROWS = (0, 4)
MAX_GAP_POINTS = 2.0


def _int_list(parser, name, text):
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        parser.error(f"--{name} must be comma-separated integers, received {text!r}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seed 0, rows 0 and 4")
    parser.add_argument("--seeds", default=None, help="comma-separated; default 0,1,2")
    parser.add_argument(
        "--rows", default=None, help="comma-separated row numbers of SETTINGS (0 = defaults)"
    )
    parser.add_argument("--budget_kib", type=float, default=128.0)
    parser.add_argument("--no_save", action="store_true")
    args = parser.parse_args()
    if args.seeds is None:
        args.seeds = "0" if args.quick else "0,1,2"
    args.seeds = _int_list(parser, "seeds", args.seeds)
    rows = (
        QUICK_ROWS
        if args.quick and args.rows is None
        else (range(len(SETTINGS)) if args.rows is None else _int_list(parser, "rows", args.rows))
    )
    if not set(rows) <= set(range(len(SETTINGS))):
        parser.error(f"--rows must be row numbers 0 to {len(SETTINGS) - 1}, received {args.rows}")
    if not args.budget_kib > 0:
        parser.error(f"--budget_kib must be > 0, received {args.budget_kib:g}")
    args.settings = [SETTINGS[r] for r in sorted(set(rows) | {0})]
    return args


if __name__ == "__main__":
    parse_args()  # a bad argument ends here, before TensorFlow is imported

# TensorFlow, quietly, and this checkout's keras_spela on the path
# (before the example's import of it, which would otherwise find whatever
# `keras_spela` directory comes first, e.g. a Bazel runfiles tree).
from quiet_common import common  # noqa: E402

# The main job's own functions.
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
)
import on_device_finetune as main_job  # noqa: E402

import numpy as np  # noqa: E402

import keras  # noqa: E402
import keras_spela  # noqa: E402


def main_job_scenario(seed, output_dir):
    """The main job's host model, device data and test sets for `seed`."""
    main_job.FLAGS(
        [
            "on_device_finetune",
            f"--seed={seed}",
            f"--output_dir={output_dir}",
        ]
    )
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    train, test, num_classes = main_job.load_images()
    host_data, device_data, tests = main_job.make_splits(train, test, num_classes)
    return main_job.pretrain(*host_data, num_classes), device_data, tests


def fine_tune(path, runtime, device_data, tests, seed, epochs):
    """{test set: last-exit accuracy} after `epochs` of `DeviceTrainer.fit` on
    `runtime`."""
    trainer = main_job.DeviceTrainer(path, runtime=runtime, quiet=True)
    trainer.fit(*device_data, epochs=epochs, seed=seed, verbose=0)
    last = f"{trainer.exits[-1]}_accuracy"
    return {name: trainer.evaluate(x, y)[last] for name, (x, y) in tests.items()}


def measure(settings, model, device_data, tests, seed, workdir):
    """Arena bytes, operators, file bytes and both runtimes' accuracies."""
    momentum = {"momentum": settings.momentum} if settings.kind == "sgd" else {}
    optimizer = keras_spela.DeviceOptimizer(settings.kind, settings.learning_rate, **momentum)
    common_args = dict(
        batch_size=settings.batch_size,
        optimizer=optimizer,
        train_layers=settings.train_layers,
    )
    stem = os.path.join(workdir, f"spela_seed{seed}_row{SETTINGS.index(settings)}")
    with main_job.capture_native_stderr(True):
        litert = keras_spela.export_tflite(model, stem + ".tflite", **common_args)
        micro = keras_spela.export_tflite_micro(model, stem + "_micro.tflite", **common_args)
    return {
        "arena": micro.arena_bytes,
        "operators": sum(micro.operators.values()),
        "model_bytes": micro.size_bytes,
        "micro": fine_tune(micro.path, "micro", device_data, tests, seed, settings.epochs),
        "litert": fine_tune(litert.path, "litert", device_data, tests, seed, settings.epochs),
    }


def mean(values):
    return float(np.mean(values))


def main():
    args = parse_args()
    budget = int(args.budget_kib * 1024)
    txt = None if args.no_save else common.results_path("micro_budget.txt", args.quick)
    results = collections.defaultdict(list)  # settings -> [measurement per seed]
    start = time.perf_counter()
    with common.Tee(txt), tempfile.TemporaryDirectory() as workdir:
        print(__doc__.split("\n\n")[0])
        print(common.environment_line())
        print(
            f"settings: seeds {args.seeds}, budget {budget:,} bytes "
            f"({args.budget_kib:g} KiB){' (QUICK MODE)' if args.quick else ''}"
        )
        for seed in args.seeds:
            model, device_data, tests = main_job_scenario(seed, workdir)
            for settings in args.settings:
                results[settings].append(
                    measure(settings, model, device_data, tests, seed, workdir)
                )
                print(f"  seed {seed}: {settings.name} done", flush=True)

        reference = SETTINGS[0]
        ref_new = 100 * mean([r["litert"]["new"] for r in results[reference]])
        ref_old = 100 * mean([r["litert"]["old"] for r in results[reference]])
        rows, verdicts = [], []
        for settings in args.settings:
            runs = results[settings]
            arenas = sorted({r["arena"] for r in runs})
            micro_new = 100 * mean([r["micro"]["new"] for r in runs])
            micro_old = 100 * mean([r["micro"]["old"] for r in runs])
            rows.append(
                [
                    settings.name,
                    "/".join(f"{a / 1024:.1f}" for a in arenas),
                    f"{runs[0]['operators']:,}",
                    f"{runs[0]['model_bytes'] / 1024:.0f}",
                    f"{micro_new:.2f}",
                    f"{micro_old:.2f}",
                    f"{100 * mean([r['litert']['new'] for r in runs]):.2f}",
                    f"{100 * mean([r['litert']['old'] for r in runs]):.2f}",
                    f"{micro_new - ref_new:+.2f}",
                    f"{micro_old - ref_old:+.2f}",
                ]
            )
            fits = max(arenas) <= budget
            close = micro_new >= ref_new - MAX_GAP_POINTS and micro_old >= ref_old - MAX_GAP_POINTS
            verdicts.append(
                f"  {'PASS' if fits and close else 'FAIL'} {settings.name}: arena "
                f"{max(arenas):,} bytes {'<=' if fits else '>'} {budget:,}; Micro new "
                f"{micro_new:.2f}% / old {micro_old:.2f}% vs LiteRT defaults "
                f"{ref_new:.2f}% / {ref_old:.2f}% (within {MAX_GAP_POINTS:g} points: {close})"
            )
        print()
        print(
            common.format_table(
                [
                    "settings",
                    "arena KiB",
                    "operators",
                    "model KiB",
                    "Micro new %",
                    "Micro old %",
                    "LiteRT new %",
                    "LiteRT old %",
                    "Micro - ref new",
                    "Micro - ref old",
                ],
                rows,
                title=(
                    f"Main job (64-256-34, rotate90; ep = device epochs), mean over seeds "
                    f"{args.seeds}; ref = LiteRT at the defaults: "
                    f"new {ref_new:.2f}%, old {ref_old:.2f}% (last exit)"
                ),
            )
        )
        print("\n".join(verdicts))
        print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
