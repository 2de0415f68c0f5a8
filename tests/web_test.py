"""web/keras_spela_web.js in a real browser: headless Chromium runs LiteRT.js.

The module trains exported models like SpelaModel.fit (dense and conv, SGD
and Adam, a padded short last batch), a batch the model rejects changes
nothing, bad files get one clear error, weights round-trip through IndexedDB
and .npz, and the demo page (examples/browser/) works end to end. Needs node,
Debian's chromium and `npm ci` in web/ (bash tools/install_web.sh).
"""

import base64
import functools
import http.server
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
sys.path.insert(0, str(REPO / "export"))
sys.path.insert(0, str(REPO / "examples" / "browser"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_spela  # noqa: E402
from keras_spela import SpelaConv2D  # noqa: E402
from keras_spela import SpelaDense  # noqa: E402
from keras_spela import SpelaModel  # noqa: E402
from keras_spela.testing import host_weights  # noqa: E402

import device_trainer  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")
WEB = REPO / "web"
DRIVER = WEB / "test" / "run_in_chromium.mjs"

_missing = [
    what for what, present in (("node", NODE), (f"chromium ({CHROMIUM})", os.path.exists(CHROMIUM)))
    if not present
]
pytestmark = pytest.mark.skipif(
    bool(_missing), reason=f"needs {' and '.join(_missing)}: run bash tools/install_web.sh"
)

BATCH = 16
STEPS = 20  # one epoch: 19 full batches and a short one of 7 (padded)
EXAMPLES = BATCH * (STEPS - 1) + 7
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(learning_rate=0.5),
    "adam": lambda: keras.optimizers.Adam(learning_rate=1e-2),
}


# ------------------------------------------------------------------ browser
class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the repository, and `/__data__/` from the test's directory."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
        ".json": "application/json",
    }
    mounts = {}

    def translate_path(self, path):
        for prefix, directory in self.mounts.items():
            if path.startswith(prefix):
                return str(pathlib.Path(directory) / path[len(prefix):].split("?")[0])
        return super().translate_path(path)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An HTTP server on 127.0.0.1 for the repository and the test's files:
    `(base URL, data directory)`."""
    data = tmp_path_factory.mktemp("web_data")
    handler = type("Handler", (_Handler,), {"mounts": {"/__data__/": data}})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(REPO))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", data
    httpd.shutdown()
    httpd.server_close()


def run_jobs(base, jobs, tmp_dir, args=None, timeout=300):
    """Runs `jobs` in one headless Chromium; returns {job id: result}. A job
    that failed in the browser fails here with its error and the page's
    console lines."""
    for package in ("playwright-core", "@litertjs/core"):
        if not (WEB / "node_modules" / package).is_dir():
            pytest.fail(f"web/node_modules/{package} is missing: run bash tools/install_web.sh")
    plan = {"base": base, "chromium": CHROMIUM, "jobs": jobs}
    if args is not None:
        plan["args"] = args
    plan_path, out_path = tmp_dir / "plan.json", tmp_dir / "results.json"
    plan_path.write_text(json.dumps(plan))
    completed = subprocess.run(
        [NODE, str(DRIVER), str(plan_path), str(out_path)],
        capture_output=True, text=True, timeout=timeout,
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
        [keras.Input((8, 8, 1)), SpelaConv2D(8, 3, name="conv"), keras.layers.Flatten(),
         SpelaDense(34, name="head")],
        num_classes=10,
    )


MODELS = {"dense": (dense_model, True), "conv": (conv_model, False)}
CASES = [(m, o) for m in MODELS for o in OPTIMIZERS]


def _to_list(x):
    return np.asarray(x, np.float32).reshape(-1).tolist()


@pytest.fixture(scope="module")
def parity_run(server, tmp_path_factory):
    """Each case exported, fit on the host (one epoch, no shuffling), and
    trained on the same batches in the browser."""
    base, data = server
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
            f"exit_{k}": np.asarray(s)
            for k, s in enumerate(model.exit_scores(x[:37]).values())
        }
        host[case] = {"initial": initial, "weights": host_weights(model), "scores": scores}
        (data / f"{case}.json").write_text(json.dumps(
            {"x": _to_list(x), "y": y.tolist(), "epochs": 1, "predict_x": _to_list(x[:37])}
        ))
        jobs.append({"id": case, "kind": "parity", "model": f"/__data__/{case}.tflite",
                     "data": f"/__data__/{case}.json"})
    results = run_jobs(base, jobs, tmp_path_factory.mktemp("parity"))
    return host, results


def max_abs_difference(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float32).reshape(-1) - np.asarray(b, np.float32).reshape(-1))))


@pytest.mark.parametrize("case", [f"{m}_{o}" for m, o in CASES])
def test_browser_training_equals_host_fit(parity_run, case):
    """Same start, same 20 batches (the last one short and padded): the
    browser ends at SpelaModel.fit's weights within 1e-5."""
    host, results = parity_run
    browser = result_of(results, case)
    assert browser["accelerator"] == "wasm"
    expected = host[case]
    for name, reference in expected["initial"].items():
        np.testing.assert_array_equal(np.asarray(browser["initial"][name], np.float32), reference.reshape(-1))
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
