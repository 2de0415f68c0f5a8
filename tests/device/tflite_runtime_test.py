"""The exported model trains in tflite-runtime WITHOUT TensorFlow, as on a device.

tflite-runtime 2.14 needs numpy < 2 and TensorFlow 2.21 needs numpy >= 2, so
tflite-runtime lives in its own virtualenv (by default `<repo>/.venv-tflite`,
or the Python named by KERAS_SPELA_TFLITE_PYTHON), with the device package
installed (`pip install -e ./export`, as tools/install.sh does). The test
exports models with TensorFlow here, then runs keras_spela_device in that
Python as a subprocess and compares the weights it learned with
SpelaModel.fit.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_spela
from keras_spela import SpelaConv2D
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela_device import DeviceTrainer

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
TFLITE_PYTHON = os.environ.get(
    "KERAS_SPELA_TFLITE_PYTHON", str(REPO / ".venv-tflite" / "bin" / "python")
)

BATCH = 16
STEPS = 24
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(learning_rate=0.5),
    "momentum": lambda: keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(learning_rate=1e-2),
}

# Runs in the tflite-runtime virtualenv: no TensorFlow may be present.
DEVICE_SCRIPT = textwrap.dedent(
    """
    import importlib.util
    import json
    import sys

    jobs_path = sys.argv[1]
    assert importlib.util.find_spec("tensorflow") is None, "tensorflow is importable"
    import numpy as np
    import keras_spela_device as device_trainer

    report = {"numpy": np.__version__}
    with open(jobs_path) as f:
        jobs = json.load(f)
    for job in jobs:
        trainer = device_trainer.DeviceTrainer(job["model"], runtime="tflite_runtime")
        assert trainer.runtime == "tflite_runtime", trainer.runtime
        with np.load(job["data"]) as data:
            x, y = data["x"], data["y"]
        history = trainer.fit(x, y, epochs=1, shuffle=False, verbose=0)
        trainer.save_weights(job["weights"])
        scores = trainer.predict(x[:37])
        np.save(job["scores"], scores)
        # Any number of rows, in any order: the rows of the 37-row scores.
        rows = {}
        for n in (1, 5, 0, 16, 37, 2):
            every = trainer.predict(x[:n], exit="all")
            accuracy = trainer.evaluate(x[:n], y[:n])
            rows[n] = all(
                v.shape == (n, trainer.num_classes)
                and np.allclose(v, trainer.predict(x[:37], exit=name)[:n], rtol=1e-5, atol=1e-6)
                for name, v in every.items()
            ) and sorted(accuracy) == sorted(f"{e}_accuracy" for e in trainer.exits)
        report[job["name"]] = {"loss": history["loss"][-1], "rows": rows}

    import tflite_runtime

    report["tflite_runtime"] = tflite_runtime.__version__
    report["modules"] = sorted(
        m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "ai_edge_litert")
    )
    assert not report["modules"], report["modules"]
    print("REPORT " + json.dumps(report))
    """
)


def _tflite_python_or_skip():
    if not os.path.exists(TFLITE_PYTHON):
        pytest.skip(
            f"tflite-runtime virtualenv not found at {TFLITE_PYTHON}: create it with "
            "tflite-runtime and numpy<2 (or set KERAS_SPELA_TFLITE_PYTHON)"
        )
    probe = subprocess.run(
        [TFLITE_PYTHON, "-c", "import tflite_runtime.interpreter"],
        capture_output=True,
        text=True,
        env=_device_env(),
    )
    if probe.returncode != 0:
        pytest.skip(f"tflite-runtime is not importable by {TFLITE_PYTHON}: {probe.stderr[-500:]}")
    probe = subprocess.run(
        [TFLITE_PYTHON, "-c", "import keras_spela_device"],
        capture_output=True,
        text=True,
        env=_device_env(),
    )
    assert probe.returncode == 0, (
        f"the device package is not installed for {TFLITE_PYTHON}: run "
        f"'{TFLITE_PYTHON} -m pip install -e {REPO / 'export'}' (tools/install.sh tests "
        f"does): {probe.stderr[-300:]}"
    )
    return TFLITE_PYTHON


def _device_env():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _relative_error(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module")
def device_run(tmp_path_factory):
    """Exports one model per optimizer, trains them with SpelaModel.fit here
    and with tflite-runtime in the device Python (one subprocess)."""
    python = _tflite_python_or_skip()
    out = tmp_path_factory.mktemp("tflite_runtime")
    (x_train, y_train), _ = keras_spela.datasets.load_digits()
    x, y = x_train[: BATCH * STEPS], y_train[: BATCH * STEPS]
    data_path = out / "batches.npz"
    np.savez(data_path, x=x, y=y)

    jobs, host = [], {}
    for name, optimizer in OPTIMIZERS.items():
        keras.utils.set_random_seed(0)
        model = SpelaModel(
            [keras.Input((64,)), SpelaDense(32), SpelaDense(16, local_loss="log_cosine")],
            num_classes=10,
        )
        model.compile(optimizer=optimizer())
        initial = {
            f"{layer.name}_{v.path.split('/')[-1]}": v.numpy()
            for layer in model.exit_layers
            for v in layer.trainable_variables
        }
        export = keras_spela.export_tflite(model, str(out / f"{name}.tflite"), batch_size=BATCH)
        history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        host[name] = {
            "initial": initial,
            "weights": {
                f"{layer.name}_{v.path.split('/')[-1]}": v.numpy()
                for layer in model.exit_layers
                for v in layer.trainable_variables
            },
            "scores": model.predict(x[:37], verbose=0),
            "loss": history.history["loss"][-1],
            "state_names": export.state_names,
        }
        jobs.append(
            {
                "name": name,
                "model": export.path,
                "data": str(data_path),
                "weights": str(out / f"{name}_weights.npz"),
                "scores": str(out / f"{name}_scores.npy"),
            }
        )
    # A short last batch (5 examples, padded with rows labelled -1) and a
    # model whose frozen layer is int8 (quantize_frozen).
    padded_path = out / "padded.npz"
    np.savez(padded_path, x=x_train[: BATCH * 4 + 5], y=y_train[: BATCH * 4 + 5])
    keras.utils.set_random_seed(1)
    model = SpelaModel([keras.Input((64,)), SpelaDense(32), SpelaDense(16)], num_classes=10)
    model.compile(optimizer=OPTIMIZERS["adam"]())
    export = keras_spela.export_tflite(model, str(out / "padded.tflite"), batch_size=BATCH)
    model.fit(
        x_train[: BATCH * 4 + 5],
        y_train[: BATCH * 4 + 5],
        batch_size=BATCH,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    host["padded"] = {
        "weights": {
            f"{layer.name}_{v.path.split('/')[-1]}": v.numpy()
            for layer in model.exit_layers
            for v in layer.trainable_variables
        }
    }
    keras.utils.set_random_seed(2)
    big = SpelaModel([keras.Input((64,)), SpelaDense(256), SpelaDense(16)], num_classes=10)
    quantized = keras_spela.export_tflite(
        big,
        str(out / "quantized.tflite"),
        batch_size=BATCH,
        optimizer="adam",
        learning_rate=1e-2,
        train_layers=1,
        quantize_frozen=True,
    )
    litert = DeviceTrainer(quantized.path, runtime="litert")
    host["quantized"] = {"initial": litert.get_weights()}
    litert.fit(x, y, epochs=1, shuffle=False, verbose=0)
    host["quantized"].update(weights=litert.get_weights(), scores=litert.predict(x[:37]))
    conv_data = _conv_jobs(out, host)
    for name, path, data in (
        ("padded", export.path, padded_path),
        ("quantized", quantized.path, data_path),
        ("conv", str(out / "conv.tflite"), conv_data),
        ("conv_quantized", str(out / "conv_quantized.tflite"), conv_data),
    ):
        jobs.append(
            {
                "name": name,
                "model": path,
                "data": str(data),
                "weights": str(out / f"{name}_weights.npz"),
                "scores": str(out / f"{name}_scores.npy"),
            }
        )
    jobs_path = out / "jobs.json"
    jobs_path.write_text(json.dumps(jobs))
    script_path = out / "device_script.py"
    script_path.write_text(DEVICE_SCRIPT)
    result = subprocess.run(
        [python, str(script_path), str(jobs_path)],
        capture_output=True,
        text=True,
        env=_device_env(),
        cwd=str(out),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [l for l in result.stdout.splitlines() if l.startswith("REPORT ")]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT ") :])
    report["stderr"] = result.stderr
    device = {}
    for job in jobs:
        with np.load(job["weights"]) as data:
            device[job["name"]] = {
                "weights": {k: data[k] for k in data.files},
                "scores": np.load(job["scores"]),
            }
    return {"host": host, "device": device, "report": report}


def _conv_model(seed, filters):
    keras.utils.set_random_seed(seed)
    return SpelaModel(
        [
            keras.Input((20, 20, 1)),
            SpelaConv2D(filters[0], 5, padding="same", name="conv1"),
            SpelaConv2D(filters[1], 3, padding="same", name="conv2"),
            keras.layers.Flatten(),
            SpelaDense(16, name="head"),
        ],
        num_classes=10,
    )


def _conv_jobs(out, host):
    """A SPELA CNN trained by fit (Adam), and one whose conv layers are
    frozen as int8 constants below a trainable head, trained on LiteRT here:
    the host results of the "conv" and "conv_quantized" jobs. Returns the
    path of their data (canvas digits)."""
    (x, y), _ = keras_spela.datasets.load_canvas_digits()
    x, y = x[: BATCH * 20], y[: BATCH * 20]
    data_path = out / "canvas.npz"
    np.savez(data_path, x=x, y=y)
    model = _conv_model(3, (4, 8))
    # Adam's first step is lr * g / (|g| + epsilon): float rounding of a
    # gradient entry near epsilon moves a weight by up to lr / epsilon times
    # that rounding; the conv read-outs have such entries at Keras' 1e-7.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2, epsilon=1e-6))
    initial = _weights(model)
    keras_spela.export_tflite(model, str(out / "conv.tflite"), batch_size=BATCH)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    host["conv"] = {
        "initial": initial,
        "weights": _weights(model),
        "scores": model.predict(x[:37], verbose=0),
    }
    frozen = _conv_model(4, (16, 32))
    quantized = keras_spela.export_tflite(
        frozen,
        str(out / "conv_quantized.tflite"),
        batch_size=BATCH,
        optimizer="sgd",
        learning_rate=0.1,
        train_layers=1,
        quantize_frozen=True,
    )
    assert quantized.weight_names == ["head_kernel", "head_bias"]
    litert = DeviceTrainer(quantized.path, runtime="litert")
    host["conv_quantized"] = {"initial": litert.get_weights()}
    litert.fit(x, y, epochs=1, shuffle=False, verbose=0)
    host["conv_quantized"].update(weights=litert.get_weights(), scores=litert.predict(x[:37]))
    return data_path


def _weights(model):
    return {
        f"{layer.name}_{v.path.split('/')[-1]}": v.numpy()
        for layer in model.exit_layers
        for v in layer.trainable_variables
    }


def test_device_process_prints_nothing_on_stderr(device_run):
    """tflite-runtime's C++ INFO lines (XNNPACK delegate) are captured."""
    assert device_run["report"]["stderr"] == ""


