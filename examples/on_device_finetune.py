"""
Title: On-device fine-tuning with SPELA: train on the host, keep learning on LiteRT and TFLite Micro
Author: keras_spela contributors
Date created: 2026/11/25
Last modified: 2026/11/25
Description: Pre-train a SPELA MLP with Keras, export it with a builtin-only
    train signature, and personalise it on a device runtime to data the host
    never saw.
Accelerator: None
"""

"""
## Introduction

A SPELA layer learns from a local loss with a closed-form update: a forward
computation and a few matrix products, no backward pass through the network.
`keras_spela.export_tflite` writes that update into the model itself, as a
`train` signature made of TFLite *builtin* operators only, so the model keeps
learning in LiteRT on a phone, in LiteRT or tflite-runtime on a Linux board, and
(`keras_spela.export_tflite_micro`) in TFLite Micro on a microcontroller, with no
Flex delegate and no TensorFlow on the device.

The story of this example:

1. **Host.** Pre-train a 64-256-34 SPELA MLP on the 8x8 handwritten digits that
   ship with `keras_spela` (no download).
2. **Export.** Write a LiteRT model (`train`, `infer`, `get_weights`,
   `set_weights`) and a TFLite Micro train step.
3. **Device.** The user's data differs from what the host saw. By default the
   device's camera is mounted sideways: every digit arrives rotated by 90
   degrees (`--shift rotate90`), which the host model classifies no better than
   chance. `--shift invert` gives white-on-black digits instead, and
   `--shift new_classes` holds the last two classes out of pre-training (the
   model still has all `num_classes` outputs from the start: SPELA's class
   vectors are fixed, so a class with no data simply has no examples yet).
   The device fine-tunes on a few hundred of its own examples, mixed with a small
   replay set of the host's data (`--replay`) so it does not forget the original
   task, and we print the accuracy at every exit before and after.
4. **Restart.** The learned weights are read with `get_weights`, saved to a file,
   and put back into a freshly loaded model with `set_weights`, as an app does
   when it restarts.

The device side uses `keras_spela_device.DeviceTrainer`, which imports no TensorFlow.
`--runtime litert` (default) runs it in this process; `--runtime micro` runs the
TFLite Micro train step (Python interpreter of the `tflite-micro` package);
`--runtime tflite_runtime` needs a separate Python environment, because
`tflite-runtime` 2.14 is built against numpy 1.x while TensorFlow 2.21 needs
numpy 2: pass that environment's interpreter with `--device_python` and the
device phase runs there as a separate process, as it would on a board.
`--micro_budget_kib 128` exports a train step that fits in 128 KiB of TFLite
Micro arena (only the last layer learns, with SGD; see "Training in 128 KB"
below) and prints the measured arena next to the budget.

```
python examples/on_device_finetune.py
python examples/on_device_finetune.py --runtime micro --shift invert
python examples/on_device_finetune.py --runtime micro --micro_budget_kib 128
python examples/on_device_finetune.py --runtime tflite_runtime \\
    --device_python .venv-tflite/bin/python
python examples/on_device_finetune.py --dataset fashion_mnist --hidden 1000 \\
    --max_examples 20000 --device_examples 2000 --replay 1000
```
"""

"""
## Setup
"""

import os
import subprocess
import tempfile
import time

from example_flags import check_flags  # absl only: the flags are checked first
from example_flags import parse_flags
from example_flags import require_positive
from keras_spela_device import DeviceTrainer  # noqa: E402  (numpy only)

from absl import app
from absl import flags
from absl import logging
import numpy as np


