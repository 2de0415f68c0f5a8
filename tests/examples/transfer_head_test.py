"""examples/transfer_head.py as a user runs it: without and with its few-shot sweep and
device fine-tuning, on the digits and on tfds mock cifar10."""

import pathlib
import re
import sys

import pytest

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
# The example's test-only switch: tfds.testing.mock_data(num_examples=N) around the run.
MOCK_ENV = "KERAS_SPELA_EXAMPLE_MOCK_TFDS"
MOCK_EXAMPLES = 64


TRANSFER_EXAMPLE = EXAMPLES / "transfer_head.py"
# The transfer example at its smallest: one pretraining epoch, two head epochs.
TRANSFER_SMALLEST = ("--pretrain_epochs", 1, "--epochs", 2)


def test_transfer_head_example_smallest(tmp_path, scripts):
    result, output = scripts.run(
        TRANSFER_EXAMPLE,
        *TRANSFER_SMALLEST,
        "--head",
        16,
        "--nosweep",
        "--output_dir",
        tmp_path,
        cwd=tmp_path,
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


def test_transfer_head_sweep_and_device_finetune(tmp_path, scripts):
    plot = tmp_path / "sweep.png"
    result, output = scripts.run(
        TRANSFER_EXAMPLE,
        *TRANSFER_SMALLEST,
        "--head",
        "16,8",
        "--noexport",
        "--fractions",
        "5,2",
        "--sweep_seeds",
        "0",
        "--host_fraction",
        5,
        "--device_epochs",
        1,
        "--plot",
        plot,
        "--output_dir",
        tmp_path,
        cwd=tmp_path,
    )
    out = result.stdout
    assert (
        "few-shot transfer on frozen small_cnn features: SPELA head 256-16-8 (Adam 0.01) "
        "vs backprop head 256-16-8-10 (softmax, Adam 0.003), 2 epochs, batch 50, seeds 0"
    ) in out, output
    assert re.search(
        r"^train % \| examples \| spela exit 0 \(all\) \| spela exit 1 \(all\) \| "
        r"backprop \(all\) \| spela exit 0 \(5-9\) \| spela exit 1 \(5-9\) \| "
        r"backprop \(5-9\)$",
        out,
        re.MULTILINE,
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
    assert f"fine-tuning on the {device_examples} training examples the host did not" in out, output
    before = device_row(out, "device before (litert)")
    after = device_row(out, "device after (litert)")
    assert before == host, output
    assert after[2] > before[2] + 5, output  # the last exit, all classes
    assert plot.is_file() and plot.stat().st_size > 0, output
    assert (tmp_path / "spela_head.tflite").is_file(), output
    assert not (tmp_path / "frozen_block_head.tflite").exists(), output
    scripts.assert_quiet(result, output, example=True)
    assert "Warning" not in result.stderr, output


def test_transfer_head_sweep_on_tfds_mock_data(tmp_path, scripts):
    result, output = scripts.run(
        TRANSFER_EXAMPLE,
        *TRANSFER_SMALLEST,
        "--dataset",
        "cifar10",
        "--noexport",
        "--fractions",
        50,
        "--sweep_seeds",
        "0",
        "--device_epochs",
        1,
        "--head",
        16,
        "--plot",
        tmp_path / "mock.png",
        "--output_dir",
        tmp_path,
        cwd=tmp_path,
        env_update={MOCK_ENV: str(MOCK_EXAMPLES)},
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
    scripts.assert_quiet(result, output, example=True)


def test_transfer_head_bad_fractions_one_line(tmp_path, scripts):
    result, _ = scripts.run(TRANSFER_EXAMPLE, "--fractions", "0,5", cwd=tmp_path, expect_code=None)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --fractions must be comma-separated percentages in (0, 100], received '0,5'"
    ], result.stderr
    assert not result.stdout, result.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
