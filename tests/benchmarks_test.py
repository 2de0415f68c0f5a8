"""The time-to-accuracy, memory-against-depth, conv-speed, train-speed, small-speed,
micro-budget and Fashion-MNIST benchmarks run as a user runs them (subprocesses from a temporary
directory, --no_save), at tiny settings: what they print, that a target out of reach is
reported as such, that the memory numbers mean what the script says (persistent bytes
hold the weights and both Adam slots, a step holds every weight gradient), that printed
ratios are the quotients of the printed times, and one-line errors for bad flags. No
timing is asserted: speed and memory are claims of the benchmarks, not of tests."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
TIME_TO_ACCURACY = BENCHMARKS / "time_to_accuracy.py"
MEMORY_DEPTH = BENCHMARKS / "memory_depth.py"
# TensorFlow's C++ log lines and notices (see examples_test.py).
TF_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |"
    r"oneDNN|cuda|TF_ENABLE_ONEDNN_OPTS|cpu_feature_guard|Logging error|Traceback",
    re.IGNORECASE,
)
DIGITS_STEPS_PER_EPOCH = 29  # 1437 examples, batch 50
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def run(script, *args, cwd, expect_code=0):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True, text=True, timeout=600, env=env, cwd=cwd,
    )
    output = (
        f"exit code {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n"
        f"stderr:\n{result.stderr[-3000:]}"
    )
    assert result.returncode == expect_code, output
    return result, output


def assert_quiet(result, output):
    noisy = [line for line in result.stderr.splitlines() if TF_LOG_LINE.search(line)]
    assert not noisy, f"TensorFlow log lines or a traceback on stderr: {noisy[:5]}\n{output}"


def test_time_to_accuracy_reaches_an_easy_target(tmp_path):
    result, output = run(
        TIME_TO_ACCURACY, "--tasks", "digits", "--seeds", 1, "--max_epochs", 2,
        "--digits_target", 0.5, "--no_save", cwd=tmp_path,
    )
    out = result.stdout
    line = re.search(
        rf"^  digits seed 0 \({NUMBER} s\): SPELA ({NUMBER}) s, step ([0-9]+), epoch ([12]), "
        rf"exit [01] at ({NUMBER})%; backprop ({NUMBER}) s, step ([0-9]+), epoch ([12]), "
        rf"exit 0 at ({NUMBER})%$",
        out, re.MULTILINE,
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
        rf"{NUMBER}; without the first step \(tracing\): {NUMBER}$", out, re.MULTILINE
    ), output
    assert re.search(rf"^  (PASS|FAIL) digits: SPELA / backprop time to 50%: {NUMBER} "
                     r"\(goal <= 0\.5\)$", out, re.MULTILINE), output
    assert "load average at the start" in out and "load average at the end" in out, output
    assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"


def test_time_to_accuracy_reports_a_target_out_of_reach(tmp_path):
    result, output = run(
        TIME_TO_ACCURACY, "--tasks", "digits", "--seeds", 1, "--max_epochs", 1,
        "--eval_every", 100, "--digits_target", 1.0, "--no_save", cwd=tmp_path,
    )
    out = result.stdout
    # One epoch of 29 steps: a single evaluation at the epoch end, below 100%.
    assert re.search(
        rf"SPELA not reached \(best {NUMBER}%\); backprop not reached \(best {NUMBER}%\)$",
        out, re.MULTILINE,
    ), output
    assert re.search(r"^SPELA +\| 0/1 +\| not reached", out, re.MULTILINE), output
    assert "FAIL digits: SPELA / backprop time to 100%: SPELA not reached" in out, output


def test_time_to_accuracy_bad_task_is_one_error_line(tmp_path):
    result, output = run(TIME_TO_ACCURACY, "--tasks", "mnist", cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("error: unknown task mnist; choose from digits, cnn"), output
    assert_quiet(result, output)


def mib_row(out, title_part, depth):
    """The cells of a memory table's row for `depth` hidden layers."""
    table = out.split(title_part, 1)[1]
    row = re.search(rf"^{depth} +\|(.*)$", table, re.MULTILINE)
    assert row, out
    return [cell.strip() for cell in row.group(1).split("|")]