FLAGS = flags.FLAGS
flags.DEFINE_string(
    "dataset",
    "digits",
    "'digits' (embedded, no download) or a name of "
    "keras_spela.datasets.SUPPORTED_TFDS_DATASETS (mnist, fashion_mnist, cifar10, ...).",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "TFDS data directory, or for fashion_mnist a directory with its four .gz files.",
)
flags.DEFINE_integer(
    "max_examples",
    0,
    "Other than digits: use the first N training and test examples; 0 = all.",
    lower_bound=0,
)
flags.DEFINE_enum(
    "shift",
    "rotate90",
    ["rotate90", "invert", "new_classes"],
    "What is new on the device: digits rotated by 90 degrees, inverted images, "
    "or the last --new_classes classes (held out of pre-training).",
)
flags.DEFINE_integer(
    "new_classes", 2, "Number of held-out classes of --shift new_classes.", lower_bound=1
)
flags.DEFINE_integer("hidden", 256, "Units of the hidden SPELA layer.", lower_bound=1)
flags.DEFINE_integer("last", 34, "Units of the last SPELA layer.", lower_bound=1)
flags.DEFINE_integer("host_epochs", 10, "Pre-training epochs on the host.", lower_bound=1)
flags.DEFINE_integer(
    "device_examples", 400, "Training examples that only the device sees.", lower_bound=1
)
flags.DEFINE_integer(
    "replay", 200, "Host examples stored on the device and mixed in.", lower_bound=0
)
flags.DEFINE_integer("device_epochs", 5, "Fine-tuning epochs on the device.", lower_bound=1)
flags.DEFINE_integer(
    "batch_size", 16, "Static batch size of the exported train step.", lower_bound=1
)
flags.DEFINE_enum("device_optimizer", "adam", ["adam", "sgd"], "Optimizer inside the model.")
flags.DEFINE_float("device_learning_rate", 1e-2, "Learning rate inside the model.")
require_positive("device_learning_rate")
flags.DEFINE_enum(
    "runtime",
    "litert",
    ["litert", "tflite_runtime", "micro", "litert_compiled"],
    "Device runtime (litert_compiled: LiteRT's CompiledModel API).",
)
flags.DEFINE_float(
    "micro_budget_kib",
    None,
    "Fit the TFLite Micro train step in this many KiB of arena (e.g. 128): only the "
    "last SPELA layer learns, with SGD 1.0, batch 8 and 20 device epochs (measured by "
    "benchmarks/micro_budget.py); --batch_size, --device_optimizer, "
    "--device_learning_rate and --device_epochs still win when given. Prints the "
    "measured arena next to the budget and stops with an error line when it is over.",
)
require_positive("micro_budget_kib")
flags.DEFINE_string(
    "device_python",
    None,
    "Run the device phase with this Python interpreter (an environment without "
    "TensorFlow, e.g. .venv-tflite/bin/python for tflite_runtime).",
)
flags.DEFINE_string(
    "output_dir",
    os.path.join(tempfile.gettempdir(), "spela_on_device"),
    "Where the exported models, the device data and the learned weights go.",
)
flags.DEFINE_integer("seed", 0, "Seed of the split, the weights and the shuffling.", lower_bound=0)
flags.DEFINE_bool(
    "verbose",
    False,
    "Show TensorFlow's, the converter's and the runtimes' own log lines "
    "(captured by default, shown only when a step fails).",
)


check_flags(__name__)  # a bad flag ends here, before TensorFlow is imported

from example_setup import REPO  # TensorFlow, Keras and keras_spela, quietly
from example_setup import capture_native_stderr
from example_setup import keras
from example_setup import keras_spela

from keras_spela import SpelaDense
from keras_spela import SpelaModel

"""
## Data: what the host sees, and what only the device sees

The training split is cut in two at random: `--device_examples` examples belong
to the device, the rest to the host. The host pre-trains on its part as it is.
The device's part goes through the shift. The device also keeps `--replay` of
the host's examples (unshifted), a common guard against forgetting.

We measure on two test sets: the **new** one (the shifted test images, or the
test images of the held-out classes) and the **old** one (the test images as the
host knew them, or those of the pre-training classes).
"""


def load_images():
    """Train and test images `(N, height, width, channels)` in [0, 1], labels."""
    if FLAGS.dataset == "digits":
        (x, y), (x_test, y_test) = keras_spela.datasets.load_digits(flatten=False)
        return (x, y), (x_test, y_test), keras_spela.datasets.DIGITS_NUM_CLASSES
    spec = keras_spela.datasets.dataset_spec(FLAGS.dataset)
    try:
        if FLAGS.dataset == "fashion_mnist":  # the IDX files, offline where they are installed
            train, test = keras_spela.datasets.load_fashion_mnist(
                data_dir=FLAGS.data_dir, normalize=True, channel_axis=True
            )
            if FLAGS.max_examples > 0:
                n = FLAGS.max_examples
                train, test = (train[0][:n], train[1][:n]), (test[0][:n], test[1][:n])
            return train, test, spec.num_classes

        def split(name):
            return f"{name}[:{FLAGS.max_examples}]" if FLAGS.max_examples > 0 else name

        kwargs = dict(data_dir=FLAGS.data_dir, flatten=False)
        train = keras_spela.datasets.load_tfds_numpy(FLAGS.dataset, split("train"), **kwargs)
        test = keras_spela.datasets.load_tfds_numpy(FLAGS.dataset, split("test"), **kwargs)
    except keras_spela.datasets.DatasetError as error:
        raise SystemExit(f"error: {error}") from None
    return train, test, spec.num_classes


