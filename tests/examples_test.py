"""The example scripts run as a user runs them (subprocesses, no TF_CPP_MIN_LOG_LEVEL of
the tests), at their smallest settings: examples/cifar_svhn_cnn.py on its offline default
(the canvas digits), on Fashion-MNIST's real files and on tfds mock data (cifar10,
svhn_cropped), examples/mnist_mlp.py on the embedded digits and Fashion-MNIST, and
examples/transfer_head.py (without and with its few-shot sweep and device fine-tuning, on
the digits and on tfds mock cifar10). Nothing is downloaded: a TFDS set that is not on the
machine, with its servers made unreachable, is one error line. Every example ends a bad
numeric flag with one error line."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CNN_EXAMPLE = EXAMPLES / "cifar_svhn_cnn.py"
# The example's test-only switch: tfds.testing.mock_data(num_examples=N) around the run.
MOCK_ENV = "KERAS_SPELA_EXAMPLE_MOCK_TFDS"
MOCK_EXAMPLES = 64
# TensorFlow's C++ log lines (glog/absl: "I0000 00:00:1796152149.301752 1803 file.cc:31] ...",
# "2026-12-01 19:00:00.000000: I tensorflow/...") and its usual notices.
TF_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |"
    r"oneDNN|cuda|TF_ENABLE_ONEDNN_OPTS|cpu_feature_guard|XLA|Logging error|Traceback",
    re.IGNORECASE,
)
EPOCH_LINE = r"^epoch +1/1 - train loss [0-9.]+ - test accuracy: "


def example_env(tmp_path):
    """The environment of an example's process: the checkout's keras_spela
    first, TensorFlow's log level as a user has it, and a writable
    matplotlib cache (Bazel's sandbox has a read-only home, and matplotlib
    says so on stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", MOCK_ENV)}
    # The checkout's keras_spela, also where another one is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + env.get("PYTHONPATH", "").split(os.pathsep))
    env["MPLCONFIGDIR"] = str(tmp_path)
    return env


def run(script, *args, cwd, env_update=None):
    env = example_env(cwd)
    env.update(env_update or {})
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True, text=True, timeout=600, env=env, cwd=cwd,
    )
    output = (
        f"exit code {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
        f"stderr:\n{result.stderr[-3000:]}"
    )
    assert result.returncode == 0, output
    return result, output


def exit_pattern(names):
    return " \\| ".join(rf"{name} [0-9.]+%" for name in names)


def assert_no_tensorflow_lines(result, output):
    noisy = [line for line in result.stderr.splitlines() if TF_LOG_LINE.search(line)]
    assert not noisy, f"TensorFlow log lines on stderr: {noisy[:5]}\n{output}"


def test_cnn_example_default_dataset_one_epoch(tmp_path):
    plot = tmp_path / "cnn.png"
    result, output = run(CNN_EXAMPLE, "--epochs", 1, "--plot", plot, cwd=tmp_path)
    names = ["conv1", "conv2", "d1", "d2"]
    out = result.stdout
    assert "digits_canvas: images (20, 20, 1) in [0, 1], 10 classes" in out, output
    assert "test x (360, 20, 20, 1), train x (1437, 20, 20, 1)" in out, output
    assert "conv 32-64 (5x5-3x3, pooled), dense 256-34" in out, output
    assert "conv1 (10, 10, 32) -> conv2 (5, 5, 64) -> flatten (1600,) -> d1 (256,)" in out, output
    assert re.search(EPOCH_LINE + exit_pattern(names) + "$", out, re.MULTILINE), output
    for k, name in enumerate(names):
        assert re.search(
            rf"^final test accuracy, exit {k} \({name}\): [0-9.]+%$", out, re.MULTILINE
        ), output
    assert plot.is_file() and plot.stat().st_size > 0, output
    assert_no_tensorflow_lines(result, output)
    assert not any(tmp_path.glob("spela_cnn_*.png")), "wrote the default plot besides --plot"


