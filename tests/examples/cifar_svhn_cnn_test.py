"""examples/cifar_svhn_cnn.py as a user runs it, at its smallest settings: on its offline
default (the canvas digits), on Fashion-MNIST's real files and on tfds mock data (cifar10,
svhn_cropped); bad flags are one error line."""

import pathlib
import re
import sys

import pytest

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CNN_EXAMPLE = EXAMPLES / "cifar_svhn_cnn.py"
# The example's test-only switch: tfds.testing.mock_data(num_examples=N) around the run.
MOCK_ENV = "KERAS_SPELA_EXAMPLE_MOCK_TFDS"
MOCK_EXAMPLES = 64
EPOCH_LINE = r"^epoch +1/1 - train loss [0-9.]+ - test accuracy: "


def exit_pattern(names):
    return " \\| ".join(rf"{name} [0-9.]+%" for name in names)


def test_cnn_example_default_dataset_one_epoch(tmp_path, scripts):
    plot = tmp_path / "cnn.png"
    result, output = scripts.run(CNN_EXAMPLE, "--epochs", 1, "--plot", plot, cwd=tmp_path)
    names = ["conv1", "conv2", "d1", "d2"]
    out = result.stdout
    assert "digits_canvas: images (20, 20, 1) in [0, 1], 10 classes" in out, output
    assert "test x (360, 20, 20, 1), train x (1437, 20, 20, 1)" in out, output
    assert "conv 32-64 (5x5-3x3, readout), dense 256-34" in out, output
    assert "conv1 (10, 10, 32) -> conv2 (5, 5, 64) -> flatten (1600,) -> d1 (256,)" in out, output
    assert re.search(EPOCH_LINE + exit_pattern(names) + "$", out, re.MULTILINE), output
    for k, name in enumerate(names):
        assert re.search(
            rf"^final test accuracy, exit {k} \({name}\): [0-9.]+%$", out, re.MULTILINE
        ), output
    assert plot.is_file() and plot.stat().st_size > 0, output
    scripts.assert_quiet(result, output, example=True)
    assert not any(tmp_path.glob("spela_cnn_*.png")), "wrote the default plot besides --plot"


@pytest.mark.parametrize("dataset", ["cifar10", "svhn_cropped"])
def test_cnn_example_on_tfds_mock_data(tmp_path, dataset, scripts):
    result, output = scripts.run(
        CNN_EXAMPLE,
        "--dataset",
        dataset,
        "--epochs",
        1,
        "--plot",
        tmp_path / "mock.png",
        cwd=tmp_path,
        env_update={MOCK_ENV: str(MOCK_EXAMPLES)},
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
    scripts.assert_quiet(result, output, example=True)


def test_cnn_example_on_fashion_mnist(tmp_path, scripts):
    plot = tmp_path / "fashion.png"
    result, output = scripts.run(
        CNN_EXAMPLE,
        "--dataset",
        "fashion_mnist",
        "--epochs",
        1,
        "--max_examples",
        100,
        "--plot",
        plot,
        cwd=tmp_path,
    )
    out = result.stdout
    assert "fashion_mnist: images (28, 28, 1) in [0, 1], 10 classes" in out, output
    assert "test x (100, 28, 28, 1), train x (100, 28, 28, 1)" in out, output
    assert "conv 32-64 (3x3-3x3, readout), dense 256-34" in out, output
    assert "conv1 (14, 14, 32) -> conv2 (7, 7, 64) -> flatten (3136,) -> d1 (256,)" in out, output
    assert "Adam 0.01, 1 epochs, batch 50, seed 0" in out, output
    names = ["conv1", "conv2", "d1", "d2"]
    assert re.search(EPOCH_LINE + exit_pattern(names) + "$", out, re.MULTILINE), output
    for k, name in enumerate(names):
        assert re.search(
            rf"^final test accuracy, exit {k} \({name}\): [0-9.]+%$", out, re.MULTILINE
        ), output
    assert plot.is_file() and plot.stat().st_size > 0, output
    scripts.assert_quiet(result, output, example=True)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--kernel_sizes", "3"],
            "error: --kernel_sizes has 1 values for 2 conv blocks (--filters 32,64): give one per block.",
        ),
        (
            ["--filters", "32,x"],
            "error: --filters must be comma-separated positive integers, received '32,x'",
        ),
    ],
)
def test_cnn_example_bad_flags_one_line(tmp_path, flags, message, scripts):
    result, _ = scripts.run(CNN_EXAMPLE, *flags, cwd=tmp_path, expect_code=None)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [message], result.stderr
    assert not result.stdout, result.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