def test_device_python_has_no_tensorflow(device_run):
    report = device_run["report"]
    assert report["modules"] == []
    assert report["tflite_runtime"].startswith("2.")
    assert int(report["numpy"].split(".")[0]) < 2


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_tflite_runtime_training_equals_host_fit(device_run, optimizer_name):
    host = device_run["host"][optimizer_name]
    device = device_run["device"][optimizer_name]
    errors = {}
    for name, reference in host["weights"].items():
        start = host["initial"][name]
        assert np.max(np.abs(reference - start)) > 1e-3 * np.max(np.abs(reference)), name
        errors[name] = _relative_error(device["weights"][name], reference)
    print(f"{optimizer_name}: max relative error {max(errors.values()):.3g}")
    assert max(errors.values()) <= 1e-5, errors
    # The optimizer state came back too.
    assert set(host["state_names"]) <= set(device["weights"])
    assert device_run["report"][optimizer_name]["loss"] == pytest.approx(host["loss"], rel=1e-4)
    np.testing.assert_allclose(device["scores"], host["scores"], rtol=1e-5, atol=1e-5)


def test_tflite_runtime_learns_a_short_last_batch_like_fit(device_run):
    """The last batch of 5 is padded with rows labelled -1 and learned from
    like fit's short last batch."""
    host, device = (
        device_run["host"]["padded"]["weights"],
        device_run["device"]["padded"]["weights"],
    )
    errors = {name: _relative_error(device[name], reference) for name, reference in host.items()}
    assert max(errors.values()) <= 1e-5, errors


