"""Builds the assets of the browser demo (examples/browser/index.html).

The README's main job (examples/on_device_finetune.py, default flags: the
embedded 8x8 digits, a 64-256-34 SPELA MLP pre-trained on the host, exported
with Adam(1e-2) at batch 16; on the device, digits rotated by 90 degrees) run
up to its export, plus its device phase on LiteRT's Python Interpreter as the
reference. Writes into --output_dir (default examples/browser/assets/):

- spela.tflite: the main job's LiteRT export (train / infer / get_weights /
  set_weights);
- digits.json: the device's fine-tuning examples (400 rotated + 200 replayed,
  as in the main job), the held-out test sets ("new": rotated, "old": as the
  host saw them), pixel values as integers 0..16 (divide by 16), and the
  per-exit accuracies of the host model and of the Python DeviceTrainer
  before and after its fine-tune (same examples, epochs and seed).

Both are rebuilt in well under a minute and are not committed (.tflite files
are ignored by the repository). Serve the repository root and open the page:

    python examples/browser/build_assets.py
    python -m http.server -b 127.0.0.1 8000     # in the repository root
    # http://127.0.0.1:8000/examples/browser/   (?accelerator=webgpu to try WebGPU)
"""

import json
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # examples/: the main job and example_setup

import on_device_finetune as job  # noqa: E402  (imports TensorFlow quietly)
from example_setup import capture_native_stderr  # noqa: E402
from example_setup import keras  # noqa: E402
from example_setup import keras_spela  # noqa: E402
from keras_spela_device import DeviceTrainer  # noqa: E402

import numpy as np  # noqa: E402

# Pixel values of the embedded digits are multiples of 1/16.
PIXEL_LEVELS = 16


def _pixels(x):
    levels = np.asarray(x, np.float64) * PIXEL_LEVELS
    rounded = np.rint(levels)
    if np.max(np.abs(levels - rounded)) > 1e-6:
        raise ValueError("the digits' pixels are not multiples of 1/16")
    return rounded.astype(int).reshape(len(x), -1).tolist()


def build(output_dir, verbose=False):
    """Runs the main job up to its export and its device phase on the Python
    Interpreter; writes spela.tflite and digits.json into `output_dir`.

    Returns:
        The content of digits.json (a dict).
    """
    flags = job.FLAGS
    flags([sys.argv[0], f"--output_dir={output_dir}"] + (["--verbose"] if verbose else []))
    os.makedirs(output_dir, exist_ok=True)
    # The main job's order: seed, data, splits, pre-training.
    keras.utils.set_random_seed(flags.seed)
    train, test, num_classes = job.load_images()
    host_data, device_data, tests = job.make_splits(train, test, num_classes)
    model = job.pretrain(*host_data, num_classes)
    host = job.host_accuracy(model, tests)
    path = os.path.join(output_dir, "spela.tflite")
    # The LiteRT half of the main job's export() (its TFLite Micro step is not
    # needed in a browser).
    with capture_native_stderr(not verbose):
        keras_spela.export_tflite(
            model,
            path,
            batch_size=flags.batch_size,
            optimizer=keras_spela.DeviceOptimizer(
                flags.device_optimizer, flags.device_learning_rate
            ),
            train_layers="all",
        )
    trainer = DeviceTrainer(path, runtime="litert", quiet=not verbose)
    before = job.device_accuracy(trainer, tests)
    trainer.fit(*device_data, epochs=flags.device_epochs, seed=flags.seed, verbose=0)
    after = job.device_accuracy(trainer, tests)
    assets = {
        "description": "examples/on_device_finetune.py (default flags): digits rotated by 90 degrees on the device",
        "input_shape": list(device_data[0].shape[1:]),
        "num_classes": int(num_classes),
        "pixel_levels": PIXEL_LEVELS,
        "settings": {
            "shift": flags.shift,
            "device_epochs": flags.device_epochs,
            "seed": flags.seed,
            "batch_size": flags.batch_size,
            "device_optimizer": flags.device_optimizer,
            "device_learning_rate": flags.device_learning_rate,
            "device_examples": flags.device_examples,
            "replay": flags.replay,
        },
        "device": {"x": _pixels(device_data[0]), "y": device_data[1].tolist()},
        "tests": {
            name: {"x": _pixels(x), "y": np.asarray(y).tolist()} for name, (x, y) in tests.items()
        },
        "accuracy": {"host": host, "python_litert_before": before, "python_litert_after": after},
    }
    with open(os.path.join(output_dir, "digits.json"), "w") as f:
        json.dump(assets, f, separators=(",", ":"))
    return assets


def main(argv):
    output_dir = str(HERE / "assets")
    if len(argv) == 3 and argv[1] == "--output_dir":
        output_dir = argv[2]
    elif len(argv) != 1:
        print(
            f"{argv[0]}: error: unknown arguments {argv[1:]} (usage: {argv[0]} [--output_dir DIR])",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    assets = build(output_dir)
    after = assets["accuracy"]["python_litert_after"]["new"]
    print(
        f"wrote {output_dir}/spela.tflite and digits.json in {time.perf_counter() - start:.1f} s; "
        f"Python LiteRT after the fine-tune, rotated test: "
        + ", ".join(f"{k} {100 * v:.2f}%" for k, v in after.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