def shift(x):
    """The change the device sees, on a batch of images."""
    if FLAGS.shift == "rotate90":
        return np.ascontiguousarray(np.rot90(x, k=1, axes=(1, 2)))
    if FLAGS.shift == "invert":
        return 1.0 - x
    return x


def make_splits(train, test, num_classes):
    (x, y), (x_test, y_test) = train, test
    rng = np.random.default_rng(FLAGS.seed)
    order = rng.permutation(len(x))
    device, host = order[: FLAGS.device_examples], order[FLAGS.device_examples :]
    if FLAGS.shift == "new_classes":
        first_new = num_classes - FLAGS.new_classes
        host = host[y[host] < first_new]  # the host never sees the new classes
        new, old = y_test >= first_new, y_test < first_new
        tests = {
            "new": (x_test[new], y_test[new]),
            "old": (x_test[old], y_test[old]),
        }
    else:
        tests = {"new": (shift(x_test), y_test), "old": (x_test, y_test)}
    replay = host[: FLAGS.replay]
    device_x = np.concatenate([shift(x[device]), x[replay]]).astype("float32")
    device_y = np.concatenate([y[device], y[replay]]).astype("int32")
    return (x[host], y[host]), (device_x, device_y), tests


"""
## The host: pre-training with Keras

A `Flatten` layer, then two `SpelaDense` layers. `Flatten` is a plain Keras
layer: it runs forward and is exported along with the rest, so the device model
takes images as they are. The library defaults are used (softmax-cosine local
loss, Adam(1e-2)).
"""


def pretrain(x, y, num_classes):
    model = SpelaModel(
        [
            keras.Input(x.shape[1:]),
            keras.layers.Flatten(),
            SpelaDense(FLAGS.hidden, name="hidden"),
            SpelaDense(FLAGS.last, name="last"),
        ],
        num_classes=num_classes,
    )
    model.compile()
    model.fit(x, y, epochs=FLAGS.host_epochs, batch_size=50, verbose=0)
    return model


def host_accuracy(model, tests):
    """{test set: {exit_<k>: accuracy}}, with the exit names of the device."""
    results = {}
    for name, (x, y) in tests.items():
        logs = model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
        results[name] = {
            f"exit_{k}": logs[f"{layer.name}_accuracy"] for k, layer in enumerate(model.exit_layers)
        }
    return results


"""
## Training in 128 KB: what learns, and with what

A TFLite Micro arena holds what changes: the learned weights, their optimizer
state, one batch's activations, and about 100 bytes of bookkeeping per
operator. Layers that do not learn on the device are constants, which stay in
the model file (flash on a microcontroller; float32, since TFLite Micro has no
hybrid float/int8 kernels). `--micro_budget_kib 128` exports the settings that
`benchmarks/micro_budget.py` measured for this job: only the last layer learns
(`train_layers=1`: its 34 KiB of weights), plain SGD (no optimizer state) at a
learning rate of 1.0, batch 8, and 20 device epochs instead of 5 (steps cost
time, not arena). The train step then needs 92 KiB of arena instead of
464 KiB, and reaches the rotated digits within 2 points of the default
LiteRT fine-tune (every layer, Adam, 5 epochs): 93.2 % against 94.6 %, mean
of 3 seeds. Adam on the last layer alone learns as well in 5 epochs but needs
186 KiB: its two slots triple the learned bytes.
"""

# What --micro_budget_kib exports (benchmarks/micro_budget.py, row 4).
MICRO_BUDGET_SETTINGS = {
    "batch_size": 8,
    "device_optimizer": "sgd",
    "device_learning_rate": 1.0,
    "device_epochs": 20,
}
MICRO_BUDGET_TRAIN_LAYERS = 1  # the last SPELA layer


def apply_micro_budget():
    """Sets the flags of `MICRO_BUDGET_SETTINGS` that the command line did not
    give when `--micro_budget_kib` is set; returns the export's `train_layers`."""
    if FLAGS.micro_budget_kib is None:
        return "all"
    for name, value in MICRO_BUDGET_SETTINGS.items():
        if not FLAGS[name].present:
            setattr(FLAGS, name, value)
    return MICRO_BUDGET_TRAIN_LAYERS


