"""The two command lines, export/export_tflite.py and export/device_trainer.py:
every user mistake ends with ONE clear line on stderr and a non-zero exit
code, never a traceback; a good run prints its own lines only (TensorFlow's,
the converter's and LiteRT's C++ log lines are captured).

Each user mistake runs through the command's own `main` in this process (argument
parsing included); a real process of each command (marked slow) shows that a mistake is
one line and a good run prints its own lines only.
"""

import contextlib
import importlib.util
import io
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela_device import cli as device_cli_module

# Fixtures that export models: the tests that use them are `slow` (tests/conftest.py).
EXPORTING_FIXTURES = ("files",)

REPO = pathlib.Path(__file__).resolve().parents[2]
EXPORT_CLI = REPO / "export" / "export_tflite.py"
DEVICE_CLI = REPO / "export" / "device_trainer.py"
BATCH = 8


def run(script, *args, cwd=None):
    """Runs a CLI as a user would: no TF_CPP_MIN_LOG_LEVEL of the tests."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    # The checkout's keras_spela, also where another one is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + env.get("PYTHONPATH", "").split(os.pathsep))
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )


def _in_process(main, *args):
    """Runs a command's `main(args)` here: its exit code (or SystemExit's) and what it
    printed, as a `CompletedProcess`."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def device_cli(*args):
    """export/device_trainer.py's `main` (keras_spela_device.cli) run in this process."""
    return _in_process(device_cli_module.main, *args)


def _export_cli_module():
    """export/export_tflite.py imported once (its absl flags are defined at import)."""
    if "export_tflite" not in sys.modules:
        spec = importlib.util.spec_from_file_location("export_tflite", EXPORT_CLI)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["export_tflite"] = module
    return sys.modules["export_tflite"]


def export_cli(*args):
    """export/export_tflite.py's flag parsing and `main` run in this process."""
    module = _export_cli_module()

    def main(argv):
        module.FLAGS.unparse_flags()
        return module.main(module._parse_flags([module.PROG, *argv]))

    return _in_process(main, *args)


