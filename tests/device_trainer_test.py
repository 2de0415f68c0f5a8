"""DeviceTrainer end to end on LiteRT: it learns the digits, evaluates and
predicts per exit, and its command line trains and saves weights."""

import os
import pathlib
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Running the file directly (python tests/<file>.py) finds the checkout's package.
sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))

import keras
import numpy as np
import pytest

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel

REPO = pathlib.Path(__file__).resolve().parents[1]
DEVICE_TRAINER = REPO / "export" / "device_trainer.py"
sys.path.insert(0, str(DEVICE_TRAINER.parent))

from device_trainer import DeviceTrainer  # noqa: E402
from device_trainer import DeviceTrainingError  # noqa: E402

BATCH = 16
EPOCHS = 4


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    return SpelaModel(
        [keras.Input((64,)), SpelaDense(64), SpelaDense(16)], num_classes=10
    )


@pytest.fixture(scope="module")
def digits():
    return keras_spela.datasets.load_digits()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A fresh (untrained) 64-64-16 model and its LiteRT export (Adam 1e-2)."""
    out = tmp_path_factory.mktemp("device_trainer")
    model = make_model()
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


def test_fit_improves_host_pretrained_model(tmp_path, digits):
    (x_train, y_train), (x_test, y_test) = digits
    model = make_model(seed=5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    # A short host pretraining on a slice of the data.
    model.fit(x_train[:480], y_train[:480], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    host_accuracy = float(
        np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)
    )
    assert host_accuracy > 0.3  # it did learn on the host
    export = keras_spela.export_tflite(
        model, str(tmp_path / "pretrained.tflite"), batch_size=BATCH,
        optimizer="adam", learning_rate=1e-2,
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


def test_fit_drops_incomplete_last_batch(fresh, digits):
    _, path, _ = fresh
    (x_train, y_train), _ = digits
    a = DeviceTrainer(path, runtime="litert")
    b = DeviceTrainer(path, runtime="litert")
    a.fit(x_train[: 3 * BATCH + 5], y_train[: 3 * BATCH + 5], shuffle=False, verbose=0)
    b.fit(x_train[: 3 * BATCH], y_train[: 3 * BATCH], shuffle=False, verbose=0)
    wa, wb = a.get_weights(), b.get_weights()
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name])
    assert float(wa["adam_beta_1_power"]) == pytest.approx(0.9**3, rel=1e-6)


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
        "--model", path, "--data", str(data), "--epochs", "1", "--seed", "1",
        "--load_weights", str(weights), "--save_weights", str(weights_2),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    reference.fit(x_train, y_train, epochs=1, seed=1, verbose=0)
    expected = reference.get_weights()
    with np.load(weights_2) as saved:
        for name in saved.files:
            np.testing.assert_array_equal(saved[name], expected[name])


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
    assert result.returncode != 0
    assert "DeviceTrainingError" in result.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
