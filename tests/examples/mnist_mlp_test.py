"""examples/mnist_mlp.py as a user runs it, on the embedded digits and Fashion-MNIST."""

import pathlib
import re
import sys

import pytest

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def test_mnist_mlp_example_on_fashion_mnist(tmp_path, scripts):
    result, output = scripts.run(
        EXAMPLES / "mnist_mlp.py",
        "--dataset",
        "fashion_mnist",
        "--epochs",
        1,
        "--max_examples",
        100,
        cwd=tmp_path,
    )
    out = result.stdout
    # The paper's MLP and recipe, batch 50.
    assert "fashion_mnist: 784-1000-34 SPELA MLP, 10 classes, recipe paper, 1 epochs, batch 50" in (
        out
    ), output
    assert re.search(
        r"^epoch +1/1 .* test accuracy: hidden [0-9.]+% \| last [0-9.]+%$", out, re.MULTILINE
    ), output
    assert re.search(r"^final test accuracy, exit 1 \(last\): [0-9.]+%$", out, re.MULTILINE), output
    assert "paper, last exit: 89.77%" in out, output
    assert (tmp_path / "spela_mlp_fashion_mnist.png").is_file(), output
    scripts.assert_quiet(result, output, example=True)


def test_mnist_mlp_example_on_digits(tmp_path, scripts):
    result, output = scripts.run(
        EXAMPLES / "mnist_mlp.py", "--dataset", "digits", "--epochs", 1, cwd=tmp_path
    )
    assert re.search(
        r"^epoch +1/1 .* test accuracy: hidden [0-9.]+% \| last [0-9.]+%$",
        result.stdout,
        re.MULTILINE,
    ), output
    assert "final test accuracy, exit 1 (last)" in result.stdout, output


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