@pytest.mark.parametrize("dataset", ["cifar10", "svhn_cropped"])
def test_cnn_example_on_tfds_mock_data(tmp_path, dataset):
    result, output = run(
        CNN_EXAMPLE, "--dataset", dataset, "--epochs", 1, "--plot", tmp_path / "mock.png",
        cwd=tmp_path, env_update={MOCK_ENV: str(MOCK_EXAMPLES)},
    )
    out = result.stdout
    assert f"mocked: {MOCK_EXAMPLES} random examples per split" in out, output
    # The images are kept as (32, 32, 3), not flattened, through tf.data.
    assert f"{dataset}: images (32, 32, 3) in [0, 1], 10 classes" in out, output
    assert f"test x ({MOCK_EXAMPLES}, 32, 32, 3)" in out, output
    assert "train batches (None, 32, 32, 3) (tf.data)" in out, output
    # The default wide network of the TFDS sets.
    assert (
        "input (32, 32, 3) -> conv1 (16, 16, 64) -> conv2 (8, 8, 128) -> conv3 (4, 4, 256) "
        "-> flatten (4096,) -> d1 (256,) -> d2 (34,)"
    ) in out, output
    names = ["conv1", "conv2", "conv3", "d1", "d2"]
    assert re.search(EPOCH_LINE + exit_pattern(names) + "$", out, re.MULTILINE), output
    assert (tmp_path / "mock.png").is_file(), output
    assert_no_tensorflow_lines(result, output)


def test_cnn_example_on_fashion_mnist(tmp_path):
    plot = tmp_path / "fashion.png"
    result, output = run(
        CNN_EXAMPLE, "--dataset", "fashion_mnist", "--epochs", 1, "--max_examples", 100,
        "--plot", plot, cwd=tmp_path,
    )
    out = result.stdout
    assert "fashion_mnist: images (28, 28, 1) in [0, 1], 10 classes" in out, output
    assert "test x (100, 28, 28, 1), train x (100, 28, 28, 1)" in out, output
    assert "conv 32-64 (5x5-5x5, pooled), dense 256-34" in out, output
    assert "conv1 (14, 14, 32) -> conv2 (7, 7, 64) -> flatten (3136,) -> d1 (256,)" in out, (
        output
    )
    assert "Adam 0.01, 1 epochs, batch 50, seed 0" in out, output
    names = ["conv1", "conv2", "d1", "d2"]
    assert re.search(EPOCH_LINE + exit_pattern(names) + "$", out, re.MULTILINE), output
    for k, name in enumerate(names):
        assert re.search(
            rf"^final test accuracy, exit {k} \({name}\): [0-9.]+%$", out, re.MULTILINE
        ), output
    assert plot.is_file() and plot.stat().st_size > 0, output
    assert_no_tensorflow_lines(result, output)


# Makes every server unreachable in the example's process (a stand-in for a machine
# without internet, also where there is one): imported before the script runs.
OFFLINE_SITECUSTOMIZE = """import errno, socket
def _unreachable(address, *args, **kwargs):
    raise OSError(errno.ENETUNREACH, "Network is unreachable")
socket.create_connection = _unreachable
"""


def run_failing(script, *args, cwd, env_update=None):
    env = example_env(cwd)
    env.update(env_update or {})
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True, text=True, timeout=600, env=env, cwd=cwd,
    )
    output = f"exit code {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result, output


@pytest.mark.parametrize("script", [CNN_EXAMPLE, EXAMPLES / "mnist_mlp.py"])
def test_tfds_set_missing_offline_is_one_error_line(tmp_path, script):
    (tmp_path / "offline").mkdir()
    (tmp_path / "offline" / "sitecustomize.py").write_text(OFFLINE_SITECUSTOMIZE)
    env = example_env(tmp_path)
    result, output = run_failing(
        script, "--dataset", "cifar10", "--data_dir", tmp_path / "tfds", "--epochs", 1,
        cwd=tmp_path,
        env_update={"PYTHONPATH": os.pathsep.join([str(tmp_path / "offline"), env["PYTHONPATH"]])},
    )
    assert result.returncode == 1, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    assert re.match(
        f"error: Dataset cifar10 is not in {re.escape(str(tmp_path / 'tfds'))}/cifar10/[0-9.]+ "
        r"and its server www\.cs\.toronto\.edu cannot be reached \(Network is unreachable\)\. "
        "It must be downloaded once: run this where the internet is reachable", lines[0]
    ), output
    assert "Downloading" not in result.stdout and "Dl Completed" not in result.stderr, output


