"""One batch-acceptance decision on every runtime.

The host (`SpelaModel`), LiteRT, LiteRT's CompiledModel, tflite-runtime and
TFLite Micro accept or reject each hostile batch alike (NaN, +-inf, +-3e38,
1e38 everywhere as in an uninitialised sensor buffer, subnormal values,
labels out of range, padding only), and a rejected batch changes no weight
and no optimizer state on any of them. TFLite Micro saturates float32
overflow at +-FLT_MAX where the others give inf, so the decision must not
depend on how a runtime overflows (`keras_spela.core.acceptance`).

The device runtimes run in child processes (tflite-runtime in its own
numpy<2 virtualenv with the device package, see tflite_runtime_test.py): a
crash is a failed test.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spela
import keras_spela_device  # what the device processes run
from keras_spela import SpelaConv2D
from keras_spela import SpelaDense
from keras_spela import SpelaModel

REPO = pathlib.Path(__file__).resolve().parents[2]
TFLITE_PYTHON = os.environ.get(
    "KERAS_SPELA_TFLITE_PYTHON", str(REPO / ".venv-tflite" / "bin" / "python")
)
BATCH = 8
NUM_CLASSES = 10


def _with_entry(value):
    def make(x, y):
        x = x.copy()
        x.reshape(BATCH, -1)[2, 5] = value
        return x, y

    return make


def _everywhere(value):
    return lambda x, y: (np.full_like(x, value), y)


def _with_label(value):
    def make(x, y):
        y = y.copy()
        y[3] = value
        return x, y

    return make


# name: (batch from a good (x, y), accepted)
CASES = {
    "good": (lambda x, y: (x, y), True),
    "nan": (_with_entry(np.nan), False),
    "+inf": (_with_entry(np.inf), False),
    "-inf": (_with_entry(-np.inf), False),
    "+3e38 everywhere": (_everywhere(3e38), False),
    "-3e38 everywhere": (_everywhere(-3e38), False),
    "1e38 everywhere": (_everywhere(1e38), False),
    "-1e38 everywhere": (_everywhere(-1e38), False),
    "3e38 in one entry": (_with_entry(3e38), False),
    "1e20 in one entry": (_with_entry(1e20), False),
    "subnormal 1e-40 everywhere": (_everywhere(1e-40), True),
    "subnormal 1e-45 in half": (
        lambda x, y: (np.where(x > 0.5, np.float32(1e-45), x).astype(np.float32), y),
        True,
    ),
    "label 2**31-1": (_with_label(2**31 - 1), False),
    "label num_classes": (_with_label(NUM_CLASSES), False),
    "label -5": (_with_label(-5), False),
    "label -2**31": (_with_label(-(2**31)), False),
    "padding only": (
        lambda x, y: (x, np.full_like(y, keras_spela_device.contract.PADDING_LABEL)),
        False,
    ),
}
RUNTIMES = ["litert", "litert_compiled", "tflite_runtime", "micro"]

# Runs in a child process: the device decisions of every case, for every model kind, on
# one runtime.
DEVICE_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    from keras_spela_device import DeviceTrainer
    from keras_spela_device import DeviceTrainingError

    job = json.loads(sys.argv[1])
    runtime = job["runtime"]


    def same(a, b):
        return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


    def decide(model, batches_path):
        with np.load(batches_path) as data:
            batches = {k: data[k] for k in data.files}
        good = batches["x|good"], batches["y|good"]
        probe = batches["x|probe"], batches["y|probe"]

        def trainer():
            t = DeviceTrainer(model, runtime=runtime)
            t.train_batch(*good)  # optimizer state that is not the initial one
            return t

        # What the good batch and the probe give without a case in between.
        reference = trainer()
        reference.train_batch(*probe)
        reference = reference.get_weights()
        report = {}
        for case in job["cases"]:
            x, y = batches[f"x|{case}"], batches[f"y|{case}"]
            t = trainer()
            before = t.get_weights()  # weights and (but on TFLite Micro) optimizer state
            accepted = int(t._backend.train(x, y)["accepted"])
            unchanged = same(before, t.get_weights())
            # Optimizer state (hidden on TFLite Micro): the probe batch then
            # trains exactly as if the case had never been given.
            t.train_batch(*probe)
            state_kept = same(reference, t.get_weights())
            try:
                DeviceTrainer(model, runtime=runtime).train_batch(x, y)
                trainer_accepts = True
            except DeviceTrainingError:
                trainer_accepts = False
            report[case] = dict(accepted=accepted, unchanged=unchanged, state_kept=state_kept,
                                trainer_accepts=trainer_accepts)
        return report


    reports = {kind: decide(model, batches) for kind, model, batches in job["models"]}
    print("REPORT " + json.dumps(reports))
    """
)


def _make_model(kind):
    keras.utils.set_random_seed(0)
    if kind == "dense":
        layers = [keras.Input((64,)), SpelaDense(32), SpelaDense(16)]
    elif kind == "dense, normalize_inputs":
        layers = [keras.Input((64,)), SpelaDense(32, normalize_inputs=True), SpelaDense(16)]
    elif kind == "conv, layer normalization":
        layers = [
            keras.Input((8, 8, 1)),
            SpelaConv2D(4, 3, padding="same", normalization="layer"),
            keras.layers.Flatten(),
            SpelaDense(16),
        ]
    else:
        layers = [
            keras.Input((8, 8, 1)),
            SpelaConv2D(4, 3, padding="same"),
            keras.layers.Flatten(),
            SpelaDense(16),
        ]
    model = SpelaModel(layers, num_classes=NUM_CLASSES)
    model.compile(keras.optimizers.Adam(1e-2))
    return model


