"""benchmarks/train_speed.py as a user runs it (a subprocess from a temporary directory,
--no_save) at its smallest settings: it prints its estimates. No timing is asserted."""

import pathlib
import re
import sys

import pytest

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


TRAIN_SPEED = BENCHMARKS / "train_speed.py"


def test_train_speed_smallest_prints_its_estimates(tmp_path, scripts):
    result, output = scripts.run(
        TRAIN_SPEED,
        "--quick",
        "--widths",
        "32,16,16,10",
        "--examples",
        256,
        "--epochs",
        1,
        "--step_repeats",
        1,
        "--steps_b1",
        5,
        "--steps_b256",
        1,
        "--profile_repeats",
        2,
        "--jit",
        "false",
        "--no_save",
        cwd=tmp_path,
    )
    out = result.stdout
    # The batch-1 estimate is the quotient of the parts it names, and the
    # measured speed-up it quotes is the steps table's.
    line = re.search(
        rf"^  \(backprop matrix products ({NUMBER}) \+ Adam ({NUMBER}) ms\) / \(SPELA "
        rf"({NUMBER}) \+ ({NUMBER}) ms\) = ({NUMBER})x; measured \(jit_compile=False\): "
        rf"({NUMBER})x \(goal >= 1.25x\)$",
        out,
        re.MULTILINE,
    )
    assert line, output
    mm_b, adam_b, mm_s, adam_s, estimate, measured = map(float, line.groups())
    expected = (mm_b + adam_b) / (mm_s + adam_s)
    assert estimate == pytest.approx(expected, rel=0.01, abs=0.006), output
    steps_row = re.search(
        r"^jit_compile=False \| 1 +\| 5 +\|.*\| (" + NUMBER + r") *$", out, re.MULTILINE
    )
    assert steps_row and float(steps_row.group(1)) == measured, output
    bound = re.search(
        rf"only its Adam update would be ({NUMBER})x backprop's speed \(backprop's full step "
        rf"({NUMBER}) ms / ({NUMBER}) ms\); 1.25x leaves (-?{NUMBER}) ms",
        out,
    )
    assert bound, output
    ratio, step_b, adam, left = map(float, bound.groups())
    assert adam == adam_s and ratio == pytest.approx(step_b / adam, rel=0.01, abs=0.006), output
    assert left == pytest.approx(step_b / 1.25 - adam, abs=0.002), output
    assert "Estimate: the epoch ratio" in out, output
    scripts.assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"
    # A bad flag: one error line.
    result, output = scripts.run(TRAIN_SPEED, "--widths", "784,abc", cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith(
        "error: --widths must be an input dim and at least two layer "
        "widths, integers >= 1 separated by commas, got '784,abc'"
    ), output
    scripts.assert_quiet(result, output)