def test_mnist_mlp_example_on_fashion_mnist(tmp_path):
    result, output = run(
        EXAMPLES / "mnist_mlp.py", "--dataset", "fashion_mnist", "--epochs", 1,
        "--max_examples", 100, cwd=tmp_path,
    )
    out = result.stdout
    # The paper's MLP and recipe, batch 50.
    assert "fashion_mnist: 784-1000-34 SPELA MLP, 10 classes, recipe paper, 1 epochs, batch 50" in (
        out
    ), output
    assert re.search(r"^epoch +1/1 .* test accuracy: hidden [0-9.]+% \| last [0-9.]+%$",
                     out, re.MULTILINE), output
    assert re.search(r"^final test accuracy, exit 1 \(last\): [0-9.]+%$", out, re.MULTILINE), (
        output
    )
    assert "paper, last exit: 89.77%" in out, output
    assert (tmp_path / "spela_mlp_fashion_mnist.png").is_file(), output
    assert_no_tensorflow_lines(result, output)


@pytest.mark.parametrize("script, flag, message", [
    ("cifar_svhn_cnn.py", ["--epochs", "0"], "flag --epochs=0: 0 is not a positive integer"),
    ("cifar_svhn_cnn.py", ["--max_examples", "-5"],
     "flag --max_examples=-5: -5 is not a non-negative integer"),
    ("mnist_mlp.py", ["--hidden", "0"], "flag --hidden=0: 0 is not a positive integer"),
    ("transfer_head.py", ["--epochs", "0"], "flag --epochs=0: 0 is not a positive integer"),
    ("on_device_finetune.py", ["--host_epochs", "0"],
     "flag --host_epochs=0: 0 is not a positive integer"),
    ("new_classes.py", ["--seed", "-1"], "flag --seed=-1: -1 is not a non-negative integer"),
    ("multi_worker.py", ["--epochs", "0"], "flag --epochs=0: 0 is not a positive integer"),
    ("federated_flower.py", ["--rounds", "0"], "flag --rounds=0: 0 is not a positive integer"),
])
def test_bad_numeric_flag_is_one_error_line(tmp_path, script, flag, message):
    """One process per script (each imports TensorFlow before it parses its flags)."""
    result, output = run_failing(EXAMPLES / script, *flag, cwd=tmp_path)
    assert result.returncode == 2, output
    assert result.stderr.strip().splitlines() == [
        f"{script}: error: {message} (see --helpfull)"
    ], output
    assert not result.stdout, output


def test_mnist_mlp_example_on_digits(tmp_path):
    result, output = run(
        EXAMPLES / "mnist_mlp.py", "--dataset", "digits", "--epochs", 1, cwd=tmp_path
    )
    assert re.search(r"^epoch +1/1 .* test accuracy: hidden [0-9.]+% \| last [0-9.]+%$",
                     result.stdout, re.MULTILINE), output
    assert "final test accuracy, exit 1 (last)" in result.stdout, output


TRANSFER_EXAMPLE = EXAMPLES / "transfer_head.py"
# The transfer example at its smallest: one pretraining epoch, two head epochs.
TRANSFER_SMALLEST = ("--pretrain_epochs", 1, "--epochs", 2)


def test_transfer_head_example_smallest(tmp_path):
    result, output = run(
        TRANSFER_EXAMPLE, *TRANSFER_SMALLEST, "--head", 16, "--nosweep",
        "--output_dir", tmp_path, cwd=tmp_path,
    )
    assert "builtin operators only" in result.stdout, output
    assert "frozen backbone weights unchanged by fit: True" in result.stdout, output
    assert [p.name for p in tmp_path.glob("*.tflite")] == ["frozen_block_head.tflite"], output
    assert "few-shot transfer" not in result.stdout, output
    assert not any(tmp_path.glob("*.png")), output