def check_micro_budget(arena_bytes):
    """Prints the measured arena next to `--micro_budget_kib`; stops when over."""
    if FLAGS.micro_budget_kib is None:
        return
    budget = int(FLAGS.micro_budget_kib * 1024)
    if arena_bytes is None:
        print(
            f"TFLite Micro arena not measured (tflite-micro is not installed); "
            f"budget {FLAGS.micro_budget_kib:g} KiB"
        )
        return
    verdict = "within" if arena_bytes <= budget else "OVER"
    print(
        f"TFLite Micro arena {arena_bytes / 1024:.1f} KiB ({arena_bytes:,} bytes), "
        f"budget {FLAGS.micro_budget_kib:g} KiB ({budget:,} bytes): {verdict} the budget"
    )
    if arena_bytes > budget:
        raise SystemExit(
            f"error: the train step needs {arena_bytes:,} bytes of TFLite Micro arena, over "
            f"--micro_budget_kib {FLAGS.micro_budget_kib:g} ({budget:,} bytes)"
        )


"""
## Export

`export_tflite` writes the four signatures; `train` has a static batch size,
and rejects a batch with a NaN/inf input or a label outside `[0, num_classes)`
(it returns `accepted = 0` and changes nothing). The optimizer runs inside the
model with float32 state, which `get_weights` returns along with the weights.
`export_tflite_micro` writes the same train step as a single-graph model for
TFLite Micro, an inference model, and a JSON description (input order, arena
size). Both files are checked to hold builtin operators only.
"""


def export(model, train_layers):
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    optimizer = keras_spela.DeviceOptimizer(FLAGS.device_optimizer, FLAGS.device_learning_rate)
    with capture_native_stderr(not FLAGS.verbose):  # the converter's C++ lines
        litert = keras_spela.export_tflite(
            model,
            os.path.join(FLAGS.output_dir, "spela.tflite"),
            batch_size=FLAGS.batch_size,
            optimizer=optimizer,
            train_layers=train_layers,
        )
    print(
        f"exported {litert.path}: {litert.size_bytes / 1024:.0f} KiB, "
        f"{sum(litert.operators.values())} builtin operators "
        f"({len(litert.operators)} kinds), signatures train/infer/get_weights/set_weights"
    )
    with capture_native_stderr(not FLAGS.verbose):
        micro = keras_spela.export_tflite_micro(
            model,
            os.path.join(FLAGS.output_dir, "spela_micro.tflite"),
            batch_size=FLAGS.batch_size,
            optimizer=optimizer,
            train_layers=train_layers,
        )
    arena = "not measured" if micro.arena_bytes is None else f"{micro.arena_bytes / 1024:.0f} KiB"
    print(
        f"exported {micro.path}: {micro.size_bytes / 1024:.0f} KiB, TFLite Micro "
        f"arena {arena}, inputs {micro.inputs}"
    )
    check_micro_budget(micro.arena_bytes)
    return litert.path, micro.path


"""
## The device: fine-tuning on the runtime

`DeviceTrainer` drives the exported model through its signatures (LiteRT,
tflite-runtime) or through the single-graph step (TFLite Micro), with numpy
only. `fit` cuts the data into batches of exactly the exported batch size.
A TFLite Micro model reports the last exit only, and keeps its weights in its
arena (it has no `set_weights`), so the restart step is shown for the
signature runtimes.
"""


def device_accuracy(trainer, tests):
    return {
        name: {key[: -len("_accuracy")]: value for key, value in trainer.evaluate(x, y).items()}
        for name, (x, y) in tests.items()
    }


def check_runtime():
    """Fails early when the chosen runtime cannot run in this process."""
    if FLAGS.device_python or FLAGS.runtime != "tflite_runtime":
        return
    try:
        import tflite_runtime.interpreter  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            f"tflite_runtime cannot be imported here ({error}). tflite-runtime "
            "2.14 needs numpy<2 and TensorFlow 2.21 needs numpy>=2: install it in "
            "its own environment (bash tools/install.sh tests makes .venv-tflite) "
            "and pass --device_python=.venv-tflite/bin/python."
        ) from None


def finetune_in_process(model_path, device_data, tests):
    trainer = DeviceTrainer(model_path, runtime=FLAGS.runtime, quiet=not FLAGS.verbose)
    print(f"device runtime: {trainer.runtime}, batch {trainer.batch_size}, exits {trainer.exits}")
    before = device_accuracy(trainer, tests)
    start = time.perf_counter()
    trainer.fit(*device_data, epochs=FLAGS.device_epochs, seed=FLAGS.seed, verbose=1)
    seconds = time.perf_counter() - start
    after = device_accuracy(trainer, tests)
    print(f"fine-tuned on the device in {seconds:.2f} s")
    if trainer.runtime != "micro":
        restart(trainer, model_path, tests, after)
    return before, after


