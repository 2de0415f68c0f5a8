"""benchmarks/conv_speed.py as a user runs it (a subprocess from a temporary directory,
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
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def mib_row(out, title_part, depth):
    """The cells of a memory table's row for `depth` hidden layers."""
    table = out.split(title_part, 1)[1]
    row = re.search(rf"^{depth} +\|(.*)$", table, re.MULTILINE)
    assert row, out
    return [cell.strip() for cell in row.group(1).split("|")]


CONV_SPEED = BENCHMARKS / "conv_speed.py"


def test_conv_speed_smallest(tmp_path, scripts):
    result, output = scripts.run(
        CONV_SPEED,
        "--jit",
        "false",
        "--batches",
        1,
        "--blocks",
        2,
        "--block",
        1,
        "--conv_blocks",
        2,
        "--image_size",
        32,
        "--filters",
        16,
        "--memory_batch",
        16,
        "--repeats",
        1,
        "--no_save",
        cwd=tmp_path,
    )
    out = result.stdout
    assert re.search(
        r"^\(1\) CNN train step, .*SPELA conv objective [a-z]+, ", out, re.MULTILINE
    ), output
    # The step table: per way, the SPELA CNN with each lowering and backprop, then the
    # ratios SPELA / backprop, each the quotient of its row's times (to the printed
    # rounding); the "best" row names the jit_compile of each time.
    for way in ("train_on_batch", "train_function"):
        for setting in ("False", "best"):
            row = re.search(rf"^1 +\| {way} +\| {setting} +\|(.*)$", out, re.MULTILINE)
            assert row, output
            cells = [cell.strip() for cell in row.group(1).split("|")]
            if setting == "best":
                assert all(cell.endswith(" (False)") for cell in cells[:3]), output
            fused, builtins, backprop = (float(cell.split()[0]) for cell in cells[:3])
            assert min(fused, builtins, backprop) > 0, output
            for ms, ratio in ((fused, cells[3]), (builtins, cells[4])):
                assert float(ratio) == pytest.approx(ms / backprop, rel=0.02, abs=2e-3), output
        # Batch 1's goal: one verdict for the default lowering, best against best.
        verdict = re.search(
            rf"^  (PASS|FAIL) batch 1, {way}: SPELA (fused|builtins) \(default "
            rf"lowering\) best / backprop best ({NUMBER}) \(goal <= 1.0\)$",
            out,
            re.MULTILINE,
        )
        assert verdict, output
        assert (verdict.group(1) == "PASS") == (float(verdict.group(3)) <= 1.0), output
        assert verdict.group(3) == {"fused": cells[3], "builtins": cells[4]}[verdict.group(2)]
    assert len(re.findall(r"^  (PASS|FAIL) batch", out, re.MULTILINE)) == 2, output
    # Memory: both steps hold the first block's conv map at full resolution
    # (16 x 32 x 32 x 16 float32 = 1 MiB) while its gradients are taken.
    title = (
        "(2) MiB, jit_compile=False, 32x32x1, 16 filters per block, batch 16 "
        "(block 1's feature map = 1.0 MiB)"
    )
    assert title in out, output
    cells = mib_row(out, title, 2)
    # Weights + two Adam slots, counted: 2 x Conv2D(16, 3) on one input channel;
    # backprop + a Dense(10) head on the 16 pooled channels, SPELA + whatever
    # parameters the library's default conv objective has (a read-out, a projection).
    conv_params = (9 * 1 + 1) * 16 + (9 * 16 + 1) * 16
    backprop_params = conv_params + (16 + 1) * 10
    assert float(cells[0]) >= round(12 * conv_params / 2**20, 2), output
    assert float(cells[1]) == pytest.approx(12 * backprop_params / 2**20, abs=0.005), output
    step_spela, step_bp, _, activations_spela, activations_bp, _, sequenced = cells[2:9]
    for value in (step_spela, step_bp, activations_spela, activations_bp, sequenced):
        assert float(value) >= 1.0, output
    assert re.search(
        rf"^  ratio SPELA / backprop at 2 conv blocks \(jit_compile=False\): "
        rf"activations {NUMBER}, step peak {NUMBER}; SPELA sequenced / backprop "
        rf"activations {NUMBER}$",
        out,
        re.MULTILINE,
    ), output
    # The primitives: both conv layers' two primitives with a fused lowering, each
    # ratio the quotient of its row's times.
    assert "(3) The primitives' lowerings on the SPELA CNN's activations, batch 1" in out, output
    for layer in ("conv1", "conv2"):
        for primitive in ("max_pool_gradient", "conv_filter_gradient"):
            row = re.search(rf"^{layer} +\| {primitive} +\|[^|]+\|(.*)$", out, re.MULTILINE)
            assert row, output
            builtins, fused, ratio = (float(c) for c in row.group(1).split("|"))
            assert builtins > 0 and fused > 0, output
            assert ratio == pytest.approx(fused / builtins, rel=0.02, abs=6e-3), output
    assert "load average at the start" in out and "load average at the end" in out, output
    scripts.assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"
    # A bad flag: one error line.
    result, output = scripts.run(CONV_SPEED, "--parts", "time,speed", cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("error: unknown part speed; choose from time, memory, kernels"), output
    scripts.assert_quiet(result, output)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