def assert_one_line_error(result, match, code=None):
    """Non-zero exit, no traceback, and stderr's last line names the problem."""
    output = f"exit code {result.returncode}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode != 0, output
    if code is not None:
        assert result.returncode == code, output
    assert "Traceback" not in result.stderr, output
    lines = result.stderr.strip().splitlines()
    assert lines, output
    assert "error:" in lines[-1], output
    assert re.search(match, lines[-1]), f"{match!r} not in the last line\n{output}"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved SpelaModel, its exports, a plain Keras model, data files."""
    out = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = SpelaModel(
        [keras.Input((64,)), SpelaDense(32, name="hidden"), SpelaDense(16, name="last")],
        num_classes=10,
    )
    model.compile()
    paths = {"dir": out}
    paths["spela.keras"] = out / "spela.keras"
    model.save(paths["spela.keras"])
    paths["plain.keras"] = out / "plain.keras"
    keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)]).save(paths["plain.keras"])
    paths["lite"] = pathlib.Path(
        keras_spela.export_tflite(model, str(out / "lite.tflite"), batch_size=BATCH).path
    )
    paths["micro"] = pathlib.Path(
        keras_spela.export_tflite_micro(model, str(out / "micro.tflite"), batch_size=BATCH).path
    )
    paths["random.keras"] = out / "random.keras"
    paths["random.keras"].write_bytes(np.random.default_rng(0).bytes(3000))
    paths["zip.keras"] = out / "zip.keras"
    with zipfile.ZipFile(paths["zip.keras"], "w") as archive:
        archive.writestr("hello.txt", "not a model")

    (x, y), (x_test, y_test) = keras_spela.datasets.load_digits()
    x, y = x[: 6 * BATCH], y[: 6 * BATCH]

    def data(name, **arrays):
        paths[name] = out / name
        np.savez(paths[name], **arrays)

    data("data.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    data("wrong_keys.npz", x=x, y=y)
    data("typo_key.npz", x_train=x, y_train=y, x_tset=x_test, y_test=y_test)
    data("x_test_alone.npz", x_train=x, y_train=y, x_test=x_test)
    data("bad_labels.npz", x_train=x, y_train=y + 10)
    data("float_labels.npz", x_train=x, y_train=y.astype(np.float32))
    data("bad_shape.npz", x_train=x[:, :63], y_train=y)
    data("int_images.npz", x_train=(x * 16).astype(np.int64), y_train=y)
    data("nan.npz", x_train=np.where(np.arange(64) == 3, np.nan, x), y_train=y)
    data("bad_test.npz", x_train=x, y_train=y, x_test=x_test[:, :10], y_test=y_test)
    data("few.npz", x_train=x[: BATCH - 3], y_train=y[: BATCH - 3])
    # Finite but so large that the layer overflows: the model rejects it.
    data("huge.npz", x_train=np.full((2 * BATCH, 64), 3e38, np.float32), y_train=y[: 2 * BATCH])
    data("bad_weights.npz", foo=np.zeros(3))
    paths["array.npy"] = out / "array.npy"
    np.save(paths["array.npy"], x)
    paths["text.npz"] = out / "text.npz"
    paths["text.npz"].write_text("x_train,y_train\n")
    paths["missing"] = out / "missing.tflite"
    return paths


# ----------------------------------------------------- device_trainer.py
DEVICE_CASES = {
    # name: (arguments, what the last line must say, exit code)
    "no arguments": (lambda p: [], "required: --model, --data", 2),
    "missing model": (
        lambda p: ["--model", p["missing"], "--data", p["data.npz"]],
        "missing.tflite: the model file does not exist",
        1,
    ),
    "model is a directory": (
        lambda p: ["--model", p["dir"], "--data", p["data.npz"]],
        "not a file",
        1,
    ),
    "model is a .keras file": (
        lambda p: ["--model", p["spela.keras"], "--data", p["data.npz"]],
        r"spela.keras: it is a zip archive \(a saved .keras model\?\)",
        1,
    ),
    "model is random bytes": (
        lambda p: ["--model", p["random.keras"], "--data", p["data.npz"]],
        "TFL3",
        1,
    ),
    "micro model with litert": (
        lambda p: ["--model", p["micro"], "--data", p["data.npz"], "--runtime", "litert"],
        "runtime='micro'",
        1,
    ),
    "litert model with micro": (
        lambda p: ["--model", p["lite"], "--data", p["data.npz"], "--runtime", "micro"],
        "not a TFLite Micro train step",
        1,
    ),
    "unknown runtime": (
        lambda p: ["--model", p["lite"], "--data", p["data.npz"], "--runtime", "gpu"],
        "--runtime: invalid choice: 'gpu'",
        2,
    ),
    "epochs 0": (
        lambda p: ["--model", p["lite"], "--data", p["data.npz"], "--epochs", "0"],
        "--epochs: must be a positive integer, received 0",
        2,
    ),
    "negative epochs": (
        lambda p: ["--model", p["lite"], "--data", p["data.npz"], "--epochs", "-2"],
        "--epochs: must be a positive integer",
        2,
    ),
    "epochs not a number": (
        lambda p: ["--model", p["lite"], "--data", p["data.npz"], "--epochs", "two"],
        "--epochs: must be a positive integer, received 'two'",
        2,
    ),
    "negative seed": (
        lambda p: ["--model", p["lite"], "--data", p["data.npz"], "--seed", "-1"],
        "--seed: must be a non-negative integer",
        2,
    ),
    "zero threads": (
        lambda p: ["--model", p["lite"], "--data", p["data.npz"], "--num_threads", "0"],
        "--num_threads",
        2,
    ),
    "missing data": (
        lambda p: ["--model", p["lite"], "--data", p["dir"] / "nope.npz"],
        "nope.npz: the --data file does not exist",
        1,
    ),
    "data with wrong keys": (
        lambda p: ["--model", p["lite"], "--data", p["wrong_keys.npz"]],
        r"holds \['x', 'y'\]; it needs x_train and y_train",
        1,
    ),
    "data with a typo key": (
        lambda p: ["--model", p["lite"], "--data", p["typo_key.npz"]],
        r"unknown keys \['x_tset'\]",
        1,
    ),
    "x_test without y_test": (
        lambda p: ["--model", p["lite"], "--data", p["x_test_alone.npz"]],
        "x_test and y_test go together",
        1,
    ),
    "data is an .npy file": (
        lambda p: ["--model", p["lite"], "--data", p["array.npy"]],
        "array.npy: .*not an .npz archive",
        1,
    ),
    "data is text": (
        lambda p: ["--model", p["lite"], "--data", p["text.npz"]],
        "text.npz: .*not an .npz archive",
        1,
    ),
    "labels out of range": (
        lambda p: ["--model", p["lite"], "--data", p["bad_labels.npz"]],
        r"bad_labels.npz: x_train/y_train: Labels must be in \[0, 10\)",
        1,
    ),
    "float labels": (
        lambda p: ["--model", p["lite"], "--data", p["float_labels.npz"]],
        "y_train: Labels must be integer",
        1,
    ),
    "wrong image shape": (
        lambda p: ["--model", p["lite"], "--data", p["bad_shape.npz"]],
        r"x_train/y_train: x must have shape \(batch, 64\)",
        1,
    ),
    "integer images": (
        lambda p: ["--model", p["lite"], "--data", p["int_images.npz"]],
        "x_train/y_train: x must hold floating-point",
        1,
    ),
    "NaN in x": (
        lambda p: ["--model", p["lite"], "--data", p["nan.npz"]],
        "x_train/y_train: x contains NaN",
        1,
    ),
    "bad test split": (
        lambda p: ["--model", p["lite"], "--data", p["bad_test.npz"]],
        "x_test/y_test: x must have shape",
        1,
    ),
    "rejected batch": (
        lambda p: ["--model", p["lite"], "--data", p["huge.npz"]],
        r"huge.npz: Epoch 1/1, step 1/2: The device model rejected the batch",
        1,
    ),
    "missing weights file": (
        lambda p: [
            "--model",
            p["lite"],
            "--data",
            p["data.npz"],
            "--load_weights",
            p["dir"] / "nope.npz",
        ],
        "nope.npz: the weights file does not exist",
        1,
    ),
    "weights of another model": (
        lambda p: [
            "--model",
            p["lite"],
            "--data",
            p["data.npz"],
            "--load_weights",
            p["bad_weights.npz"],
        ],
        r"bad_weights.npz: set_weights needs exactly the names .*unknown \['foo'\]",
        1,
    ),
    "weights file not npz": (
        lambda p: ["--model", p["lite"], "--data", p["data.npz"], "--load_weights", p["array.npy"]],
        "array.npy: the weights file holds one .npy array",
        1,
    ),
    "save into a missing directory": (
        lambda p: [
            "--model",
            p["lite"],
            "--data",
            p["data.npz"],
            "--save_weights",
            p["dir"] / "no" / "w.npz",
        ],
        "--save_weights .*does not exist",
        1,
    ),
    "micro model, load weights": (
        lambda p: [
            "--model",
            p["micro"],
            "--data",
            p["data.npz"],
            "--load_weights",
            p["bad_weights.npz"],
        ],
        "--load_weights: TFLite Micro models have no set_weights",
        1,
    ),
    "micro model, save weights": (
        lambda p: [
            "--model",
            p["micro"],
            "--data",
            p["data.npz"],
            "--save_weights",
            p["dir"] / "w.npz",
        ],
        "expose_weights=True",
        1,
    ),
    "micro model without description": (
        lambda p: [
            "--model",
            p["micro"],
            "--data",
            p["data.npz"],
            "--description",
            p["dir"] / "none.json",
        ],
        "none.json .*no description found",
        1,
    ),
    "micro model, foreign description": (
        lambda p: ["--model", p["micro"], "--data", p["data.npz"], "--description", p["data.npz"]],
        "data.npz .*not valid JSON",
        1,
    ),
}


@pytest.mark.parametrize("case", sorted(DEVICE_CASES))
def test_device_cli_user_errors(files, case):
    arguments, match, code = DEVICE_CASES[case]
    assert_one_line_error(device_cli(*arguments(files)), match, code)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no arguments", "labels out of range"])
def test_device_cli_user_error_in_a_real_process(files, case):
    arguments, match, code = DEVICE_CASES[case]
    assert_one_line_error(run(DEVICE_CLI, *arguments(files)), match, code)


@pytest.mark.slow
def test_device_cli_good_run_prints_only_its_own_lines(files, tmp_path):
    weights = tmp_path / "w.npz"
    result = run(
        DEVICE_CLI,
        "--model",
        files["lite"],
        "--data",
        files["data.npz"],
        "--epochs",
        "2",
        "--save_weights",
        weights,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr  # no 'INFO: Created TensorFlow Lite XNNPACK ...'
    lines = result.stdout.splitlines()
    assert lines[0].startswith("runtime litert, batch 8")
    assert lines[1].startswith("before:") and lines[-2].startswith("after:")
    assert [l.split(" - ")[0] for l in lines if l.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]
    assert lines[-1] == f"saved weights to {weights}"
    assert len(lines) == 6
    result = run(DEVICE_CLI, "--model", files["micro"], "--data", files["data.npz"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr
    assert result.stdout.startswith("runtime micro, batch 8")


def test_device_cli_trains_on_fewer_examples_than_a_batch(files):
    # The short batch is padded with rows labelled -1 (ignored by the model).
    result = device_cli("--model", files["lite"], "--data", files["few.npz"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/1 - 1 steps" in result.stdout, result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", ["console script", "python -m"])
def test_device_cli_is_the_package_command(files, command):
    """export/device_trainer.py is the device package's command: the
    `keras-spela-device` console script and `python -m keras_spela_device.cli`
    print the same lines and errors."""
    argv = (
        [str(pathlib.Path(sys.executable).parent / "keras-spela-device")]
        if command == "console script"
        else [sys.executable, "-m", "keras_spela_device.cli"]
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    good = subprocess.run(
        argv + ["--model", str(files["lite"]), "--data", str(files["data.npz"])],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    script = run(DEVICE_CLI, "--model", files["lite"], "--data", files["data.npz"])
    assert good.returncode == 0 and good.stderr == "", good.stderr[-3000:]
    assert [l.split(" - ")[0] for l in good.stdout.splitlines()] == [
        l.split(" - ")[0] for l in script.stdout.splitlines()
    ]
    bad = subprocess.run(
        argv
        + ["--model", str(files["micro"]), "--data", str(files["data.npz"]), "--runtime", "litert"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert_one_line_error(bad, r"^keras-spela-device: error: .*runtime='micro'", 1)


def test_device_cli_verbose_is_accepted(files):
    result = device_cli("--model", files["lite"], "--data", files["data.npz"], "--verbose")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "after:" in result.stdout


# ------------------------------------------------------- export_tflite.py
EXPORT_CASES = {
    "no arguments": (lambda p: [], "--model must have a value", 2),
    "no output": (lambda p: ["--model", p["spela.keras"]], "--output must have a value", 2),
    "missing model": (
        lambda p: ["--model", p["dir"] / "nope.keras", "--output", p["dir"] / "o.tflite"],
        "--model .*nope.keras: no such file",
        1,
    ),
    "model is a directory": (
        lambda p: ["--model", p["dir"], "--output", p["dir"] / "o.tflite"],
        "not a file",
        1,
    ),
    "model is a .tflite": (
        lambda p: ["--model", p["lite"], "--output", p["dir"] / "o.tflite"],
        "is an exported .tflite model; --model takes the .keras file",
        1,
    ),
    "model is random bytes": (
        lambda p: ["--model", p["random.keras"], "--output", p["dir"] / "o.tflite"],
        "random.keras: not a .keras zip archive",
        1,
    ),
    "negative batch size": (
        lambda p: [
            "--model",
            p["spela.keras"],
            "--output",
            p["dir"] / "o.tflite",
            "--batch_size",
            "-4",
        ],
        "--batch_size=-4: -4 is not a positive integer",
        2,
    ),
    "batch size 0": (
        lambda p: [
            "--model",
            p["spela.keras"],
            "--output",
            p["dir"] / "o.tflite",
            "--batch_size=0",
        ],
        "--batch_size=0: 0 is not a positive integer",
        2,
    ),
    "batch size not a number": (
        lambda p: [
            "--model",
            p["spela.keras"],
            "--output",
            p["dir"] / "o.tflite",
            "--batch_size",
            "many",
        ],
        "--batch_size=many",
        2,
    ),
    "negative learning rate": (
        lambda p: [
            "--model",
            p["spela.keras"],
            "--output",
            p["dir"] / "o.tflite",
            "--learning_rate=-0.1",
        ],
        "--learning_rate must be a positive number",
        2,
    ),
    "unknown optimizer": (
        lambda p: [
            "--model",
            p["spela.keras"],
            "--output",
            p["dir"] / "o.tflite",
            "--optimizer",
            "rmsprop",
        ],
        "--optimizer=rmsprop: value should be one of",
        2,
    ),
    "momentum above 1": (
        lambda p: [
            "--model",
            p["spela.keras"],
            "--output",
            p["dir"] / "o.tflite",
            "--momentum",
            "1.5",
        ],
        "--momentum=1.5",
        2,
    ),
    "unknown flag": (
        lambda p: ["--model", p["spela.keras"], "--output", p["dir"] / "o.tflite", "--epochs", "3"],
        "Unknown command line flag 'epochs'",
        2,
    ),
    "stray argument": (
        lambda p: ["--model", p["spela.keras"], "--output", p["dir"] / "o.tflite", "extra"],
        r"unexpected arguments \['extra'\]",
        1,
    ),
    "output is a directory": (
        lambda p: ["--model", p["spela.keras"], "--output", p["dir"]],
        "--output .*is a directory",
        1,
    ),
    "output overwrites the model": (
        lambda p: ["--model", p["spela.keras"], "--output", p["spela.keras"]],
        "would overwrite --model",
        1,
    ),
    "micro output is the output": (
        lambda p: [
            "--model",
            p["spela.keras"],
            "--output",
            p["dir"] / "o.tflite",
            "--micro_output",
            p["dir"] / "o.tflite",
        ],
        "the same file",
        1,
    ),
    # These load TensorFlow and Keras in the child.
    "plain Keras model": (
        lambda p: ["--model", p["plain.keras"], "--output", p["dir"] / "o.tflite"],
        "plain.keras: holds a Sequential, not a keras_spela SpelaModel",
        1,
    ),
    "zip that is no model": (
        lambda p: ["--model", p["zip.keras"], "--output", p["dir"] / "o.tflite"],
        "zip.keras: cannot be loaded as a Keras model",
        1,
    ),
    "unknown train layer": (
        lambda p: [
            "--model",
            p["spela.keras"],
            "--output",
            p["dir"] / "o.tflite",
            "--train_layers",
            "hiden",
        ],
        r"cannot export .*train_layers.*\['hiden'\]",
        1,
    ),
    "unwritable output": (
        lambda p: ["--model", p["spela.keras"], "--output", "/proc/no_such_dir/o.tflite"],
        "--output /proc/no_such_dir/o.tflite: cannot be written",
        1,
    ),
}


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_export_cli_user_errors(files, case):
    arguments, match, code = EXPORT_CASES[case]
    result = export_cli(*arguments(files))
    assert_one_line_error(result, match, code)
    assert not (files["dir"] / "o.tflite").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no arguments", "plain Keras model"])
def test_export_cli_user_error_in_a_real_process(files, case):
    arguments, match, code = EXPORT_CASES[case]
    assert_one_line_error(run(EXPORT_CLI, *arguments(files)), match, code)
    assert not (files["dir"] / "o.tflite").exists()


@pytest.mark.slow
def test_export_cli_good_run_prints_only_its_own_lines(files, tmp_path):
    output, micro = tmp_path / "spela.tflite", tmp_path / "spela_micro.tflite"
    result = run(
        EXPORT_CLI,
        "--model",
        files["spela.keras"],
        "--output",
        output,
        "--micro_output",
        micro,
        "--optimizer",
        "adam",
        "--batch_size",
        "4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # No oneDNN / CUDA / cpu_feature_guard / absl / converter lines.
    assert result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"wrote {output}: ")
    assert any(l.startswith(f"wrote {micro}: ") for l in lines)
    assert len(lines) == 7, result.stdout
    assert output.exists() and micro.exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
