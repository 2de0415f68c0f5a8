"""DeviceTrainer end to end on LiteRT: it learns the digits, evaluates and
predicts per exit, and its command line trains and saves weights. The runtime
comes from the model; files that are no valid model, and micro descriptions
that do not belong to their model, give one clear ModelFileError on LiteRT
and TFLite Micro; short batches are padded with rows labelled -1 (and
dropped for models that do not ignore such rows)."""

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_spela
import keras_spela.testing
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela_device import DeviceTrainer
from keras_spela_device import DeviceTrainingError
from keras_spela_device.backends.base import Backend

# Fixtures that export models: the tests that use them are `slow` (tests/conftest.py).
EXPORTING_FIXTURES = ("fresh", "micro_exports", "score_models")

REPO = pathlib.Path(__file__).resolve().parents[2]
# The device command as the README documents it (a thin entry point).
DEVICE_TRAINER = REPO / "export" / "device_trainer.py"
BATCH = 16
EPOCHS = 4


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, spela_mlp):
    """A fresh (untrained) 64-64-16 model and its LiteRT export (Adam 1e-2)."""
    out = tmp_path_factory.mktemp("device_trainer")
    model = spela_mlp((64, 16), names=None)
    export = keras_spela.export_tflite(model, str(out / "fresh.tflite"), batch_size=BATCH)
    return model, export.path, out


@pytest.fixture(scope="module")
def trained(fresh, digits):
    """The fresh model trained on the device; accuracy before and after."""
    _, path, _ = fresh
    (x_train, y_train), (x_test, y_test) = digits
    trainer = DeviceTrainer(path, runtime="litert")
    before = trainer.evaluate(x_test, y_test)
    history = trainer.fit(x_train, y_train, epochs=EPOCHS, seed=0, verbose=0)
    after = trainer.evaluate(x_test, y_test)
    return trainer, before, after, history


def test_fit_fresh_model_reaches_high_accuracy(trained):
    trainer, before, after, history = trained
    print(f"device fit: {before} -> {after}")
    last = trainer.exits[-1]
    assert after[f"{last}_accuracy"] > before[f"{last}_accuracy"]
    assert after[f"{last}_accuracy"] > 0.8, after
    assert after["exit_0_accuracy"] > before["exit_0_accuracy"]
    assert len(history["loss"]) == EPOCHS
    assert history["loss"][-1] < history["loss"][0]
    assert set(history) == {"loss", "exit_0_loss", "exit_1_loss"}


@pytest.mark.slow
def test_fit_improves_host_pretrained_model(tmp_path, digits, spela_mlp):
    (x_train, y_train), (x_test, y_test) = digits
    model = spela_mlp((64, 16), seed=5, names=None)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    # A short host pretraining on a slice of the data.
    model.fit(x_train[:480], y_train[:480], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    host_accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))
    assert host_accuracy > 0.3  # it did learn on the host
    export = keras_spela.export_tflite(
        model,
        str(tmp_path / "pretrained.tflite"),
        batch_size=BATCH,
        optimizer="adam",
        learning_rate=1e-2,
    )
    trainer = DeviceTrainer(export.path, runtime="litert")
    before = trainer.evaluate(x_test, y_test)
    # The export starts from the host's weights.
    assert before["exit_1_accuracy"] == pytest.approx(host_accuracy, abs=1e-9)
    trainer.fit(x_train, y_train, epochs=2, verbose=0)
    after = trainer.evaluate(x_test, y_test)
    print(f"pretrained device fit: {before} -> {after}")
    assert after["exit_1_accuracy"] > before["exit_1_accuracy"]
    assert after["exit_1_accuracy"] > 0.8