def _batches(kind):
    """{case: (x, y)}, plus "good" and "probe" batches."""
    shape = (64,) if kind.startswith("dense") else (8, 8, 1)
    rng = np.random.default_rng(0)
    x = rng.random((BATCH,) + shape).astype(np.float32)
    y = (np.arange(BATCH) % NUM_CLASSES).astype(np.int32)
    batches = {case: make(x, y) for case, (make, _) in CASES.items()}
    batches["probe"] = (rng.random((BATCH,) + shape).astype(np.float32), y[::-1].copy())
    return batches


def _device_env(runtime):
    # tflite-runtime's virtualenv has its own device package (tools/install.sh).
    drop = ("PYTHONPATH",) if runtime == "tflite_runtime" else ()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP") + drop
    }
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _run_device(runtime, models):
    """{kind: {case: decisions}} of one runtime (one process) for `models`, a list of
    `(kind, model path, batches path)`; `{"skip": why}` without tflite-runtime."""
    python = sys.executable
    if runtime == "tflite_runtime":
        python = TFLITE_PYTHON
        if not os.path.exists(python):
            return {"skip": f"no tflite-runtime virtualenv at {python}"}
    job = {"runtime": runtime, "models": models, "cases": list(CASES)}
    result = subprocess.run(
        [python, "-c", DEVICE_SCRIPT, json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_device_env(runtime),
    )
    lines = [l for l in result.stdout.splitlines() if l.startswith("REPORT ")]
    assert result.returncode == 0 and lines, (
        f"{runtime} died (exit code {result.returncode}):\n" + result.stderr[-3000:]
    )
    return json.loads(lines[-1][len("REPORT ") :])


def _host_decisions(kind, batches):
    """{case: (accepted, nothing changed on a rejection)} of SpelaModel."""
    model = _make_model(kind)
    model.train_on_batch(*batches["good"])
    variables = model.variables + model.optimizer.variables
    saved = [v.numpy().copy() for v in variables]
    decisions = {}
    for case in CASES:
        try:
            model.train_on_batch(*batches[case])
            accepted = True
        except (ValueError, tf.errors.InvalidArgumentError):
            accepted = False
        unchanged = all(np.array_equal(v.numpy(), s) for v, s in zip(variables, saved))
        decisions[case] = (accepted, unchanged)
        for variable, value in zip(variables, saved):
            variable.assign(value)
    return decisions


KINDS = ["dense", "conv", "dense, normalize_inputs", "conv, layer normalization"]


@pytest.fixture(scope="module")
def decisions(tmp_path_factory):
    """{kind: {"host": ..., runtime: report}}: every model kind exported, each runtime
    deciding on all of them in one process."""
    paths = {}  # {kind: (LiteRT path, TFLite Micro path, batches path)}
    result = {}
    for index, kind in enumerate(KINDS):
        out = tmp_path_factory.mktemp(f"acceptance{index}")
        model = _make_model(kind)
        batches = _batches(kind)
        np.savez(
            out / "batches.npz",
            **{f"{k}|{n}": v for n, (x, y) in batches.items() for k, v in (("x", x), ("y", y))},
        )
        lite = keras_spela.export_tflite(model, str(out / "m.tflite"), batch_size=BATCH)
        micro = keras_spela.export_tflite_micro(
            model,
            str(out / "micro.tflite"),
            batch_size=BATCH,
            optimizer="adam",
            learning_rate=1e-2,
            expose_weights=True,
        )
        paths[kind] = (lite.path, micro.path, str(out / "batches.npz"))
        result[kind] = {"kind": kind, "host": _host_decisions(kind, batches)}
    for runtime in RUNTIMES:
        models = [
            (kind, micro if runtime == "micro" else lite, batches)
            for kind, (lite, micro, batches) in paths.items()
        ]
        reports = _run_device(runtime, models)
        for kind in KINDS:
            result[kind][runtime] = reports if "skip" in reports else reports[kind]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", KINDS)
def test_every_runtime_decides_alike(decisions, kind, case):
    decisions = decisions[kind]
    expected = CASES[case][1]
    host_accepted, host_unchanged = decisions["host"][case]
    assert host_accepted == expected, f"host: {case}"
    if not host_accepted:
        assert host_unchanged, f"host: a rejected {case} batch changed a variable"
    for runtime in RUNTIMES:
        report = decisions[runtime]
        if "skip" in report:
            continue
        result = report[case]
        where = f"{runtime} ({decisions['kind']} model), {case}"
        assert result["accepted"] == int(expected), where
        # DeviceTrainer's own checks come to the same decision.
        assert result["trainer_accepts"] == expected, where
        if not expected:
            assert result["unchanged"], f"{where}: a weight changed"
            assert result["state_kept"], f"{where}: the optimizer state changed"


@pytest.mark.slow
def test_tflite_runtime_was_run(decisions):
    if "skip" in decisions[KINDS[0]]["tflite_runtime"]:
        pytest.skip(decisions[KINDS[0]]["tflite_runtime"]["skip"])


def test_host_checks_labels_before_narrowing_them():
    """int64 labels of 2**32 would wrap to 0 in int32: refused as out of range."""
    model = _make_model("dense")
    x = np.random.default_rng(0).random((BATCH, 64)).astype(np.float32)
    for labels in (
        np.arange(BATCH, dtype=np.int64) + 2**32,
        np.arange(BATCH, dtype=np.int64) - 2**32 + 1,
    ):
        with pytest.raises(ValueError, match=r"label outside \[0, num_classes=10\)"):
            model.train_on_batch(x, labels)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
