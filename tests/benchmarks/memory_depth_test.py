"""benchmarks/memory_depth.py as a user runs it (a subprocess from a temporary directory,
--no_save) at tiny settings: the memory numbers mean what the script says (persistent bytes
hold the weights and both Adam slots, a step holds every weight gradient); bad depths are
one error line."""

import pathlib
import re
import sys

import pytest

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
MEMORY_DEPTH = BENCHMARKS / "memory_depth.py"
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def mib_row(out, title_part, depth):
    """The cells of a memory table's row for `depth` hidden layers."""
    table = out.split(title_part, 1)[1]
    row = re.search(rf"^{depth} +\|(.*)$", table, re.MULTILINE)
    assert row, out
    return [cell.strip() for cell in row.group(1).split("|")]


def test_memory_depth_smallest(tmp_path, scripts):
    result, output = scripts.run(
        MEMORY_DEPTH,
        "--jit",
        "false",
        "--depths",
        "1,2",
        "--width",
        256,
        "--batch_size",
        64,
        "--repeats",
        1,
        "--no_save",
        cwd=tmp_path,
    )
    out = result.stdout
    title = "MiB, jit_compile=False, width 256, batch 64"
    assert title in out, output
    for depth in (1, 2):
        cells = mib_row(out, title, depth)
        persistent_spela, persistent_bp, gradients, step_spela, step_bp = map(float, cells[:5])
        # Weights + two Adam slots stay allocated between steps (MiB rounded to
        # 0.1: up to 0.05 on each number, 0.15 on three gradients).
        assert persistent_spela >= 3 * gradients - 0.2, output
        assert persistent_bp >= 3 * gradients - 0.2, output
        # Both methods hold every weight gradient before the optimizer update.
        assert step_spela >= gradients - 0.1 and step_bp >= gradients - 0.1, output
        # Activations: SPELA's, backprop's, SPELA sequenced.
        assert min(float(cells[6]), float(cells[7]), float(cells[9])) > 0, output
    # The networks have the depths asked for: 784 -> 256 holds (784 + 1) x 256
    # parameters of 4 bytes, each further layer (256 + 1) x 256.
    first, second = (float(mib_row(out, title, d)[2]) for d in (1, 2))
    assert first == pytest.approx(4 * (784 + 1) * 256 / 2**20, abs=0.1), output
    assert second - first == pytest.approx(4 * (256 + 1) * 256 / 2**20, abs=0.1), output
    assert re.search(
        rf"ratio SPELA / backprop at 2 hidden layers: activations {NUMBER}, "
        rf"step peak {NUMBER}; SPELA sequenced / backprop activations {NUMBER}$",
        out,
        re.MULTILINE,
    ), output
    assert re.search(
        r"^  (PASS|FAIL) jit_compile=False: SPELA activations flat in depth", out, re.MULTILINE
    ), output
    assert "NOTE: reduced setting" in out, output
    scripts.assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"


def test_memory_depth_bad_depths_is_one_error_line(tmp_path, scripts):
    result, output = scripts.run(MEMORY_DEPTH, "--depths", "2,0", cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert "argument --depths: expected integers >= 1, got '2,0'" in last, output
    scripts.assert_quiet(result, output)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
