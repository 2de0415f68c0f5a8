"""web/keras_spela_web.js in a real browser: headless Chromium runs LiteRT.js.

The module trains exported models like SpelaModel.fit (dense and conv, SGD
and Adam, a padded short last batch), a batch the model rejects changes
nothing, bad files get one clear error, weights round-trip through IndexedDB
and .npz, and the demo page (examples/browser/) works end to end. Needs node,
Debian's chromium and `npm ci` in web/ (bash tools/install_web.sh).
"""

import base64
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.append(str(REPO))
sys.path.insert(0, str(REPO / "examples" / "browser"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_spela  # noqa: E402
import keras_spela_device as device_trainer  # noqa: E402
from keras_spela import SpelaConv2D  # noqa: E402
from keras_spela import SpelaDense  # noqa: E402
from keras_spela import SpelaModel  # noqa: E402
from keras_spela.testing import host_weights  # noqa: E402

# Every test here starts a process (see pytest.ini's `slow`).
pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")
WEB = REPO / "web"
DRIVER = WEB / "test" / "run_in_chromium.mjs"
BATCH = 16
STEPS = 20  # one epoch: 19 full batches and a short one of 7 (padded)
EXAMPLES = BATCH * (STEPS - 1) + 7
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(learning_rate=0.5),
    "adam": lambda: keras.optimizers.Adam(learning_rate=1e-2),
}


# ------------------------------------------------------------------ browser
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The test's files, which web/test/run_in_chromium.mjs serves at
    /__data__/ (and the repository at /) on 127.0.0.1."""
    return tmp_path_factory.mktemp("web_data")


def run_jobs(data, jobs, tmp_dir, args=None, timeout=300):
    """Runs `jobs` in one headless Chromium, the repository served at / and
    `data` at /__data__/; returns {job id: result}. A job that failed in the
    browser fails here with its error and the page's console lines."""
    for package in ("playwright-core", "@litertjs/core"):
        if not (WEB / "node_modules" / package).is_dir():
            pytest.fail(f"web/node_modules/{package} is missing: run bash tools/install_web.sh")
    plan = {
        "root": str(REPO),
        "mounts": {"/__data__/": str(data)},
        "chromium": CHROMIUM,
        "jobs": jobs,
    }
    if args is not None:
        plan["args"] = args
    plan_path, out_path = tmp_dir / "plan.json", tmp_dir / "results.json"
    plan_path.write_text(json.dumps(plan))
    # Chromium's profile (a new, empty --user-data-dir) and everything else it
    # writes stay in the test's directory.
    home = tmp_dir / "home"
    home.mkdir(exist_ok=True)
    completed = subprocess.run(
        [NODE, str(DRIVER), str(plan_path), str(out_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, TMPDIR=str(tmp_dir), HOME=str(home)),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out_path.read_text())
    return results


def result_of(results, job_id):
    entry = results[job_id]
    if "error" in entry:
        console = "\n".join(line for line in results["console"] if line.startswith(job_id))
        pytest.fail(f"{job_id} failed in the browser: {entry['error']}\n{console}")
    return entry["result"]


# ------------------------------------------------------------------- models
def dense_model():
    return SpelaModel(
        [keras.Input((64,)), SpelaDense(256, name="hidden"), SpelaDense(34, name="last")],
        num_classes=10,
    )


def conv_model():
    return SpelaModel(
        [
            keras.Input((8, 8, 1)),
            SpelaConv2D(8, 3, name="conv"),
            keras.layers.Flatten(),
            SpelaDense(34, name="head"),
        ],
        num_classes=10,
    )


MODELS = {"dense": (dense_model, True), "conv": (conv_model, False)}
CASES = [(m, o) for m in MODELS for o in OPTIMIZERS]


def _to_list(x):
    return np.asarray(x, np.float32).reshape(-1).tolist()


@pytest.fixture(scope="module")
def parity_run(data_dir, tmp_path_factory):
    """Each case exported, fit on the host (one epoch, no shuffling), and
    trained on the same batches in the browser."""
    data = data_dir
    (x_train, y_train), _ = keras_spela.datasets.load_digits(flatten=False)
    host = {}
    jobs = []
    for seed, (model_name, optimizer_name) in enumerate(CASES):
        build, flatten = MODELS[model_name]
        keras.utils.set_random_seed(seed)
        model = build()
        model.compile(optimizer=OPTIMIZERS[optimizer_name]())
        x = x_train[:EXAMPLES].reshape((EXAMPLES, 64) if flatten else (EXAMPLES, 8, 8, 1))
        y = y_train[:EXAMPLES].astype(np.int32)
        case = f"{model_name}_{optimizer_name}"
        keras_spela.export_tflite(model, str(data / f"{case}.tflite"), batch_size=BATCH)
        initial = host_weights(model)
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        scores = {
            f"exit_{k}": np.asarray(s) for k, s in enumerate(model.exit_scores(x[:37]).values())
        }
        host[case] = {"initial": initial, "weights": host_weights(model), "scores": scores}
        (data / f"{case}.json").write_text(
            json.dumps(
                {"x": _to_list(x), "y": y.tolist(), "epochs": 1, "predict_x": _to_list(x[:37])}
            )
        )
        jobs.append(
            {
                "id": case,
                "kind": "parity",
                "model": f"/__data__/{case}.tflite",
                "data": f"/__data__/{case}.json",
            }
        )
    results = run_jobs(data, jobs, tmp_path_factory.mktemp("parity"))
    return host, results


def max_abs_difference(a, b):
    return float(
        np.max(
            np.abs(np.asarray(a, np.float32).reshape(-1) - np.asarray(b, np.float32).reshape(-1))
        )
    )


@pytest.mark.parametrize("case", [f"{m}_{o}" for m, o in CASES])
def test_browser_training_equals_host_fit(parity_run, case):
    """Same start, same 20 batches (the last one short and padded): the
    browser ends at SpelaModel.fit's weights within 1e-5."""
    host, results = parity_run
    browser = result_of(results, case)
    assert browser["accelerator"] == "wasm"
    expected = host[case]
    for name, reference in expected["initial"].items():
        np.testing.assert_array_equal(
            np.asarray(browser["initial"][name], np.float32), reference.reshape(-1)
        )
    differences = {}
    for name, reference in expected["weights"].items():
        # The weights moved: the comparison is not trivially true.
        assert max_abs_difference(reference, expected["initial"][name]) > 1e-4, name
        differences[name] = max_abs_difference(browser["weights"][name], reference)
    print(f"{case}: max abs weight difference {max(differences.values()):.2e} {differences}")
    assert max(differences.values()) <= 1e-5, differences
    for exit_name, scores in expected["scores"].items():
        np.testing.assert_allclose(
            np.asarray(browser["scores"][exit_name]), scores, rtol=1e-5, atol=1e-5
        )
    # The weights download is an .npz that numpy reads back exactly.
    with np.load(io.BytesIO(base64.b64decode(browser["npz"]))) as archive:
        assert sorted(archive.files) == sorted(browser["weights"])
        for name in archive.files:
            np.testing.assert_array_equal(
                archive[name].reshape(-1), np.asarray(browser["weights"][name], np.float32)
            )


# ----------------------------------------------------------- rejected batch
@pytest.fixture(scope="module")
def checks_run(data_dir, parity_run, tmp_path_factory):
    """The rejected-batch, bad-file and storage jobs, on the dense Adam
    export (its optimizer state must not move either)."""
    data = data_dir
    model_bytes = (data / "dense_adam.tflite").read_bytes()
    files = {
        "empty": b"",
        "truncated": model_bytes[: len(model_bytes) // 2],
        "keras archive": b"PK\x03\x04" + bytes(200),
        "hdf5": b"\x89HDF\r\n\x1a\n" + bytes(200),
        "text": b"this is not a model at all\n",
        "plain keras tflite": _plain_tflite(),
    }
    for name, content in files.items():
        (data / f"bad_{name.replace(' ', '_')}.tflite").write_bytes(content)
    python_weights = data / "python_weights.npz"
    trainer = device_trainer.DeviceTrainer(str(data / "dense_adam.tflite"), runtime="litert")
    (x, _), _ = keras_spela.datasets.load_digits()
    _, (_, y) = keras_spela.datasets.load_digits()
    trainer.train_batch(x[:BATCH], y[:BATCH].astype(np.int32))
    trainer.save_weights(str(python_weights))
    cases = {name: f"/__data__/bad_{name.replace(' ', '_')}.tflite" for name in files}
    cases["missing"] = "/__data__/no_such_model.tflite"
    model, batches = "/__data__/dense_adam.tflite", "/__data__/dense_adam.json"
    jobs = [
        {"id": "reject", "kind": "reject", "model": model, "data": batches},
        {"id": "files", "kind": "files", "cases": cases},
        {
            "id": "storage",
            "kind": "storage",
            "model": model,
            "data": batches,
            "npz": "/__data__/python_weights.npz",
        },
    ]
    results = run_jobs(data, jobs, tmp_path_factory.mktemp("checks"))
    python_errors = {}
    for name in files:
        path = data / f"bad_{name.replace(' ', '_')}.tflite"
        with pytest.raises(device_trainer.ModelFileError) as error:
            device_trainer.DeviceTrainer(str(path), runtime="litert")
        python_errors[name] = str(error.value).replace(str(path), cases[name])
    return results, python_errors, dict(np.load(python_weights))


def _plain_tflite():
    """A plain TFLite model (one serving signature, no keras_spela ones)."""
    import tensorflow as tf

    function = tf.function(
        lambda x: {"y": 2.0 * x + 1.0},
        input_signature=[tf.TensorSpec((1, 4), tf.float32, name="x")],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function
    )
    return converter.convert()


def assert_same(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(
            np.asarray(a[name], np.float32), np.asarray(b[name], np.float32), err_msg=name
        )


def test_rejected_batch_changes_nothing(checks_run):
    """A finite batch that overflows in the layer passes the module's checks;
    the model rejects it (accepted = 0), the module raises, and no weight or
    optimizer state moved, alone or as step 2 of fit (whose step 1 was
    learned)."""
    result = result_of(checks_run[0], "reject")
    assert result["alone"]["name"] == "DeviceTrainingError"
    assert "The device model rejected the batch" in result["alone"]["message"]
    assert_same(result["afterAlone"], result["before"])
    assert result["inFit"]["message"].startswith(
        "Epoch 1/1, step 2/2: The device model rejected the batch"
    ), result["inFit"]
    assert result["inFit"]["message"].endswith("The steps before it were learned.")
    assert result["afterFitChanged"]
    assert result["nanInput"]["message"] == "x contains NaN or infinite values."
    assert result["badLabel"]["message"] == "Labels must be in [0, 10), received values in [0, 10]."
    assert re.fullmatch(
        r"Weight '\w+_kernel' contains NaN or inf\.", result["badWeights"]["message"]
    )
    assert result["missingWeights"]["message"].startswith("set_weights needs exactly the names")
    for error in ("alone", "inFit", "nanInput", "badLabel", "badWeights", "missingWeights"):
        assert result[error]["isDeviceTrainingError"], error
    # predict's exit argument, checked before anything runs.
    assert (
        result["unknownExit"]["message"] == "Unknown exit 'exit_9'; the exits are [exit_0, exit_1]."
    )
    assert result["exitOutOfRange"]["message"].startswith(
        "exit=5 is out of range: the model has 2 exits"
    )
    assert result["exitsAgree"]


# ---------------------------------------------------------------- bad files
@pytest.mark.parametrize(
    "case", ["empty", "truncated", "keras archive", "hdf5", "text", "plain keras tflite"]
)
def test_bad_model_file_gets_the_python_error(checks_run, case):
    """The file checks are DeviceTrainer's: the same one-line message (the
    file's URL in place of its path), as a ModelFileError."""
    results, python_errors, _ = checks_run
    error = result_of(results, "files")[case]
    assert error is not None, case
    assert error["name"] == "ModelFileError" and error["isDeviceTrainingError"]
    assert error["message"] == python_errors[case]


def test_missing_model_file(checks_run):
    error = result_of(checks_run[0], "files")["missing"]
    assert error["name"] == "ModelFileError"
    assert error["message"] == (
        "/__data__/no_such_model.tflite: the model file does not exist (HTTP 404)"
    )


# ------------------------------------------------------------------ storage
def test_weights_round_trip_through_indexeddb_and_npz(checks_run):
    """saveWeights / loadWeights (IndexedDB) restore every weight and
    optimizer state into a freshly loaded model; the Python DeviceTrainer's
    save_weights .npz loads in the browser."""
    results, _, python_weights = checks_run
    result = result_of(results, "storage")
    assert any(not np.array_equal(result["moved"][k], result["saved"][k]) for k in result["saved"])
    assert_same(result["restored"], result["saved"])
    assert result["missing"]["message"].startswith("No weights saved under 'never saved'")
    assert_same(result["fromPython"], {k: v.reshape(-1) for k, v in python_weights.items()})
    assert result["notNpz"]["message"].startswith("junk.npz: not an .npz archive")


# --------------------------------------------------------------------- demo
@pytest.fixture(scope="module")
def demo_run(data_dir, tmp_path_factory):
    """examples/browser/build_assets.py's assets (the README's main job), and
    the demo page driven like a person."""
    data = data_dir
    # A process of its own, as a user runs it: the main job defines absl flags, which
    # must not meet another example's in this process.
    script = REPO / "examples" / "browser" / "build_assets.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--output_dir", str(data / "demo_assets")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assets = json.loads((data / "demo_assets" / "digits.json").read_text())
    jobs = [
        {
            "id": "demo",
            "kind": "demo",
            "assets": "/__data__/demo_assets/",
            "label": 1,
            "epochs": 3,
            "timeout_s": 120,
        }
    ]
    results = run_jobs(data, jobs, tmp_path_factory.mktemp("demo"))
    trace = result_of(results, "demo")
    # Offline: the page asked for nothing outside the local server.
    assert results["demo"]["requests"] == [], results["demo"]["requests"]
    return assets, trace


def test_demo_page_draw_add_finetune_predict(demo_run):
    """The page loads the main job's model on wasm, fine-tunes on the main
    job's device examples, takes a drawing as an example, fine-tunes on it,
    predicts it, and saves and loads the weights in the browser."""
    assets, trace = demo_run
    assert trace["accelerator"].startswith("wasm")
    # Before any fine-tune the browser's accuracy is the Python Interpreter's.
    before = assets["accuracy"]["python_litert_before"]
    for test in ("new", "old"):
        for exit_name, value in before[test].items():
            assert trace["before"][test][exit_name] == pytest.approx(value, abs=1e-9)
    assert trace["shippedFineTune"].startswith("fine-tuned on 600 examples, 5 epochs")
    assert trace["stepsAfterShipped"] == 5 * 38  # ceil(600 / 16) steps per epoch
    # The mouse drew ink; the 8x8 example has it, labelled 1.
    assert trace["inkBeforeAdd"] > 1000
    assert trace["examplesCount"] == "1"
    assert trace["addedExample"]["y"] == 1 and sum(trace["addedExample"]["x"]) > 1
    assert trace["lastFit"]["count"] == 1 and trace["lastFit"]["epochs"] == 3
    assert len(trace["losses"]) == 5 * 38 + 3
    assert all(np.isfinite(trace["losses"]))
    assert re.fullmatch(r"(exit_\d: class \d \(cosine -?\d\.\d{3}\)\n?){2}", trace["prediction"]), (
        trace["prediction"]
    )
    assert trace["loadedWeights"] == "loaded the saved weights"
    rows = trace["rows"]
    assert (
        rows["browser, saved weights loaded"]
        == rows["browser after fine-tune 2 (1 examples, 3 epochs)"]
    )


def test_demo_finetune_reaches_python_litert(demo_run):
    """The demo's fine-tune of the rotated digits (same model, examples and
    epochs; the browser's own shuffling) reaches LiteRT's Python result: the
    mean over the exits within 1 point of it (or above), every exit within 2
    points, and the task learned (from chance to > 85 %)."""
    assets, trace = demo_run
    python = assets["accuracy"]["python_litert_after"]["new"]
    browser = trace["afterShipped"]["new"]
    print(
        "rotated test after the fine-tune, browser vs Python LiteRT: "
        + ", ".join(f"{k} {100 * browser[k]:.2f}% vs {100 * python[k]:.2f}%" for k in python)
    )
    assert np.mean(list(browser.values())) >= np.mean(list(python.values())) - 0.01, (
        browser,
        python,
    )
    for exit_name, value in python.items():
        assert browser[exit_name] >= value - 0.02, (exit_name, browser, python)
        assert browser[exit_name] > 0.85


# ----------------------------------------------------------------- contract
def _contract_module():
    """The Python device side's contract module (the installable device
    package's contract.py), or None where the checkout has none."""
    import importlib.util

    for pattern in ("export/**/contract.py", "keras_spela_device/**/contract.py"):
        for path in sorted(REPO.glob(pattern)):
            spec = importlib.util.spec_from_file_location("keras_spela_device_contract", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    return None


def test_js_contract_names_match_python():
    """Every name of the constant block of keras_spela_web.js is the Python
    contract's name of the same value (export/keras_spela_device/contract.py;
    without it, export/device_trainer.py's shared names), and the exporter
    writes the signature names."""
    output = subprocess.run(
        [
            NODE,
            "--input-type=module",
            "-e",
            "import {CONTRACT} from './keras_spela_web.js'; console.log(JSON.stringify(CONTRACT));",
        ],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert output.returncode == 0, output.stderr
    contract = json.loads(output.stdout)
    python = _contract_module()
    names = (
        contract
        if python is not None
        else ("SIGNATURES", "PADDING_LABEL", "PADDING_OUTPUT", "CLASS_MASK")
    )
    python = python or device_trainer
    for name in names:
        assert hasattr(python, name), f"{python.__file__} has no {name} (keras_spela_web.js has)"
        value = getattr(python, name)
        assert contract[name] == (list(value) if isinstance(value, tuple) else value), name
    # The names the exporters write (keras_spela/lite/).
    source = "\n".join(p.read_text() for p in (REPO / "keras_spela" / "lite").glob("*.py"))
    for key in (
        "ACCEPTED_OUTPUT",
        "LOSS_OUTPUT",
        "SCORES_OUTPUT",
        "GET_WEIGHTS_INPUT",
        "CLASS_MASK",
    ):
        assert f'"{contract[key]}"' in source or f"contract.{key}" in source, key
    assert re.fullmatch(contract["EXIT_SCORES_PATTERN"], "exit_12_scores")