def test_tflite_runtime_trains_int8_frozen_layers(device_run):
    """quantize_frozen models load and train on tflite-runtime 2.14. Its
    hybrid int8 kernels round differently from LiteRT's, so the two agree on
    the predictions, not to 1e-5 on the weights."""
    host, device = device_run["host"]["quantized"], device_run["device"]["quantized"]
    for name, start in host["initial"].items():
        if name.endswith("_kernel"):
            assert np.all(np.isfinite(device["weights"][name]))
            assert np.max(np.abs(device["weights"][name] - start)) > 1e-3, name
    agree = np.mean(np.argmax(device["scores"], 1) == np.argmax(host["scores"], 1))
    assert agree >= 0.9, agree


def test_tflite_runtime_trains_a_spela_cnn_like_fit(device_run):
    """SpelaConv2D layers (forward, unpooling, filter gradient) train on
    tflite-runtime 2.14 to the weights of fit (20 steps, Adam)."""
    host, device = device_run["host"]["conv"], device_run["device"]["conv"]
    errors = {}
    for name, reference in host["weights"].items():
        assert np.max(np.abs(reference - host["initial"][name])) > 1e-4, name
        errors[name] = _relative_error(device["weights"][name], reference)
    assert {"conv1_kernel", "conv2_kernel", "head_kernel"} <= set(errors)
    assert max(errors.values()) <= 1e-5, errors
    np.testing.assert_allclose(device["scores"], host["scores"], rtol=1e-5, atol=1e-5)