def test_memory_depth_smallest(tmp_path):
    result, output = run(
        MEMORY_DEPTH, "--jit", "false", "--depths", "1,2", "--width", 256, "--batch_size", 64,
        "--repeats", 1, "--no_save", cwd=tmp_path,
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
    assert re.search(rf"ratio SPELA / backprop at 2 hidden layers: activations {NUMBER}, "
                     rf"step peak {NUMBER}; SPELA sequenced / backprop activations {NUMBER}$",
                     out, re.MULTILINE), output
    assert re.search(r"^  (PASS|FAIL) jit_compile=False: SPELA activations flat in depth",
                     out, re.MULTILINE), output
    assert "NOTE: reduced setting" in out, output
    assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"


def test_memory_depth_bad_depths_is_one_error_line(tmp_path):
    result, output = run(MEMORY_DEPTH, "--depths", "2,0", cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert "argument --depths: expected integers >= 1, got '2,0'" in last, output
    assert_quiet(result, output)


CONV_SPEED = BENCHMARKS / "conv_speed.py"


def test_conv_speed_smallest(tmp_path):
    result, output = run(
        CONV_SPEED, "--jit", "false", "--batches", 1, "--blocks", 2, "--block", 1,
        "--conv_blocks", 2, "--image_size", 32, "--filters", 16, "--memory_batch", 16,
        "--repeats", 1, "--no_save", cwd=tmp_path,
    )
    out = result.stdout
    assert re.search(r"^\(1\) CNN train step, .*SPELA conv objective [a-z]+, ", out,
                     re.MULTILINE), output
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
        verdict = re.search(rf"^  (PASS|FAIL) batch 1, {way}: SPELA (fused|builtins) \(default "
                            rf"lowering\) best / backprop best ({NUMBER}) \(goal <= 1.0\)$",
                            out, re.MULTILINE)
        assert verdict, output
        assert (verdict.group(1) == "PASS") == (float(verdict.group(3)) <= 1.0), output
        assert verdict.group(3) == {"fused": cells[3], "builtins": cells[4]}[verdict.group(2)]
    assert len(re.findall(r"^  (PASS|FAIL) batch", out, re.MULTILINE)) == 2, output
    # Memory: both steps hold the first block's conv map at full resolution
    # (16 x 32 x 32 x 16 float32 = 1 MiB) while its gradients are taken.
    title = ("(2) MiB, jit_compile=False, 32x32x1, 16 filters per block, batch 16 "
             "(block 1's feature map = 1.0 MiB)")
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
    assert re.search(rf"^  ratio SPELA / backprop at 2 conv blocks \(jit_compile=False\): "
                     rf"activations {NUMBER}, step peak {NUMBER}; SPELA sequenced / backprop "
                     rf"activations {NUMBER}$", out, re.MULTILINE), output
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
    assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"
    # A bad flag: one error line.
    result, output = run(CONV_SPEED, "--parts", "time,speed", cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("error: unknown part speed; choose from time, memory, kernels"), output
    assert_quiet(result, output)



SMALL_SPEED = BENCHMARKS / "small_speed.py"


def test_small_speed_smallest(tmp_path):
    result, output = run(
        SMALL_SPEED, "--rounds", 1, "--batch1_examples", 20, "--no_save", cwd=tmp_path,
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
    assert re.search(rf"^  (PASS|FAIL) epoch time SPELA / backprop \(Adam\), batch 50: "
                     rf"{NUMBER} \(goal <= 0\.8\)$", out, re.MULTILINE), output
    assert re.search(rf"^  (PASS|FAIL) steps per second at batch 1, SPELA / backprop "
                     rf"\(Adam\): {NUMBER}x \(goal >= 1\.25x\)$", out, re.MULTILINE), output
    assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"
    result, output = run(SMALL_SPEED, "--rounds", 0, cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("error: --rounds must be >= 1, received 0"), output


MICRO_BUDGET = BENCHMARKS / "micro_budget.py"


def test_micro_budget_quick(tmp_path):
    # Seed 0, the main job's defaults and the 128 KiB row: the table's arenas
    # sit on either side of the budget, and TFLite Micro fine-tunes as LiteRT.
    result, output = run(MICRO_BUDGET, "--quick", "--no_save", cwd=tmp_path)
    rows = re.findall(r"^(defaults|last only)[^|]*\|(.*)$", result.stdout, re.MULTILINE)
    assert [name for name, _ in rows] == ["defaults", "last only"], output
    cells = {name: [float(c) for c in rest.split("|")] for name, rest in rows}
    assert cells["defaults"][0] > 128 >= cells["last only"][0], output
    for name, (_, _, _, micro_new, micro_old, litert_new, litert_old, *_) in cells.items():
        assert micro_new == pytest.approx(litert_new, abs=0.5), output
        assert micro_old == pytest.approx(litert_old, abs=0.5), output
    assert len(re.findall(r"^  (PASS|FAIL) ", result.stdout, re.MULTILINE)) == 2, output
    assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"
    for flag, value, message in (("--rows", "99", "--rows must be row numbers 0 to 6"),
                                 ("--seeds", "x", "--seeds must be comma-separated integers")):
        result, output = run(MICRO_BUDGET, flag, value, cwd=tmp_path, expect_code=2)
        assert message in result.stderr.strip().splitlines()[-1], output


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


TRAIN_SPEED = BENCHMARKS / "train_speed.py"


def test_train_speed_smallest_prints_its_estimates(tmp_path):
    result, output = run(
        TRAIN_SPEED, "--quick", "--widths", "32,16,16,10", "--examples", 256, "--epochs", 1,
        "--step_repeats", 1, "--steps_b1", 5, "--steps_b256", 1, "--profile_repeats", 2,
        "--jit", "false", "--no_save", cwd=tmp_path,
    )
    out = result.stdout
    # The batch-1 estimate is the quotient of the parts it names, and the
    # measured speed-up it quotes is the steps table's.
    line = re.search(
        rf"^  \(backprop matrix products ({NUMBER}) \+ Adam ({NUMBER}) ms\) / \(SPELA "
        rf"({NUMBER}) \+ ({NUMBER}) ms\) = ({NUMBER})x; measured \(jit_compile=False\): "
        rf"({NUMBER})x \(goal >= 1.25x\)$", out, re.MULTILINE)
    assert line, output
    mm_b, adam_b, mm_s, adam_s, estimate, measured = map(float, line.groups())
    expected = (mm_b + adam_b) / (mm_s + adam_s)
    assert estimate == pytest.approx(expected, rel=0.01, abs=0.006), output
    steps_row = re.search(r"^jit_compile=False \| 1 +\| 5 +\|.*\| (" + NUMBER + r") *$",
                          out, re.MULTILINE)
    assert steps_row and float(steps_row.group(1)) == measured, output
    bound = re.search(
        rf"only its Adam update would be ({NUMBER})x backprop's speed \(backprop's full step "
        rf"({NUMBER}) ms / ({NUMBER}) ms\); 1.25x leaves (-?{NUMBER}) ms", out)
    assert bound, output
    ratio, step_b, adam, left = map(float, bound.groups())
    assert adam == adam_s and ratio == pytest.approx(step_b / adam, rel=0.01, abs=0.006), output
    assert left == pytest.approx(step_b / 1.25 - adam, abs=0.002), output
    assert "Estimate: the epoch ratio" in out, output
    assert_quiet(result, output)
    assert not list(tmp_path.iterdir()), "--no_save wrote files"
    # A bad flag: one error line.
    result, output = run(TRAIN_SPEED, "--widths", "784,abc", cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("error: --widths must be an input dim and at least two layer "
                         "widths, integers >= 1 separated by commas, got '784,abc'"), output
    assert_quiet(result, output)


FASHION_MNIST = BENCHMARKS / "fashion_mnist.py"
FASHION_CONFIGS = [
    "spela mlp 784-1000-34 defaults", "spela mlp 784-1000-34 recipe",
    "backprop mlp 784-1000-34+head", "spela cnn 32-64-256-34",
    "backprop cnn 32-64-256-34+head", "spela cnn 32-64-128-256-34",
    "backprop cnn 32-64-128-256-34+head",
]


def fashion_trials(out):
    """`{(configuration, seed): (epoch 1 %, best %, first epoch s, median epoch s)}`
    of the per-trial progress lines."""
    lines = re.findall(
        rf"^  seed ([0-9]+) \| ([^|]+?) \| epoch 1 ({NUMBER}) \| best ({NUMBER}) \(epoch "
        rf"[12]\) \| epoch s ({NUMBER}) first, ({NUMBER}) median \| [0-9]+ s$",
        out, re.MULTILINE)
    return {(name, int(seed)): tuple(map(float, rest)) for seed, name, *rest in lines}


def fashion_table(out, title):
    """The rows of the table titled `title...` as lists of stripped cells."""
    lines = out.split(title, 1)[1].splitlines()[3:]
    return [[c.strip() for c in line.split("|")] for line in lines[: lines.index("")]]


def mean_cell(cell):
    mean, std = cell.split(" ± ")
    return float(mean), float(std)


def test_fashion_mnist_quick_in_two_pieces_and_report(tmp_path):
    # Piece 1: every configuration, seed 0; piece 2: the MLPs, seed 1; then the
    # report of both from the records file, which must be the pieces' numbers.
    records = tmp_path / "runs.jsonl"
    first, output = run(FASHION_MNIST, "--quick", "--no_save", "--results_json", records,
                        cwd=tmp_path)
    assert_quiet(first, output)
    second, output = run(FASHION_MNIST, "--quick", "--part", "mlp", "--first_seed", 1,
                         "--no_save", "--results_json", records, cwd=tmp_path)
    assert_quiet(second, output)
    trials = {**fashion_trials(first.stdout), **fashion_trials(second.stdout)}
    assert sorted(trials) == sorted([(n, 0) for n in FASHION_CONFIGS]
                                    + [(n, 1) for n in FASHION_CONFIGS[:3]]), output
    assert len(records.read_text().splitlines()) == 10, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.jsonl"], "--no_save wrote files"

    report, output = run(FASHION_MNIST, "--quick", "--report_only", "--no_save",
                         "--results_json", records, cwd=tmp_path)
    out = report.stdout
    assert_quiet(report, output)
    assert "report only: 10 records of" in out and "Test accuracy %" in first.stdout, output
    # Accuracy: every configuration's best-exit row holds the means (and
    # population stds) of its seeds' printed values; with one seed, the best
    # exit is the best of the exits' rows.
    table = {}  # configuration: (its row, its exits' rows)
    for row in fashion_table(out, "Test accuracy %, mean ± std over seeds"):
        if row[0]:
            table[row[0]] = (row, [])
        else:
            table[list(table)[-1]][1].append(row)
    assert list(table) == FASHION_CONFIGS, output
    best_within = {}
    for name, (row, exits) in table.items():
        _, seeds, epochs, label, epoch1, epoch5, best = row
        seeds = [0, 1] if " mlp " in name else [0]
        assert (int(row[1]), epochs, epoch5) == (len(seeds), "2", "-"), output
        assert label == ("output" if name.startswith("backprop") else "best exit"), output
        for cell, column in ((epoch1, 0), (best, 1)):
            values = [trials[name, seed][column] for seed in seeds]
            mean, std = mean_cell(cell)
            assert mean == pytest.approx(sum(values) / len(values), abs=0.011), output
            assert std == pytest.approx(abs(values[0] - values[-1]) / 2, abs=0.011), output
        best_within[name] = mean_cell(best)[0]
        convs = [] if " mlp " in name else ["conv1", "conv2", "conv3"][: name.count("-") - 1]
        expected = [] if name.startswith("backprop") else convs + ["d1", "d2"]
        assert [r[3] for r in exits] == expected, output
        if exits and len(seeds) == 1:
            for column in (4, 6):
                assert mean_cell(row[column])[0] == max(mean_cell(r[column])[0] for r in exits)
    # Epoch seconds: the medians are the trials', the ratios their quotients.
    medians = {}
    for name, epoch1, median, total, ratio in fashion_table(out, "Training seconds per epoch"):
        seeds = [0, 1] if " mlp " in name else [0]
        firsts = [trials[name, s][2] for s in seeds]
        mids = [trials[name, s][3] for s in seeds]
        medians[name] = float(median)
        assert float(epoch1) == pytest.approx(sum(firsts) / len(seeds), abs=0.0011), output
        assert float(median) == pytest.approx(sum(mids) / len(seeds), abs=0.0011), output
        assert float(total) == pytest.approx(sum(firsts) + sum(mids), abs=0.06), output
        assert (ratio == "-") == name.startswith("backprop"), output
    for name, partner in ((FASHION_CONFIGS[0], FASHION_CONFIGS[2]),
                          (FASHION_CONFIGS[1], FASHION_CONFIGS[2]),
                          (FASHION_CONFIGS[3], FASHION_CONFIGS[4]),
                          (FASHION_CONFIGS[5], FASHION_CONFIGS[6])):
        row = [r for r in fashion_table(out, "Training seconds per epoch") if r[0] == name]
        assert float(row[0][4]) == pytest.approx(
            medians[name] / medians[partner], rel=0.01, abs=0.002), output
    # Verdicts: one line per goal, MET exactly when the value reaches the goal,
    # by the difference printed; the values are the table's.
    verdicts = re.findall(
        rf"^  (MET   |MISSED) (.*): ({NUMBER})%(?: vs ({NUMBER})%)? \((?:\+(-?{NUMBER}) points|"
        rf"missed by ({NUMBER}) points)\)$", out, re.MULTILINE)
    assert len(verdicts) == 2 + (1 + 1 + 2) + (1 + 1 + 3) + 1, output
    for verdict, text, value, versus, ahead, behind in verdicts:
        value = float(value)
        goal = float(versus) if versus else float(re.search(rf">= ({NUMBER})%$", text)[1])
        met = value > goal if "better than" in text else value >= goal
        assert (verdict == "MET   ") == met, output
        difference = float(ahead) if ahead else -float(behind)
        assert difference == pytest.approx(value - goal, abs=0.011), output
        names = re.split(r" >= | better than ", text.split(",")[0])
        if "conv exit" not in text:
            assert value == best_within[names[0]], output
        if versus:
            assert goal == best_within[names[1]], output
    assert ("NOTE: reduced setting (1000 training, 1000 test images, fewest seeds per "
            "configuration 1, MLP 2 epochs, CNN 2 epochs)") in out, output
    # A bad flag: one error line.
    result, output = run(FASHION_MNIST, "--part", "rnn", cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("error: unknown part rnn; choose from mlp, cnn, all"), output
    assert_quiet(result, output)
