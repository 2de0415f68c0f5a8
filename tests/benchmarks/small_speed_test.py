"""benchmarks/small_speed.py as a user runs it (a subprocess from a temporary directory,
--no_save) at its smallest settings: what it prints, and printed ratios are the quotients
of the printed times. No timing is asserted."""

import pathlib
import re
import sys

import pytest

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
DIGITS_STEPS_PER_EPOCH = 29  # 1437 examples, batch 50
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


SMALL_SPEED = BENCHMARKS / "small_speed.py"


def test_small_speed_smallest(tmp_path, scripts):
    result, output = scripts.run(
        SMALL_SPEED,
        "--rounds",
        1,
        "--batch1_examples",
        20,
        "--no_save",
        cwd=tmp_path,
    )
    out = result.stdout
    # The epoch table: per method and batch, ms per epoch, ms per step and the time
    # ratio to backprop (Adam), which is the quotient of the first column.
    epoch_ms = {}
    for method in ("SPELA", "backprop", "backprop RMSprop"):
        for batch, steps in ((50, DIGITS_STEPS_PER_EPOCH), (1, 20)):
            row = re.search(rf"^{method}, batch {batch} +\|(.*)$", out, re.MULTILINE)
            assert row, output
            cells = [float(cell) for cell in row.group(1).split("|")]
            assert cells[1] == pytest.approx(cells[0] / steps, rel=0.02, abs=0.01), output
            epoch_ms[method, batch] = cells
    for batch in (50, 1):
        spela, backprop = epoch_ms["SPELA", batch][0], epoch_ms["backprop", batch][0]
        assert epoch_ms["SPELA", batch][2] == pytest.approx(spela / backprop, rel=0.02), output
    assert re.search(
        rf"^  (PASS|FAIL) epoch time SPELA / backprop \(Adam\), batch 50: "
        rf"{NUMBER} \(goal <= 0\.8\)$",
        out,
        re.MULTILINE,
    ), output
    assert re.search(
        rf"^  (PASS|FAIL) steps per second at batch 1, SPELA / backprop "
        rf"\(Adam\): {NUMBER}x \(goal >= 1\.25x\)$",
        out,
        re.MULTILINE,
    ), output
    scripts.assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"
    result, output = scripts.run(SMALL_SPEED, "--rounds", 0, cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("error: --rounds must be >= 1, received 0"), output


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