def restart(trainer, model_path, tests, after):
    """Saves the learned weights, loads a fresh model, restores them."""
    path = os.path.join(FLAGS.output_dir, "personal_weights.npz")
    trainer.save_weights(path)  # get_weights -> file
    fresh = DeviceTrainer(model_path, runtime=FLAGS.runtime, quiet=not FLAGS.verbose)
    fresh.load_weights(path)  # file -> set_weights
    restored = device_accuracy(fresh, tests)
    same = restored == after
    print(f"saved {path}; a freshly loaded model with these weights: same accuracy: {same}")


def finetune_in_subprocess(model_path, litert_path, device_data, tests):
    """Runs export/device_trainer.py with --device_python, then reads back the
    weights it saved to measure both test sets here (LiteRT, in process, with
    the LiteRT export: a micro step has no get_weights/set_weights)."""
    data_path = os.path.join(FLAGS.output_dir, "device_data.npz")
    x_new, y_new = tests["new"]
    np.savez(data_path, x_train=device_data[0], y_train=device_data[1], x_test=x_new, y_test=y_new)
    weights_path = os.path.join(FLAGS.output_dir, "personal_weights.npz")
    command = [
        FLAGS.device_python,
        str(REPO / "export" / "device_trainer.py"),
        "--model",
        model_path,
        "--data",
        data_path,
        "--runtime",
        FLAGS.runtime,
        "--epochs",
        str(FLAGS.device_epochs),
        "--seed",
        str(FLAGS.seed),
    ]
    if FLAGS.runtime != "micro":
        command += ["--save_weights", weights_path]
    if FLAGS.verbose:
        command += ["--verbose"]
    print("$ " + " ".join(command), flush=True)
    before = device_accuracy(
        DeviceTrainer(litert_path, runtime="litert", quiet=not FLAGS.verbose), tests
    )
    if subprocess.run(command).returncode != 0:
        raise SystemExit("the device phase failed; its error is the line above")
    if FLAGS.runtime == "micro":
        return before, None
    reader = DeviceTrainer(litert_path, runtime="litert", quiet=not FLAGS.verbose)
    reader.load_weights(weights_path)
    return before, device_accuracy(reader, tests)


"""
## Run
"""


def print_table(rows):
    """rows: {stage: {test set: {exit: accuracy}}}."""
    exits = sorted({e for stage in rows.values() for t in stage.values() for e in t})
    header = f"{'':32s}" + "".join(f"{t + ' ' + e:>16s}" for t in ("new", "old") for e in exits)
    print(header)
    for stage, results in rows.items():
        cells = [results.get(t, {}).get(e) for t in ("new", "old") for e in exits]
        print(
            f"{stage:32s}"
            + "".join(f"{'-' if c is None else f'{100 * c:.2f}%':>16s}" for c in cells)
        )


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO logs are noise here
    check_runtime()
    train_layers = apply_micro_budget()
    start = time.perf_counter()
    keras.utils.set_random_seed(FLAGS.seed)
    train, test, num_classes = load_images()
    host_data, device_data, tests = make_splits(train, test, num_classes)
    print(
        f"{FLAGS.dataset}, shift {FLAGS.shift}: host pre-trains on {len(host_data[0])} "
        f"examples; the device fine-tunes on {len(device_data[0])} "
        f"({len(device_data[0]) - min(FLAGS.replay, len(host_data[0]))} new "
        f"+ {min(FLAGS.replay, len(host_data[0]))} replayed)"
    )

    model = pretrain(*host_data, num_classes)
    rows = {"host (Keras)": host_accuracy(model, tests)}
    litert_path, micro_path = export(model, train_layers)
    model_path = micro_path if FLAGS.runtime == "micro" else litert_path

    if FLAGS.device_python:
        before, after = finetune_in_subprocess(model_path, litert_path, device_data, tests)
    else:
        before, after = finetune_in_process(model_path, device_data, tests)
    rows[f"device before ({FLAGS.runtime})"] = before
    if after is not None:
        rows[f"device after ({FLAGS.runtime})"] = after
    new_name = "held-out classes" if FLAGS.shift == "new_classes" else f"{FLAGS.shift} test"
    print(f"\ntest accuracy per exit (new = {new_name}, old = the host's task):")
    print_table(rows)
    print(f"done in {time.perf_counter() - start:.1f} s; files in {FLAGS.output_dir}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