def sweep_row(stdout, percent):
    """The sweep table's row of `percent`: (examples, ["mean ± std", ...])."""
    match = re.search(rf"^{percent} +\| (\d+) +\| (.*)$", stdout, re.MULTILINE)
    assert match, f"no sweep row for {percent}%:\n{stdout}"
    return int(match.group(1)), [cell.strip() for cell in match.group(2).split("|")]


def device_row(stdout, stage):
    """The device table's accuracies (%) of `stage`, e.g. 'host (Keras)'."""
    match = re.search(rf"^{re.escape(stage)} +\| (.*)$", stdout, re.MULTILINE)
    assert match, f"no row {stage!r}:\n{stdout}"
    return [float(cell.strip().rstrip("%")) for cell in match.group(1).split("|")]


def test_transfer_head_sweep_and_device_finetune(tmp_path):
    plot = tmp_path / "sweep.png"
    result, output = run(
        TRANSFER_EXAMPLE, *TRANSFER_SMALLEST, "--head", "16,8", "--noexport",
        "--fractions", "5,2", "--sweep_seeds", "0", "--host_fraction", 5, "--device_epochs", 1,
        "--plot", plot, "--output_dir", tmp_path, cwd=tmp_path,
    )
    out = result.stdout
    assert (
        "few-shot transfer on frozen small_cnn features: SPELA head 256-16-8 (Adam 0.01) "
        "vs backprop head 256-16-8-10 (softmax, Adam 0.003), 2 epochs, batch 50, seeds 0"
    ) in out, output
    assert re.search(
        r"^train % \| examples \| spela exit 0 \(all\) \| spela exit 1 \(all\) \| "
        r"backprop \(all\) \| spela exit 0 \(5-9\) \| spela exit 1 \(5-9\) \| "
        r"backprop \(5-9\)$", out, re.MULTILINE,
    ), output
    # 2 % and 5 % of every class of the 1,437 training digits (about 144 each).
    examples_2, cells_2 = sweep_row(out, 2)
    examples_5, cells_5 = sweep_row(out, 5)
    assert 20 <= examples_2 < examples_5 <= 80, output
    for cell in cells_2 + cells_5:  # one seed: no spread
        assert re.fullmatch(r"[0-9.]+ ± 0\.0", cell), output
    # The device step's host head is a new model built with seed 0 and trained
    # on the same 5 %: the sweep's 5 % trial, which ran on heads put back to
    # their initial state after the 2 % trial, must give the same accuracies.
    host = device_row(out, "host (Keras)")
    sweep_spela = [float(cells_5[k].split(" ")[0]) for k in (0, 3, 1, 4)]
    assert all(abs(a - b) <= 0.051 for a, b in zip(host, sweep_spela)), output
    # The exported head scores like the Keras head, and learns on the device.
    assert f"exported the head trained on 5% of the training set ({examples_5} examples)" in out, (
        output
    )
    device_examples = 1437 - examples_5
    assert f"fine-tuning on the {device_examples} training examples the host did not" in out, (
        output
    )
    before = device_row(out, "device before (litert)")
    after = device_row(out, "device after (litert)")
    assert before == host, output
    assert after[2] > before[2] + 5, output  # the last exit, all classes
    assert plot.is_file() and plot.stat().st_size > 0, output
    assert (tmp_path / "spela_head.tflite").is_file(), output
    assert not (tmp_path / "frozen_block_head.tflite").exists(), output
    assert_no_tensorflow_lines(result, output)
    assert "Warning" not in result.stderr, output