def test_tflite_runtime_trains_a_head_on_int8_frozen_conv_layers(device_run):
    """Conv layers frozen as int8 constants (quantize_frozen) below a
    trainable head: tflite-runtime's hybrid kernels and LiteRT's agree on
    the predictions after training the head."""
    host, device = device_run["host"]["conv_quantized"], device_run["device"]["conv_quantized"]
    assert set(device["weights"]) >= {"head_kernel", "head_bias"}
    assert not any(name.startswith("conv") for name in device["weights"])
    kernel = device["weights"]["head_kernel"]
    assert np.all(np.isfinite(kernel))
    assert np.max(np.abs(kernel - host["initial"]["head_kernel"])) > 1e-3
    agree = np.mean(np.argmax(device["scores"], 1) == np.argmax(host["scores"], 1))
    assert agree >= 0.9, agree


def test_tflite_runtime_scores_any_number_of_rows(device_run):
    """predict and evaluate of 0 to 37 rows, in any order, on every model
    (the CNNs' inputs go through a reshape)."""
    report = device_run["report"]
    for name in ("sgd", "padded", "quantized", "conv", "conv_quantized"):
        assert all(report[name]["rows"].values()), (name, report[name]["rows"])


def test_device_trainer_script_imports_no_tensorflow():
    """The device package (every module but the Flower apps) never imports
    TensorFlow or Keras."""
    python = _tflite_python_or_skip()
    script = (
        "import keras_spela_device, keras_spela_device.cli; "
        "from keras_spela_device import backends; "
        "[backends.backend_class(r) for r in backends.RUNTIMES]; "
        "import sys; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'keras_spela')]; assert not bad, bad; print('ok')"
    )
    result = subprocess.run(
        [python, "-c", script],
        capture_output=True,
        text=True,
        env=_device_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


# ------------------------------------------------------------- model files
BAD_FILE_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    jobs_path = sys.argv[1]
    import keras_spela_device as device_trainer

    results = {}
    with open(jobs_path) as f:
        jobs = json.load(f)
    for name, job in jobs.items():
        try:
            trainer = device_trainer.DeviceTrainer(job["model"], runtime=job["runtime"])
            results[name] = {"ok": True, "runtime": trainer.runtime}
        except BaseException as error:
            results[name] = {
                "ok": False,
                "mro": [c.__name__ for c in type(error).__mro__],
                "message": str(error),
            }
    print("REPORT " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def bad_file_run(tmp_path_factory):
    """DeviceTrainer on files that are no valid model, in the tflite-runtime
    Python: {case: result}, and the files with what their error must say."""
    import tensorflow as tf

    python = _tflite_python_or_skip()
    out = tmp_path_factory.mktemp("bad_files")
    keras.utils.set_random_seed(0)
    model = SpelaModel([keras.Input((64,)), SpelaDense(32), SpelaDense(16)], num_classes=10)
    lite = keras_spela.export_tflite(model, str(out / "good.tflite"), batch_size=BATCH)
    micro = keras_spela.export_tflite_micro(model, str(out / "micro.tflite"), batch_size=BATCH)
    data = pathlib.Path(lite.path).read_bytes()
    files = {
        "empty": (b"", "empty"),
        "random": (np.random.default_rng(0).bytes(5000), "TFL3"),
        "truncated": (data[: len(data) // 2], "truncated"),
        "truncated_end": (data[:-100], "truncated"),
        "plain": (
            tf.lite.TFLiteConverter.from_keras_model(
                keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
            ).convert(),
            "not a keras_spela export",
        ),
        "micro_infer": (
            pathlib.Path(micro.inference_path).read_bytes(),
            "not a keras_spela export",
        ),
    }
    cases = {}
    for name, (content, match) in files.items():
        path = out / f"{name}.tflite"
        path.write_bytes(content)
        cases[name] = (path, match, "ModelFileError")
    model.save(out / "spela.keras")
    cases["keras"] = (out / "spela.keras", r"zip archive.*\.keras", "ModelFileError")
    cases["missing"] = (out / "missing.tflite", "does not exist", "ModelFileError")
    # Valid models that this Python cannot run: clear errors too.
    cases["micro step"] = (pathlib.Path(micro.path), "tflite-micro", "RuntimeUnavailableError")
    jobs = {}
    for name, (path, _, _) in cases.items():
        for runtime in ("auto", "tflite_runtime"):
            jobs[f"{name}|{runtime}"] = {"model": str(path), "runtime": runtime}
    jobs["good|auto"] = {"model": lite.path, "runtime": "auto"}
    jobs["good|litert"] = {"model": lite.path, "runtime": "litert"}
    jobs_path = out / "jobs.json"
    jobs_path.write_text(json.dumps(jobs))
    script = out / "bad_file_script.py"
    script.write_text(BAD_FILE_SCRIPT)
    result = subprocess.run(
        [python, str(script), str(jobs_path)],
        capture_output=True,
        text=True,
        env=_device_env(),
        timeout=300,
    )
    lines = [l for l in result.stdout.splitlines() if l.startswith("REPORT ")]
    assert result.returncode == 0 and lines, (
        f"exit code {result.returncode}\n" + result.stdout[-3000:] + result.stderr[-3000:]
    )
    return json.loads(lines[-1][len("REPORT ") :]), cases, lite.path


BAD_CASES = [
    "empty",
    "random",
    "truncated",
    "truncated_end",
    "plain",
    "micro_infer",
    "keras",
    "missing",
    "micro step",
]


@pytest.mark.parametrize("runtime", ["auto", "tflite_runtime"])
@pytest.mark.parametrize("case", BAD_CASES)
def test_tflite_runtime_refuses_bad_model_files(bad_file_run, case, runtime):
    results, cases, _ = bad_file_run
    path, match, error = cases[case]
    if case == "micro step" and runtime == "tflite_runtime":
        match, error = "runtime='micro'", "ModelFileError"  # the wrong runtime for it
    result = results[f"{case}|{runtime}"]
    assert not result["ok"], result
    assert error in result["mro"], result
    assert str(path) in result["message"], result["message"]
    assert re.search(match, result["message"]), (match, result["message"])
    assert "\n" not in result["message"]


def test_tflite_runtime_is_chosen_from_the_model(bad_file_run):
    results, _, lite_path = bad_file_run
    assert results["good|auto"] == {"ok": True, "runtime": "tflite_runtime"}
    # LiteRT is not installed in that Python: a clear error, not a traceback.
    assert not results["good|litert"]["ok"]
    assert "RuntimeUnavailableError" in results["good|litert"]["mro"]
    assert "ai-edge-litert" in results["good|litert"]["message"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