def test_fit_shuffle_is_seeded(fresh, digits):
    _, path, _ = fresh
    (x_train, y_train), _ = digits
    x, y = x_train[: 8 * BATCH], y_train[: 8 * BATCH]
    weights = []
    for seed in (3, 3, 4):
        trainer = DeviceTrainer(path, runtime="litert")
        trainer.fit(x, y, epochs=1, seed=seed, verbose=0)
        weights.append(trainer.get_weights())
    for name in weights[0]:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])
    assert any(not np.array_equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_evaluate_reports_every_exit(trained, digits):
    trainer, before, after, _ = trained
    _, (x_test, y_test) = digits
    expected = {"exit_0_accuracy", "exit_1_accuracy"}
    assert set(before) == expected
    assert set(after) == expected
    scores = trainer.predict(x_test, exit="all")
    for key, accuracy in trainer.evaluate(x_test, y_test).items():
        exit_name = key[: -len("_accuracy")]
        assert accuracy == pytest.approx(np.mean(np.argmax(scores[exit_name], -1) == y_test))
        assert 0.0 <= accuracy <= 1.0


def test_predict_selects_exit(fresh, trained, digits):
    model, _, _ = fresh
    trainer = trained[0]
    _, (x_test, _) = digits
    x = x_test[:37]
    every = trainer.predict(x, exit="all")
    assert sorted(every) == ["exit_0", "exit_1"]
    assert not np.allclose(every["exit_0"], every["exit_1"])
    np.testing.assert_array_equal(trainer.predict(x), every["exit_1"])
    np.testing.assert_array_equal(trainer.predict(x, exit=-1), every["exit_1"])
    np.testing.assert_array_equal(trainer.predict(x, exit=0), every["exit_0"])
    np.testing.assert_array_equal(trainer.predict(x, exit=1), every["exit_1"])
    np.testing.assert_array_equal(trainer.predict(x, exit="exit_0"), every["exit_0"])
    for scores in every.values():
        assert scores.shape == (37, 10)
        assert np.all(np.abs(scores) <= 1.0 + 1e-5)
    with pytest.raises(ValueError, match="exit_7"):
        trainer.predict(x, exit="exit_7")
    # A single example and one with a batch dimension of 1 agree.
    np.testing.assert_allclose(trainer.predict(x[:1]), every["exit_1"][:1], rtol=1e-6, atol=1e-6)


def test_predict_rejects_bad_inputs(fresh):
    _, path, _ = fresh
    trainer = DeviceTrainer(path, runtime="litert")
    with pytest.raises(DeviceTrainingError, match="shape"):
        trainer.predict(np.zeros((3, 65), np.float32))
    with pytest.raises(DeviceTrainingError, match="floating"):
        trainer.predict(np.zeros((3, 64), np.int32))
    with pytest.raises(DeviceTrainingError, match="NaN"):
        trainer.predict(np.full((3, 64), np.nan, np.float32))


def test_trainer_reports_model_properties(fresh):
    _, path, _ = fresh
    trainer = DeviceTrainer(path)
    assert trainer.runtime == "litert"
    assert trainer.batch_size == BATCH
    assert trainer.input_shape == (64,)
    assert trainer.num_classes == 10
    assert trainer.exits == ["exit_0", "exit_1"]
    with pytest.raises(ValueError, match="runtime"):
        DeviceTrainer(path, runtime="gpu")


def _run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, str(DEVICE_TRAINER), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_trains_and_saves_weights(fresh, digits):
    _, path, out = fresh
    (x_train, y_train), (x_test, y_test) = digits
    data = out / "data.npz"
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    weights = out / "cli_weights.npz"
    result = _run_cli(
        "--model", path, "--data", str(data), "--epochs", "1", "--save_weights", str(weights)
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "before:" in result.stdout and "after:" in result.stdout
    assert "epoch 1/1" in result.stdout
    assert weights.exists()

    # The script did what DeviceTrainer.fit does with the same seed.
    reference = DeviceTrainer(path, runtime="litert")
    reference.fit(x_train, y_train, epochs=1, seed=0, verbose=0)
    expected = reference.get_weights()
    with np.load(weights) as saved:
        assert sorted(saved.files) == sorted(expected)
        for name in saved.files:
            np.testing.assert_array_equal(saved[name], expected[name])

    # --load_weights continues from the saved weights.
    weights_2 = out / "cli_weights_2.npz"
    result = _run_cli(
        "--model",
        path,
        "--data",
        str(data),
        "--epochs",
        "1",
        "--seed",
        "1",
        "--load_weights",
        str(weights),
        "--save_weights",
        str(weights_2),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    reference.fit(x_train, y_train, epochs=1, seed=1, verbose=0)
    expected = reference.get_weights()
    with np.load(weights_2) as saved:
        for name in saved.files:
            np.testing.assert_array_equal(saved[name], expected[name])


@pytest.mark.slow
def test_cli_without_test_split_and_bad_model(fresh, digits, tmp_path):
    _, path, _ = fresh
    (x_train, y_train), _ = digits
    data = tmp_path / "train_only.npz"
    np.savez(data, x_train=x_train[: 4 * BATCH], y_train=y_train[: 4 * BATCH])
    result = _run_cli("--model", path, "--data", str(data))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "before:" not in result.stdout
    bad = tmp_path / "bad_labels.npz"
    np.savez(bad, x_train=x_train[: 4 * BATCH], y_train=y_train[: 4 * BATCH] + 10)
    result = _run_cli("--model", path, "--data", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert "y_train" in result.stderr.splitlines()[-1], result.stderr
    assert r"[0, 10)" in result.stderr.splitlines()[-1], result.stderr


CHILD = textwrap.dedent(
    """
    import json
    import sys

    job = json.loads(sys.argv[1])
    import numpy as np
    import keras_spela_device as device_trainer

    result = {}
    try:
        kwargs = {k: job[k] for k in ("runtime", "description_path") if k in job}
        trainer = device_trainer.DeviceTrainer(job["model"], **kwargs)
        result["runtime"] = trainer.runtime
        if job.get("train"):
            b = trainer.batch_size
            x = np.random.default_rng(0).random((b,) + trainer.input_shape).astype("float32")
            result["loss"] = trainer.train_batch(x, np.arange(b) % trainer.num_classes)["loss"]
        result["ok"] = True
    except BaseException as error:  # reported, not raised: the parent asserts
        result.update(
            ok=False,
            error=type(error).__name__,
            mro=[c.__name__ for c in type(error).__mro__],
            message=str(error),
        )
    print("RESULT " + json.dumps(result))
    """
)


def run_child(job, python=None, env=None):
    """Runs CHILD with `job` in another Python; returns its RESULT dict."""
    result = subprocess.run(
        [python or sys.executable, "-c", CHILD, json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
    assert result.returncode == 0 and lines, (
        f"the child process died (exit code {result.returncode}):\n"
        + result.stdout[-2000:]
        + result.stderr[-2000:]
    )
    return json.loads(lines[-1][len("RESULT ") :])


def assert_model_file_error(result, path, match):
    assert not result["ok"], result
    assert "ModelFileError" in result["mro"] and "ValueError" in result["mro"], result
    assert str(path) in result["message"], result["message"]
    assert re.search(match, result["message"]), (match, result["message"])
    assert "\n" not in result["message"], result["message"]


@pytest.fixture(scope="module")
def micro_exports(tmp_path_factory, spela_mlp):
    """Micro train steps of the same net at batch 8 and 4 (different dirs)."""
    out = tmp_path_factory.mktemp("micro_exports")
    model = spela_mlp((64, 16), names=None)
    (out / "b8").mkdir()
    (out / "b4").mkdir()
    b8 = keras_spela.export_tflite_micro(model, str(out / "b8" / "step.tflite"), batch_size=8)
    b4 = keras_spela.export_tflite_micro(model, str(out / "b4" / "step.tflite"), batch_size=4)
    # The same inputs and outputs, but a narrower (smaller arena) net.
    keras.utils.set_random_seed(1)
    narrow = SpelaModel([keras.Input((64,)), SpelaDense(8), SpelaDense(16)], num_classes=10)
    (out / "narrow").mkdir()
    narrow = keras_spela.export_tflite_micro(
        narrow, str(out / "narrow" / "step.tflite"), batch_size=8
    )
    return {"b8": b8, "b4": b4, "narrow": narrow}


@pytest.fixture(scope="module")
def bad_model_files(fresh, micro_exports, tmp_path_factory):
    """{case: (path, what the error must say)}: files that are no model."""
    import tensorflow as tf

    model, lite_path, _ = fresh
    out = tmp_path_factory.mktemp("bad_models")
    lite = pathlib.Path(lite_path).read_bytes()
    micro = pathlib.Path(micro_exports["b8"].path).read_bytes()
    files = {}

    def write(name, data, match):
        path = out / name
        path.write_bytes(data)
        files[name.split(".")[0]] = (path, match)

    write("empty.tflite", b"", "empty")
    random = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    write("random.tflite", random, "TFL3")
    write("truncated.tflite", lite[: len(lite) // 2], "truncated")
    write("truncated_end.tflite", lite[:-100], "truncated")
    # A truncated micro step beside its own (correct) description.
    write("truncated_micro.tflite", micro[: 3 * len(micro) // 4], "truncated")
    shutil.copy(micro_exports["b8"].path[: -len(".tflite")] + ".json", out / "truncated_micro.json")
    keras_path = out / "spela.keras"
    model.save(keras_path)
    files["keras"] = (keras_path, r"zip archive.*\.keras")
    plain = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    write(
        "plain.tflite",
        tf.lite.TFLiteConverter.from_keras_model(plain).convert(),
        r"not a keras_spela export.*serving_default",
    )
    write(
        "micro_infer.tflite",
        pathlib.Path(micro_exports["b8"].inference_path).read_bytes(),
        r"not a keras_spela export.*\['x'\]",
    )
    files["missing"] = (out / "missing.tflite", "does not exist")
    files["directory"] = (out, "not a file")
    return files


BAD_FILES = [
    "empty",
    "random",
    "truncated",
    "truncated_end",
    "truncated_micro",
    "keras",
    "plain",
    "micro_infer",
    "missing",
    "directory",
]


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_model_file_litert(bad_model_files, case):
    path, match = bad_model_files[case]
    with pytest.raises(DeviceTrainingError) as error:
        DeviceTrainer(str(path), runtime="litert")
    assert type(error.value).__name__ == "ModelFileError"
    assert_model_file_error(
        {
            "ok": False,
            "mro": [c.__name__ for c in type(error.value).__mro__],
            "message": str(error.value),
        },
        path,
        match,
    )


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["micro", "auto"])
@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_model_file_micro_and_auto(bad_model_files, case, runtime):
    path, match = bad_model_files[case]
    assert_model_file_error(run_child({"model": str(path), "runtime": runtime}), path, match)


@pytest.mark.slow
def test_runtime_comes_from_the_model_not_a_json_beside_it(fresh, micro_exports, tmp_path):
    """An unrelated JSON beside a LiteRT model used to switch to TFLite Micro
    (and segfault); the micro step is recognised without looking at files."""
    _, lite_path, _ = fresh
    model = tmp_path / "spela.tflite"
    shutil.copy(lite_path, model)
    (tmp_path / "spela.json").write_text(json.dumps({"hello": 1}))
    result = run_child({"model": str(model), "runtime": "auto", "train": True})
    assert result["ok"] and result["runtime"] == "litert", result
    result = run_child({"model": micro_exports["b8"].path, "runtime": "auto", "train": True})
    assert result["ok"] and result["runtime"] == "micro", result


@pytest.mark.slow
def test_explicit_runtime_that_does_not_fit_the_model(fresh, micro_exports):
    _, lite_path, _ = fresh
    micro_path = micro_exports["b8"].path
    with pytest.raises(DeviceTrainingError, match=r"TFLite Micro train step.*runtime='micro'"):
        DeviceTrainer(micro_path, runtime="litert")
    assert_model_file_error(
        run_child({"model": lite_path, "runtime": "micro"}),
        lite_path,
        r"export_tflite.*not a TFLite Micro train step",
    )


def test_micro_description_records_the_model_hash(micro_exports):
    for export in micro_exports.values():
        description = json.loads(pathlib.Path(export.path[: -len(".tflite")] + ".json").read_text())
        digest = hashlib.sha256(pathlib.Path(export.path).read_bytes()).hexdigest()
        assert description["model_sha256"] == digest


def _description_cases(good, stale):
    """{case: (JSON text, what the error must say)} for the batch-8 step."""

    def edit(**changes):
        changed = dict(good, **changes)
        return json.dumps({k: v for k, v in changed.items() if v is not _DROP})

    return {
        "unrelated": (json.dumps({"hello": 1}), "missing the keys"),
        "a list": (json.dumps([1, 2]), "JSON object"),
        "not JSON": ("{inputs: [", "not valid JSON"),
        "stale, with hash": (json.dumps(stale), "model_sha256"),
        "stale, no hash": (
            json.dumps({k: v for k, v in stale.items() if k != "model_sha256"}),
            r"batch_size 4.*\(8, 64\)",
        ),
        "wrong hash": (edit(model_sha256="0" * 64), "model_sha256"),
        "hash not hex": (edit(model_sha256="abc"), "model_sha256"),
        "inputs swapped": (edit(inputs=good["inputs"][::-1]), "inputs"),
        "inputs renamed": (edit(inputs=["a", "b"]), "inputs"),
        "outputs swapped": (edit(outputs=good["outputs"][::-1]), "outputs"),
        "outputs short": (edit(outputs=good["outputs"][:2]), "outputs"),
        "batch_size a string": (edit(batch_size="8"), "batch_size"),
        "batch_size a bool": (edit(batch_size=True), "batch_size"),
        "input_shape": (edit(input_shape=[63]), "input_shape"),
        "input_shape strings": (edit(input_shape=["64"]), "input_shape"),
        "num_classes": (edit(num_classes=11), "num_classes"),
        "exits empty": (edit(exits=[]), "exits"),
        "weight_names": (edit(weight_names="hidden_kernel"), "weight_names"),
        "arena_bytes negative": (edit(arena_bytes=-5), "arena_bytes"),
        "no batch_size": (edit(batch_size=_DROP), "missing the keys.*batch_size"),
    }


_DROP = object()


@pytest.mark.slow
def test_micro_description_is_checked_before_the_interpreter(micro_exports, tmp_path):
    good_path = micro_exports["b8"].path[: -len(".tflite")] + ".json"
    good = json.loads(pathlib.Path(good_path).read_text())
    stale = json.loads(
        pathlib.Path(micro_exports["b4"].path[: -len(".tflite")] + ".json").read_text()
    )
    failures = {}
    for k, (case, (text, match)) in enumerate(_description_cases(good, stale).items()):
        directory = tmp_path / f"case_{k}"
        directory.mkdir()
        model = directory / "step.tflite"
        shutil.copy(micro_exports["b8"].path, model)
        description = directory / "step.json"
        description.write_text(text)
        for runtime in ("micro", "auto"):
            result = run_child({"model": str(model), "runtime": runtime})
            try:
                assert_model_file_error(result, description, match)
            except AssertionError as error:
                failures[f"{case} ({runtime})"] = str(error)[:300]
    assert not failures, json.dumps(failures, indent=1)


@pytest.mark.slow
def test_micro_description_of_another_model_with_the_same_tensors(micro_exports, tmp_path):
    """A description of another net with the same inputs and outputs: its
    model_sha256 gives it away; without one (an older export) TFLite Micro
    cannot allocate in its arena, which is reported as such."""
    model = tmp_path / "step.tflite"
    shutil.copy(micro_exports["b8"].path, model)
    other = json.loads(
        pathlib.Path(micro_exports["narrow"].path[: -len(".tflite")] + ".json").read_text()
    )
    description = tmp_path / "step.json"
    description.write_text(json.dumps(other))
    assert_model_file_error(run_child({"model": str(model)}), description, "model_sha256")
    del other["model_sha256"]
    description.write_text(json.dumps(other))
    assert_model_file_error(
        run_child({"model": str(model)}),
        model,
        r"could not prepare the step in an arena .*no model_sha256.*earlier export",
    )


@pytest.mark.slow
def test_micro_description_missing_or_given_explicitly(micro_exports, tmp_path):
    model = tmp_path / "step.tflite"
    shutil.copy(micro_exports["b8"].path, model)
    result = run_child({"model": str(model), "runtime": "auto"})
    assert_model_file_error(result, tmp_path / "step.json", "no description")
    # description_path= names a description elsewhere.
    good = micro_exports["b8"].path[: -len(".tflite")] + ".json"
    result = run_child(
        {"model": str(model), "runtime": "auto", "description_path": good, "train": True}
    )
    assert result["ok"] and result["runtime"] == "micro", result


@pytest.mark.slow
def test_interpreter_creation_prints_nothing(fresh, tmp_path):
    """LiteRT's C++ 'INFO: Created TensorFlow Lite XNNPACK delegate' and the
    like are captured around interpreter creation (shown only on failure)."""
    _, lite_path, _ = fresh
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from keras_spela_device import DeviceTrainer
        trainer = DeviceTrainer({lite_path!r})
        x = np.random.default_rng(0).random((trainer.batch_size, 64)).astype("float32")
        trainer.train_batch(x, np.arange(trainer.batch_size) % 10)
        trainer.predict(x[:3])
        trainer.get_weights()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == "", result.stderr


# ------------------------------------------------- the incomplete last batch
class _RecordingBackend(Backend):
    """A train step that ignores padding rows, recording its calls."""

    runtime = "fake"
    batch_size = 4
    input_shape = (2,)
    num_classes = 3
    exits = ["exit_0"]
    accepts_padding = True

    def __init__(self):
        self.calls = []

    def train(self, x, y):
        self.calls.append((x.copy(), y.copy()))
        return {
            "accepted": np.int32(1),
            "loss": np.float32(np.sum(y >= 0)),
            "examples": np.int32(np.sum(y >= 0)),
        }


def test_fit_pads_short_batches_with_padding_rows():
    """When the model ignores rows labelled -1, fit pads the last batch (and
    a data set smaller than one batch) with zero rows labelled -1."""
    x = np.arange(1, 21, dtype=np.float32).reshape(10, 2)
    y = np.arange(10) % 3
    backend = _RecordingBackend()
    trainer = DeviceTrainer._from_backend(backend)
    history = trainer.fit(x, y, shuffle=False, verbose=0)
    assert len(backend.calls) == 3
    used = []
    for bx, by in backend.calls:
        assert bx.shape == (4, 2) and by.shape == (4,) and by.dtype == np.int32
        assert np.all(bx[by == -1] == 0) and by.max() < 3
        used += [tuple(row) for row, label in zip(bx, by) if label >= 0]
    assert sorted(used) == sorted(tuple(row) for row in x)  # each once
    np.testing.assert_array_equal(backend.calls[-1][1], [2, 0, -1, -1])
    # The epoch's loss weighs each step by its real examples.
    assert history["loss"] == [pytest.approx((4 * 4 + 4 * 4 + 2 * 2) / 10)]

    backend.calls.clear()
    trainer.fit(x[:3], y[:3], verbose=0)
    assert len(backend.calls) == 1
    np.testing.assert_array_equal(backend.calls[0][1] >= 0, [1, 1, 1, 0])
    backend.calls.clear()
    trainer.train_batch(x[:2], y[:2])
    np.testing.assert_array_equal(backend.calls[0][1], [0, 1, -1, -1])
    with pytest.raises(DeviceTrainingError, match="at most"):
        trainer.train_batch(x[:5], y[:5])


class _UnpaddedBackend(_RecordingBackend):
    """A model exported before padding rows existed."""

    accepts_padding = False


def test_fit_drops_the_incomplete_last_batch_of_a_model_without_padding():
    x = np.arange(1, 21, dtype=np.float32).reshape(10, 2)
    y = np.arange(10) % 3
    backend = _UnpaddedBackend()
    trainer = DeviceTrainer._from_backend(backend)
    trainer.fit(x, y, shuffle=False, verbose=0)
    assert len(backend.calls) == 2  # 4 + 4 examples; the last 2 are left out
    assert all(by.shape == (4,) and by.min() >= 0 for _, by in backend.calls)
    with pytest.raises(DeviceTrainingError, match="at least batch_size=4"):
        trainer.fit(x[:3], y[:3], verbose=0)
    with pytest.raises(DeviceTrainingError, match="exactly 4"):
        trainer.train_batch(x[:3], y[:3])


def test_fit_learns_from_every_example(fresh, digits):
    """Each example influences the weights: changing the label of one in
    the incomplete last batch changes them."""
    _, path, _ = fresh
    (x_train, y_train), _ = digits
    x, y = x_train[: 3 * BATCH + 5], y_train[: 3 * BATCH + 5]
    base = DeviceTrainer(path, runtime="litert")
    base.fit(x, y, shuffle=False, verbose=0)
    influenced = {}
    for index in (0, 2 * BATCH + 1, 3 * BATCH, 3 * BATCH + 4):
        changed = y.copy()
        changed[index] = (y[index] + 1) % 10
        trainer = DeviceTrainer(path, runtime="litert")
        trainer.fit(x, changed, shuffle=False, verbose=0)
        influenced[index] = any(
            not np.array_equal(base.get_weights()[k], v) for k, v in trainer.get_weights().items()
        )
    assert all(influenced.values()), f"examples that did not influence the weights: {influenced}"


def test_fit_accepts_fewer_examples_than_batch_size(fresh, digits):
    _, path, _ = fresh
    (x_train, y_train), _ = digits
    trainer = DeviceTrainer(path, runtime="litert")
    before = trainer.get_weights()
    trainer.fit(x_train[:5], y_train[:5], verbose=0)
    after = trainer.get_weights()
    assert any(not np.array_equal(before[k], after[k]) for k in before)


# ------------------------------------------- LiteRT's CompiledModel API
# runtime="litert_compiled" runs the same four signatures through
# ai_edge_litert.compiled_model.CompiledModel with TensorBuffers.
COMPILED_STEPS = 20  # full batches of the parity tests (and a padded 21st)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_compiled_model_training_equals_host_fit(digits, tmp_path, optimizer, spela_mlp):
    (x, y), _ = digits
    x, y = x[: BATCH * COMPILED_STEPS + 9], y[: BATCH * COMPILED_STEPS + 9]
    model = spela_mlp((64, 16), seed=2, names=None)
    model.compile(
        {
            "sgd": keras.optimizers.SGD(0.5),
            "momentum": keras.optimizers.SGD(0.1, momentum=0.9),
            "adam": keras.optimizers.Adam(1e-2),
        }[optimizer]
    )
    export = keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=BATCH)
    keras_spela.testing.assert_devices_train_like_fit(
        DeviceTrainer,
        {"litert_compiled": export.path, "litert": export.path},
        model,
        x,
        y,
        BATCH,
    )


def test_compiled_model_losses_and_weights_equal_the_interpreter(fresh, digits):
    """40 steps: the same losses (measured max difference 0) and the same
    weights, bit for bit: the weights persist in the compiled model's
    variables across train calls as in the Interpreter's."""
    _, path, _ = fresh
    (x_train, y_train), _ = digits
    interpreter = DeviceTrainer(path, runtime="litert")
    compiled = DeviceTrainer(path, runtime="litert_compiled")
    assert compiled.runtime == "litert_compiled"
    assert (compiled.batch_size, compiled.input_shape, compiled.exits) == (
        interpreter.batch_size,
        interpreter.input_shape,
        interpreter.exits,
    )
    initial = interpreter.get_weights()
    largest = 0.0
    for step in range(40):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        expected = interpreter.train_batch(x_train[batch], y_train[batch])
        losses = compiled.train_batch(x_train[batch], y_train[batch])
        assert sorted(losses) == sorted(expected)
        largest = max(largest, max(abs(losses[k] - expected[k]) for k in expected))
    print(f"CompiledModel vs Interpreter, 40 steps: max loss difference {largest}")
    assert largest == 0.0
    weights, expected = compiled.get_weights(), interpreter.get_weights()
    assert sorted(weights) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(weights[name], expected[name], err_msg=name)
    assert all(not np.array_equal(weights[k], initial[k]) for k in initial), "a weight did not move"
    _, (x_test, y_test) = digits
    for n in (1, 37, len(x_test)):  # infer resizes its batch
        scores, reference = (
            compiled.predict(x_test[:n], exit="all"),
            interpreter.predict(x_test[:n], exit="all"),
        )
        for name in reference:
            np.testing.assert_array_equal(scores[name], reference[name], err_msg=name)
    assert compiled.evaluate(x_test, y_test) == interpreter.evaluate(x_test, y_test)


def test_compiled_model_weights_round_trip(fresh, digits, tmp_path):
    _, path, _ = fresh
    (x_train, y_train), _ = digits
    trained = DeviceTrainer(path, runtime="litert_compiled")
    trained.fit(x_train[: 4 * BATCH], y_train[: 4 * BATCH], verbose=0)
    # get_weights runs any number of times (CompiledModel binds its outputs
    # anew each call) and gives the same values.
    first, second = trained.get_weights(), trained.get_weights()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    trained.save_weights(tmp_path / "w.npz")
    restored = DeviceTrainer(path, runtime="litert_compiled")
    restored.load_weights(tmp_path / "w.npz")
    for name, value in restored.get_weights().items():
        np.testing.assert_array_equal(value, first[name], err_msg=name)
    # Restored weights and optimizer state train on like the original.
    batch = x_train[4 * BATCH : 5 * BATCH], y_train[4 * BATCH : 5 * BATCH]
    assert restored.train_batch(*batch) == trained.train_batch(*batch)
    kernel = next(name for name in first if name.endswith("_kernel"))
    with pytest.raises(DeviceTrainingError, match=f"{kernel}.*NaN"):
        restored.set_weights(dict(first, **{kernel: np.full_like(first[kernel], np.nan)}))


def test_compiled_model_rejected_batch_changes_nothing(fresh, digits):
    """A NaN batch given to the model itself (past DeviceTrainer's checks) is
    rejected by the train signature; weights and optimizer state stay."""
    _, path, _ = fresh
    (x_train, y_train), _ = digits
    trainer = DeviceTrainer(path, runtime="litert_compiled")
    trainer.train_batch(x_train[:BATCH], y_train[:BATCH])
    before = trainer.get_weights()
    x = x_train[BATCH : 2 * BATCH].copy()
    x[3, 5] = np.nan
    with pytest.raises(DeviceTrainingError, match="rejected the batch"):
        trainer._train_checked(x, y_train[BATCH : 2 * BATCH].astype(np.int32))
    for name, value in trainer.get_weights().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    with pytest.raises(DeviceTrainingError, match="NaN"):  # DeviceTrainer's own check
        trainer.train_batch(x, y_train[BATCH : 2 * BATCH])


def test_compiled_model_errors(fresh, micro_exports, bad_model_files, monkeypatch):
    _, lite_path, _ = fresh
    with pytest.raises(DeviceTrainingError, match=r"TFLite Micro train step.*runtime='micro'"):
        DeviceTrainer(micro_exports["b8"].path, runtime="litert_compiled")
    for case in BAD_FILES:
        path, match = bad_model_files[case]
        with pytest.raises(DeviceTrainingError) as error:
            DeviceTrainer(str(path), runtime="litert_compiled")
        assert type(error.value).__name__ == "ModelFileError", case
        assert str(path) in str(error.value) and re.search(match, str(error.value)), case
    # Without the CompiledModel API (ai-edge-litert 1.x, or not installed).
    monkeypatch.setitem(sys.modules, "ai_edge_litert.compiled_model", None)
    with pytest.raises(
        ImportError, match=r"'litert_compiled' needs LiteRT's CompiledModel.*pip install"
    ):
        DeviceTrainer(lite_path, runtime="litert_compiled")


def test_compiled_model_reads_get_weights_of_the_file_as_exported(fresh):
    """What a Kotlin app loads: the exported file itself. CompiledModel binds
    every get_weights output to a TensorBuffer (a bare READ_VARIABLE output
    is dynamic and cannot be bound: export_tflite writes computed outputs),
    call after call, with the Interpreter's values."""
    from ai_edge_litert.compiled_model import CompiledModel

    from keras_spela_device import capture_native_stderr

    _, path, _ = fresh
    expected = DeviceTrainer(path, runtime="litert").get_weights()
    with capture_native_stderr():
        model = CompiledModel.from_file(path)
        index = model.get_signature_index("get_weights")
        inputs, outputs = model.create_input_buffers(index), model.create_output_buffers(index)
        inputs[0].write(np.zeros((), np.int32))
        names = model.get_signature_list()["get_weights"]["outputs"]
        for _ in range(3):
            model.run_by_index(index, inputs, outputs)
            for name, buffer in zip(names, outputs):
                value = buffer.read(expected[name].size, np.float32).reshape(expected[name].shape)
                np.testing.assert_array_equal(value, expected[name], err_msg=name)


@pytest.mark.slow
def test_cli_trains_on_the_compiled_model(fresh, digits, tmp_path):
    _, path, _ = fresh
    (x_train, y_train), _ = digits
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x_train[: 6 * BATCH], y_train=y_train[: 6 * BATCH])
    weights = tmp_path / "w.npz"
    result = _run_cli(
        "--model",
        path,
        "--data",
        str(data),
        "--runtime",
        "litert_compiled",
        "--save_weights",
        str(weights),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("runtime litert_compiled, batch 16"), result.stdout
    assert result.stderr == "", result.stderr  # LiteRT's INFO lines are captured
    reference = DeviceTrainer(path, runtime="litert")
    reference.fit(x_train[: 6 * BATCH], y_train[: 6 * BATCH], epochs=1, seed=0, verbose=0)
    with np.load(weights) as saved:
        for name, value in reference.get_weights().items():
            np.testing.assert_array_equal(saved[name], value, err_msg=name)


# ------------------------------------------ predict and evaluate, any rows
# Every runtime scores any number of rows: models whose input goes through a
# reshape (Flatten, every SpelaConv2D model) too. A CompiledModel used to
# return one row of scores and then corrupt the heap, so each runtime runs
# in a child process (a crash is a failed test).
SCORE_ROWS = (1, 5, 37, 0, 8, 1, 100, 3, 16)

SCORE_CHILD = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    from keras_spela_device import DeviceTrainer

    job = json.loads(sys.argv[1])
    trainer = DeviceTrainer(job["model"], runtime=job["runtime"])
    with np.load(job["data"]) as data:
        x, y = data["x"], data["y"]
    scores, accuracy = {}, []
    for k, n in enumerate(job["rows"]):
        every = trainer.predict(x[:n], exit="all")
        for name, value in every.items():
            scores[f"{k}_{name}"] = value
        accuracy.append(trainer.evaluate(x[:n], y[:n]))
    # Training between the calls changes nothing in how they run.
    trainer.train_batch(x[: trainer.batch_size], y[: trainer.batch_size])
    scores["after_train"] = trainer.predict(x[:37])
    np.savez(job["scores"], **scores)
    print("RESULT " + json.dumps({"accuracy": accuracy, "exits": trainer.exits}))
    """
)


def _score_model(kind, seed=3):
    keras.utils.set_random_seed(seed)
    if kind == "flatten":  # examples/on_device_finetune.py's model
        layers = [keras.Input((8, 8, 1)), keras.layers.Flatten(), SpelaDense(32), SpelaDense(16)]
    else:
        layers = [
            keras.Input((8, 8, 1)),
            keras_spela.SpelaConv2D(4, 3, padding="same"),
            keras.layers.Flatten(),
            SpelaDense(16),
        ]
    return SpelaModel(layers, num_classes=10)


@pytest.fixture(scope="module", params=["flatten", "conv"])
def score_models(request, digits, tmp_path_factory):
    """A reshape model, its LiteRT and TFLite Micro exports, its data and
    the host's scores at every exit."""
    kind = request.param
    out = tmp_path_factory.mktemp(f"scores_{kind}")
    model = _score_model(kind)
    (x, y), _ = digits
    x = x[:100].reshape(-1, 8, 8, 1).astype(np.float32)
    y = y[:100].astype(np.int32)
    data = out / "data.npz"
    np.savez(data, x=x, y=y)
    paths = {
        "litert": keras_spela.export_tflite(model, str(out / "m.tflite"), batch_size=8).path,
        "micro": keras_spela.export_tflite_micro(
            model, str(out / "micro.tflite"), batch_size=8
        ).path,
    }
    host = {k: v.numpy() for k, v in model.exit_scores(x).items()}
    host = dict(zip([f"exit_{k}" for k in range(len(host))], host.values()))
    return {"kind": kind, "paths": paths, "data": data, "x": x, "y": y, "host": host, "out": out}


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["litert", "litert_compiled", "micro"])
def test_predict_and_evaluate_score_any_number_of_rows(score_models, runtime):
    path = score_models["paths"]["micro" if runtime == "micro" else "litert"]
    scores_path = score_models["out"] / f"{runtime}_scores.npz"
    job = {
        "model": path,
        "runtime": runtime,
        "data": str(score_models["data"]),
        "rows": list(SCORE_ROWS),
        "scores": str(scores_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCORE_CHILD, json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
    assert result.returncode == 0 and lines, (
        f"{runtime} died (exit code {result.returncode}):\n" + result.stderr[-3000:]
    )
    report = json.loads(lines[-1][len("RESULT ") :])
    host, y = score_models["host"], score_models["y"]
    scored = list(host) if runtime != "micro" else list(host)[-1:]
    with np.load(scores_path) as scores:
        for k, n in enumerate(SCORE_ROWS):
            for name in scored:
                value = scores[f"{k}_{name}"]
                assert value.shape == (n, 10), (runtime, n, name, value.shape)
                np.testing.assert_allclose(
                    value,
                    host[name][:n],
                    rtol=1e-5,
                    atol=1e-5,
                    err_msg=f"{runtime}, {n} rows, {name}",
                )
            accuracy = report["accuracy"][k]
            assert sorted(accuracy) == sorted(f"{name}_accuracy" for name in scored)
            for name in scored:
                expected = float(np.mean(np.argmax(host[name][:n], -1) == y[:n])) if n else 0.0
                assert accuracy[f"{name}_accuracy"] == pytest.approx(expected), (runtime, n)
        assert scores["after_train"].shape == (37, 10)


@pytest.mark.slow
def test_compiled_model_scores_equal_the_interpreter_in_any_order(score_models):
    """Batches of every size in a random order, with training and weight
    round trips between them: the CompiledModel's scores are the
    Interpreter's, bit for bit (run in a child: a crash fails the test)."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from keras_spela_device import DeviceTrainer
        path = {score_models["paths"]["litert"]!r}
        compiled = DeviceTrainer(path, runtime="litert_compiled")
        interpreter = DeviceTrainer(path, runtime="litert")
        rng = np.random.default_rng(0)
        for step in range(60):
            n = int(rng.choice([0, 1, 2, 7, 8, 9, 33, 100, 257]))
            x = rng.random((n, 8, 8, 1)).astype("float32")
            y = rng.integers(0, 10, n)
            action = step % 4
            if action == 0:
                a, b = compiled.predict(x, exit="all"), interpreter.predict(x, exit="all")
                assert sorted(a) == sorted(b)
                for name in b:
                    assert a[name].shape == (n, 10), (n, a[name].shape)
                    assert np.array_equal(a[name], b[name]), (n, name)
            elif action == 1:
                assert compiled.evaluate(x, y) == interpreter.evaluate(x, y), n
            elif action == 2 and n:
                m = min(n, compiled.batch_size)
                assert compiled.train_batch(x[:m], y[:m]) == interpreter.train_batch(x[:m], y[:m])
            else:
                compiled.set_weights(interpreter.get_weights())
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), (
        f"exit code {result.returncode}\n" + result.stderr[-3000:]
    )


# ------------------------------------------------------------ rough edges
def test_predict_refuses_an_exit_the_model_does_not_have(fresh, micro_exports):
    _, path, _ = fresh
    trainer = DeviceTrainer(path, runtime="litert")
    x = np.zeros((3, 64), np.float32)
    for exit in (5, -3, 2):
        with pytest.raises(ValueError, match=rf"exit={exit} is out of range.*exit_0', 'exit_1'"):
            trainer.predict(x, exit=exit)
    for exit in (True, 1.0, ["exit_0"]):
        with pytest.raises(ValueError, match="exit must be None, 'all', an exit index or name"):
            trainer.predict(x, exit=exit)
    np.testing.assert_array_equal(trainer.predict(x, exit=-2), trainer.predict(x, exit="exit_0"))
    # TFLite Micro scores the last exit: the others are refused by name.
    micro = DeviceTrainer(micro_exports["b8"].path, runtime="micro")
    assert micro.exits == ["exit_0", "exit_1"] and micro.scored_exits == ["exit_1"]
    for exit in (0, "exit_0", -2):
        with pytest.raises(
            ValueError, match=r"scores its last exit only \('exit_1'\); exit 'exit_0' needs"
        ):
            micro.predict(x, exit=exit)
    np.testing.assert_array_equal(micro.predict(x, exit=1), micro.predict(x))
    np.testing.assert_array_equal(micro.predict(x, exit="exit_1"), micro.predict(x, exit=-1))
    assert list(micro.predict(x, exit="all")) == ["exit_1"]


@pytest.mark.parametrize("runtime", ["litert", "litert_compiled", "micro"])
def test_zero_rows_predict_and_evaluate(fresh, micro_exports, runtime):
    path = micro_exports["b8"].path if runtime == "micro" else fresh[1]
    trainer = DeviceTrainer(path, runtime=runtime)
    empty = np.zeros((0, 64), np.float32)
    assert trainer.predict(empty).shape == (0, 10)
    assert all(v.shape == (0, 10) for v in trainer.predict(empty, exit="all").values())
    assert trainer.evaluate(empty, np.zeros(0, np.int64)) == {
        f"{name}_accuracy": 0.0 for name in trainer.scored_exits
    }


def test_labels_of_shape_n_by_1_are_taken_like_the_host(fresh, digits):
    _, path, _ = fresh
    (x, y), _ = digits
    x, y = x[: 2 * BATCH + 3], y[: 2 * BATCH + 3]
    flat, column = DeviceTrainer(path, runtime="litert"), DeviceTrainer(path, runtime="litert")
    assert flat.fit(x, y, verbose=0) == column.fit(x, y.reshape(-1, 1), verbose=0)
    assert flat.train_batch(x[:BATCH], y[:BATCH]) == column.train_batch(
        x[:BATCH], y[:BATCH].reshape(-1, 1)
    )
    for name, value in flat.get_weights().items():
        np.testing.assert_array_equal(column.get_weights()[name], value)
    assert flat.evaluate(x, y) == column.evaluate(x, y[:, None])
    with pytest.raises(
        DeviceTrainingError, match=r"shape \(35,\) or \(35, 1\), received \(35, 2\)"
    ):
        column.fit(x, np.stack([y, y], 1), verbose=0)


def test_save_and_load_weights_with_or_without_npz(fresh, tmp_path):
    _, path, _ = fresh
    trainer = DeviceTrainer(path, runtime="litert")
    x = np.random.default_rng(0).random((BATCH, 64)).astype(np.float32)
    trainer.train_batch(x, np.arange(BATCH) % 10)
    expected = trainer.get_weights()
    for given, written in (("w", "w.npz"), ("v.npz", "v.npz")):
        assert trainer.save_weights(tmp_path / given) == str(tmp_path / written)
        restored = DeviceTrainer(path, runtime="litert")
        restored.load_weights(tmp_path / given)
        for name, value in restored.get_weights().items():
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npz", "w.npz"]
    with pytest.raises(DeviceTrainingError, match="u.npz: the weights file does not exist"):
        trainer.load_weights(tmp_path / "u")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