def test_transfer_head_sweep_on_tfds_mock_data(tmp_path):
    result, output = run(
        TRANSFER_EXAMPLE, *TRANSFER_SMALLEST, "--dataset", "cifar10", "--noexport",
        "--fractions", 50, "--sweep_seeds", "0", "--device_epochs", 1, "--head", 16,
        "--plot", tmp_path / "mock.png", "--output_dir", tmp_path,
        cwd=tmp_path, env_update={MOCK_ENV: str(MOCK_EXAMPLES)},
    )
    out = result.stdout
    assert f"mocked: {MOCK_EXAMPLES} random examples per split" in out, output
    shapes = f"{MOCK_EXAMPLES} training and {MOCK_EXAMPLES} test images (32, 32, 3)"
    assert f"cifar10: {shapes}, 10 classes" in out, output
    assert "SPELA head 4096-16 (Adam 0.01) vs backprop head 4096-16-10" in out, output
    examples, cells = sweep_row(out, 50)
    assert 0 < examples < MOCK_EXAMPLES and len(cells) == 4, output
    assert re.search(r"^device after \(litert\) +\| [0-9.]+%", out, re.MULTILINE), output
    assert (tmp_path / "mock.png").is_file(), output
    assert_no_tensorflow_lines(result, output)


def test_transfer_head_bad_fractions_one_line(tmp_path):
    env = example_env(tmp_path)
    result = subprocess.run(
        [sys.executable, str(TRANSFER_EXAMPLE), "--fractions", "0,5"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --fractions must be comma-separated percentages in (0, 100], received '0,5'"
    ], result.stderr
    assert not result.stdout, result.stdout


@pytest.mark.parametrize("flags, message", [
    (["--kernel_sizes", "3"],
     "error: --kernel_sizes has 1 values for 2 conv blocks (--filters 32,64): give one per block."),
    (["--filters", "32,x"], "error: --filters must be comma-separated positive integers, "
                            "received '32,x'"),
])
def test_cnn_example_bad_flags_one_line(tmp_path, flags, message):
    env = example_env(tmp_path)
    result = subprocess.run(
        [sys.executable, str(CNN_EXAMPLE), *flags],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [message], result.stderr
    assert not result.stdout, result.stdout


FINETUNE_EXAMPLE = EXAMPLES / "on_device_finetune.py"
MICRO_ARENA_LINE = (
    r"^TFLite Micro arena [0-9.]+ KiB \(([0-9,]+) bytes\), budget 128 KiB "
    r"\(131,072 bytes\): within the budget$"
)


def finetune_row(stdout, stage):
    """The accuracies (%, None for '-') of `stage` in on_device_finetune's table."""
    match = re.search(rf"^{re.escape(stage)} +(.*)$", stdout, re.MULTILINE)
    assert match, f"no row {stage!r}:\n{stdout}"
    return [None if cell == "-" else float(cell.rstrip("%")) for cell in match.group(1).split()]


def test_on_device_finetune_micro_budget_128_kib(tmp_path):
    result, output = run(
        FINETUNE_EXAMPLE, "--runtime", "micro", "--micro_budget_kib", 128, "--host_epochs", 1,
        "--device_epochs", 2, "--output_dir", tmp_path, cwd=tmp_path,
    )
    out = result.stdout
    match = re.search(MICRO_ARENA_LINE, out, re.MULTILINE)
    assert match, output
    arena = int(match.group(1).replace(",", ""))
    assert 32 * 1024 < arena <= 128 * 1024, output
    with open(tmp_path / "spela_micro.json") as f:  # the arena the export measured
        assert json.load(f)["arena_bytes"] == arena, output
    # The budget's settings: batch 8, only the last layer learns.
    assert "device runtime: micro, batch 8, exits ['exit_0', 'exit_1']" in out, output
    # Columns new exit_0, new exit_1, old exit_0, old exit_1 ("-": a micro step
    # scores its last exit only).
    before = finetune_row(out, "device before (micro)")
    after = finetune_row(out, "device after (micro)")
    assert before[0] is None and after[0] is None, output
    assert after[1] > before[1] + 30, output  # the rotated digits
    assert after[3] > before[3] - 5, output  # the host's task is kept
    assert_no_tensorflow_lines(result, output)


def test_on_device_finetune_bad_micro_budget_one_line(tmp_path):
    env = example_env(tmp_path)
    result = subprocess.run(
        [sys.executable, str(FINETUNE_EXAMPLE), "--micro_budget_kib", "0"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --micro_budget_kib must be a positive number of KiB, received 0"
    ], result.stderr
    assert not result.stdout, result.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
