"""benchmarks/micro_budget.py as a user runs it (a subprocess from a temporary directory,
--no_save) at quick settings: what it prints."""

import pathlib
import re
import sys

import pytest

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


MICRO_BUDGET = BENCHMARKS / "micro_budget.py"


def test_micro_budget_quick(tmp_path, scripts):
    # Seed 0, the main job's defaults and the 128 KiB row: the table's arenas
    # sit on either side of the budget, and TFLite Micro fine-tunes as LiteRT.
    result, output = scripts.run(MICRO_BUDGET, "--quick", "--no_save", cwd=tmp_path)
    rows = re.findall(r"^(defaults|last only)[^|]*\|(.*)$", result.stdout, re.MULTILINE)
    assert [name for name, _ in rows] == ["defaults", "last only"], output
    cells = {name: [float(c) for c in rest.split("|")] for name, rest in rows}
    assert cells["defaults"][0] > 128 >= cells["last only"][0], output
    for name, (_, _, _, micro_new, micro_old, litert_new, litert_old, *_) in cells.items():
        assert micro_new == pytest.approx(litert_new, abs=0.5), output
        assert micro_old == pytest.approx(litert_old, abs=0.5), output
    assert len(re.findall(r"^  (PASS|FAIL) ", result.stdout, re.MULTILINE)) == 2, output
    scripts.assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"
    for flag, value, message in (
        ("--rows", "99", "--rows must be row numbers 0 to 6"),
        ("--seeds", "x", "--seeds must be comma-separated integers"),
    ):
        result, output = scripts.run(MICRO_BUDGET, flag, value, cwd=tmp_path, expect_code=2)
        assert message in result.stderr.strip().splitlines()[-1], output


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
