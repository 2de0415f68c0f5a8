"""examples/on_device_finetune.py on TFLite Micro within a 128 KiB arena."""

import json
import pathlib
import re
import sys

import pytest

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


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


def test_on_device_finetune_micro_budget_128_kib(tmp_path, scripts):
    result, output = scripts.run(
        FINETUNE_EXAMPLE,
        "--runtime",
        "micro",
        "--micro_budget_kib",
        128,
        "--host_epochs",
        1,
        "--device_epochs",
        2,
        "--output_dir",
        tmp_path,
        cwd=tmp_path,
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
    scripts.assert_quiet(result, output, example=True)


def test_on_device_finetune_on_fashion_mnist_offline(tmp_path, scripts):
    """--dataset fashion_mnist reads the installed IDX files (no TFDS download) and
    personalises to rotated clothes on LiteRT (a 64-unit hidden layer: a quicker export,
    the rotated clothes still learned from ~1 % to ~68 %)."""
    result, output = scripts.run(
        FINETUNE_EXAMPLE,
        "--dataset=fashion_mnist",
        "--hidden=64",
        "--max_examples=3000",
        "--device_examples=500",
        "--replay=200",
        "--host_epochs=2",
        "--device_epochs=3",
        "--output_dir",
        tmp_path,
        cwd=tmp_path,
    )
    out = result.stdout
    assert "fashion_mnist, shift rotate90: host pre-trains on" in out, output
    before = finetune_row(out, "device before (litert)")
    after = finetune_row(out, "device after (litert)")
    assert after[1] > before[1] + 30, output  # the rotated clothes
    scripts.assert_quiet(result, output, example=True)


def test_on_device_finetune_bad_micro_budget_one_line(tmp_path, scripts):
    result, _ = scripts.run(
        FINETUNE_EXAMPLE, "--micro_budget_kib", "0", cwd=tmp_path, expect_code=None
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "on_device_finetune.py: error: flag --micro_budget_kib=0.0: must be a positive number "
        "(see --helpfull)"
    ], result.stderr
    assert not result.stdout, result.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
