"""The example scripts run as a user runs them (subprocesses, no TF_CPP_MIN_LOG_LEVEL of
the tests), at their smallest settings: examples/cifar_svhn_cnn.py on its offline default
(the canvas digits) and on tfds mock data (cifar10, svhn_cropped), examples/mnist_mlp.py
on the embedded digits and examples/transfer_head.py. Nothing is downloaded."""

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


def run(script, *args, cwd, env_update=None):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", MOCK_ENV)}
    # The checkout's keras_spela, also where another one is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + env.get("PYTHONPATH", "").split(os.pathsep))
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


def test_mnist_mlp_example_on_digits(tmp_path):
    result, output = run(
        EXAMPLES / "mnist_mlp.py", "--dataset", "digits", "--epochs", 1, cwd=tmp_path
    )
    assert re.search(r"^epoch +1/1 .* test accuracy: hidden [0-9.]+% \| last [0-9.]+%$",
                     result.stdout, re.MULTILINE), output
    assert "final test accuracy, exit 1 (last)" in result.stdout, output


def test_transfer_head_example_smallest(tmp_path):
    result, output = run(
        EXAMPLES / "transfer_head.py", "--pretrain_epochs", 1, "--epochs", 1, "--head", 16,
        "--output_dir", tmp_path, cwd=tmp_path,
    )
    assert "builtin operators only" in result.stdout, output
    assert any(tmp_path.glob("*.tflite")), output


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
