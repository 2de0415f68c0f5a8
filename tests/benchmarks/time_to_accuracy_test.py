"""benchmarks/time_to_accuracy.py as a user runs it (a subprocess from a temporary directory,
--no_save) at tiny settings: what it prints, a target out of reach reported as such, a bad
task is one error line. No timing is asserted: speed is a claim of the benchmark, not of a
test."""

import pathlib
import re
import sys

import pytest

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
TIME_TO_ACCURACY = BENCHMARKS / "time_to_accuracy.py"
DIGITS_STEPS_PER_EPOCH = 29  # 1437 examples, batch 50
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def test_time_to_accuracy_reaches_an_easy_target(tmp_path, scripts):
    result, output = scripts.run(
        TIME_TO_ACCURACY,
        "--tasks",
        "digits",
        "--seeds",
        1,
        "--max_epochs",
        2,
        "--digits_target",
        0.5,
        "--no_save",
        cwd=tmp_path,
    )
    out = result.stdout
    line = re.search(
        rf"^  digits seed 0 \({NUMBER} s\): SPELA ({NUMBER}) s, step ([0-9]+), epoch ([12]), "
        rf"exit [01] at ({NUMBER})%; backprop ({NUMBER}) s, step ([0-9]+), epoch ([12]), "
        rf"exit 0 at ({NUMBER})%$",
        out,
        re.MULTILINE,
    )
    assert line, output
    for seconds, step, epoch, accuracy in (line.groups()[:4], line.groups()[4:]):
        assert float(seconds) > 0, output
        assert float(accuracy) >= 50.0, output
        # Evaluated every 5 steps and at the epoch end: stopped at the first of them.
        assert int(step) <= int(epoch) * DIGITS_STEPS_PER_EPOCH, output
        assert int(step) % 5 == 0 or int(step) == int(epoch) * DIGITS_STEPS_PER_EPOCH, output
    assert re.search(r"^SPELA +\| 1/1 +\|", out, re.MULTILINE), output
    assert re.search(r"^backprop +\| 1/1 +\|", out, re.MULTILINE), output
    assert re.search(
        rf"ratio of the medians SPELA / backprop: {NUMBER}; median of the per-seed ratios: "
        rf"{NUMBER}; without the first step \(tracing\): {NUMBER}$",
        out,
        re.MULTILINE,
    ), output
    assert re.search(
        rf"^  (PASS|FAIL) digits: SPELA / backprop time to 50%: {NUMBER} "
        r"\(goal <= 0\.5\)$",
        out,
        re.MULTILINE,
    ), output
    assert "load average at the start" in out and "load average at the end" in out, output
    scripts.assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"


def test_time_to_accuracy_reports_a_target_out_of_reach(tmp_path, scripts):
    result, output = scripts.run(
        TIME_TO_ACCURACY,
        "--tasks",
        "digits",
        "--seeds",
        1,
        "--max_epochs",
        1,
        "--eval_every",
        100,
        "--digits_target",
        1.0,
        "--no_save",
        cwd=tmp_path,
    )
    out = result.stdout
    # One epoch of 29 steps: a single evaluation at the epoch end, below 100%.
    assert re.search(
        rf"SPELA not reached \(best {NUMBER}%\); backprop not reached \(best {NUMBER}%\)$",
        out,
        re.MULTILINE,
    ), output
    assert re.search(r"^SPELA +\| 0/1 +\| not reached", out, re.MULTILINE), output
    assert "FAIL digits: SPELA / backprop time to 100%: SPELA not reached" in out, output


def test_time_to_accuracy_bad_task_is_one_error_line(tmp_path, scripts):
    result, output = scripts.run(TIME_TO_ACCURACY, "--tasks", "mnist", cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("error: unknown task mnist; choose from digits, cnn"), output
    scripts.assert_quiet(result, output)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
