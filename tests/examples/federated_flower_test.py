"""examples/federated_flower.py as real processes (a SuperLink, SuperNodes and `flwr run`
on localhost, the server keras_spela_device.flower_server): 3 clients x 3 rounds on
non-IID shards of the digits reach the accuracy of central training without TensorFlow in
any client process, and a client with another model is left out of FedAvg with its error
while the others go on."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from keras_spela_device import DeviceTrainer

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "federated_flower.py"
# What the example prints for a round of the federated run.
ROUND_LINE = re.compile(
    r"^round +(\d+): global test accuracy exit_0 +([0-9.]+)% \| exit_1 +([0-9.]+)%"
    r"(?: \((\d+) of (\d+) clients averaged\))?$",
    re.MULTILINE,
)
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|oneDNN|cpu_feature_guard|Traceback")


# ------------------------------------------------------- real Flower processes
def run_example(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + env.get("PYTHONPATH", "").split(os.pathsep))
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--output_dir", str(tmp_path), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    output = f"exit code {result.returncode}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, output
    noisy = [line for line in result.stderr.splitlines() if TF_LOG_LINE.search(line)]
    assert not noisy, f"log lines on stderr: {noisy[:5]}\n{output}"
    rounds = [
        (int(r), float(a0), float(a1), int(n) if n else None, int(m) if m else None)
        for r, a0, a1, n, m in ROUND_LINE.findall(result.stdout)
    ]
    return result.stdout, rounds, output


def test_three_clients_three_rounds_on_non_iid_digits(tmp_path, digits):
    stdout, rounds, output = run_example(
        tmp_path, "--clients", 3, "--rounds", 3, "--split", "dirichlet", "--alpha", 0.5, "--seed", 0
    )
    assert [r[0] for r in rounds] == [0, 1, 2, 3], output
    assert all(r[3:] == (3, 3) for r in rounds[1:]), output  # every client averaged every round
    assert rounds[3][2] > rounds[0][2] + 50, output
    assert rounds[3][2] > 85.0, output
    # No client process had TensorFlow (each reports "tensorflow" in sys.modules).
    assert "client rounds whose process had imported TensorFlow: 0 of 9" in stdout, output
    results = json.loads((tmp_path / "results.json").read_text())
    assert [len(r["replies"]) for r in results["rounds"]] == [0, 3, 3, 3], output
    assert all(
        reply["tensorflow-imported"] == 0.0 for r in results["rounds"] for reply in r["replies"]
    )
    # The shards are non-IID and together the whole training set.
    (x_train, y_train), (x_test, y_test) = digits
    sizes = [sum(r["num-examples"] for r in results["rounds"][1]["replies"])]
    assert sizes == [len(x_train)], output
    # The saved global model is the one evaluated in the last round.
    trainer = DeviceTrainer(tmp_path / "spela.tflite")
    with np.load(tmp_path / "results.npz") as final:
        trainer.set_weights({**trainer.get_weights(), **dict(final)})
    accuracy = trainer.evaluate(x_test, y_test)["exit_1_accuracy"]
    assert 100 * accuracy == pytest.approx(rounds[3][2], abs=0.006), output
    # Central training on the union for as many epochs (3), with the same model file.
    match = re.search(
        r"^central \(union of the shards, 3 epochs\): .*exit_1 +([0-9.]+)%$", stdout, re.M
    )
    assert match, output
    assert abs(float(match.group(1)) - rounds[3][2]) < 6.0, output
    assert re.search(
        r"^goal \(federated within 2 points of central, last exit\): ", stdout, re.M
    ), output


def test_client_with_another_model_is_left_out(tmp_path):
    stdout, rounds, output = run_example(
        tmp_path, "--clients", 2, "--rounds", 1, "--mismatched_client", 1, "--seed", 1
    )
    assert "client_1 gets" in stdout and "it does not match the server's model" in stdout, output
    assert rounds[1][3:] == (1, 2), output  # one of two clients averaged
    failure = re.search(r"^  node \d+ failed: ModelMismatchError: (.*)$", stdout, re.M)
    assert failure, output
    assert "the model of client client_1" in failure.group(1), output
    assert "hidden_kernel is (64, 256) on the server, (64, 128) here" in failure.group(1), output
    assert "Nothing was trained or changed" in failure.group(1), output
    # Nothing lost: the other client's round still moved the global model.
    assert rounds[1][2] > rounds[0][2] + 30, output


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
