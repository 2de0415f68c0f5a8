"""benchmarks/fashion_mnist.py as a user runs it (subprocesses from a temporary directory,
--no_save): the quick run in two pieces and their report (means and stds of the printed
per-seed values, best exit over the exits, ratios of the printed medians, verdicts against
the table); a bad --part is one error line."""

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
FASHION_MNIST = BENCHMARKS / "fashion_mnist.py"
FASHION_CONFIGS = [
    "spela mlp 784-1000-34 defaults",
    "spela mlp 784-1000-34 recipe",
    "backprop mlp 784-1000-34+head",
    "spela cnn 32-64-256-34",
    "backprop cnn 32-64-256-34+head",
    "spela cnn 32-64-128-256-34",
    "backprop cnn 32-64-128-256-34+head",
]


def fashion_trials(out):
    """`{(configuration, seed): (epoch 1 %, best %, first epoch s, median epoch s)}`
    of the per-trial progress lines."""
    lines = re.findall(
        rf"^  seed ([0-9]+) \| ([^|]+?) \| epoch 1 ({NUMBER}) \| best ({NUMBER}) \(epoch "
        rf"[12]\) \| epoch s ({NUMBER}) first, ({NUMBER}) median \| [0-9]+ s$",
        out,
        re.MULTILINE,
    )
    return {(name, int(seed)): tuple(map(float, rest)) for seed, name, *rest in lines}


def fashion_table(out, title):
    """The rows of the table titled `title...` as lists of stripped cells."""
    lines = out.split(title, 1)[1].splitlines()[3:]
    return [[c.strip() for c in line.split("|")] for line in lines[: lines.index("")]]


# --quick on fewer images: 200 training and 200 test images; the MLP's batch 10 keeps
# its epochs at 20 steps (the printed medians, 3 decimals, must stay well above their
# rounding for the ratio check).
QUICK = ("--quick", "--train_examples", 200, "--test_examples", 200, "--batch_size", 10)


def mean_cell(cell):
    mean, std = cell.split(" ± ")
    return float(mean), float(std)


def test_fashion_mnist_quick_in_two_pieces_and_report(tmp_path, scripts):
    # Piece 1: every configuration, seed 0; piece 2: the MLPs, seed 1; then the
    # report of both from the records file, which must be the pieces' numbers.
    records = tmp_path / "runs.jsonl"
    first, output = scripts.run(
        FASHION_MNIST, *QUICK, "--no_save", "--results_json", records, cwd=tmp_path
    )
    scripts.assert_quiet(first, output)
    second, output = scripts.run(
        FASHION_MNIST,
        *QUICK,
        "--part",
        "mlp",
        "--first_seed",
        1,
        "--no_save",
        "--results_json",
        records,
        cwd=tmp_path,
    )
    scripts.assert_quiet(second, output)
    trials = {**fashion_trials(first.stdout), **fashion_trials(second.stdout)}
    assert sorted(trials) == sorted(
        [(n, 0) for n in FASHION_CONFIGS] + [(n, 1) for n in FASHION_CONFIGS[:3]]
    ), output
    assert len(records.read_text().splitlines()) == 10, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.jsonl"], "--no_save wrote files"

    report, output = scripts.run(
        FASHION_MNIST,
        *QUICK,
        "--report_only",
        "--no_save",
        "--results_json",
        records,
        cwd=tmp_path,
    )
    out = report.stdout
    scripts.assert_quiet(report, output)
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
    for name, partner in (
        (FASHION_CONFIGS[0], FASHION_CONFIGS[2]),
        (FASHION_CONFIGS[1], FASHION_CONFIGS[2]),
        (FASHION_CONFIGS[3], FASHION_CONFIGS[4]),
        (FASHION_CONFIGS[5], FASHION_CONFIGS[6]),
    ):
        row = [r for r in fashion_table(out, "Training seconds per epoch") if r[0] == name]
        assert float(row[0][4]) == pytest.approx(
            medians[name] / medians[partner], rel=0.01, abs=0.002
        ), output
    # Verdicts: one line per goal, MET exactly when the value reaches the goal,
    # by the difference printed; the values are the table's.
    verdicts = re.findall(
        rf"^  (MET   |MISSED) (.*): ({NUMBER})%(?: vs ({NUMBER})%)? \((?:\+(-?{NUMBER}) points|"
        rf"missed by ({NUMBER}) points)\)$",
        out,
        re.MULTILINE,
    )
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
    assert (
        "NOTE: reduced setting (200 training, 200 test images, fewest seeds per "
        "configuration 1, MLP 2 epochs, CNN 2 epochs)"
    ) in out, output
    # A bad flag: one error line.
    result, output = scripts.run(FASHION_MNIST, "--part", "rnn", cwd=tmp_path, expect_code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("error: unknown part rnn; choose from mlp, cnn, all"), output
    scripts.assert_quiet(result, output)
