"""export_tflite_micro(quantize_frozen=True): the frozen front becomes a full-int8 TFLite Micro
model (builtins only, int8 kernels), the train step takes its features, DeviceTrainer runs both
and learns exactly what SpelaModel.fit learns from the same features; bad settings and
mismatched files are one clear error; a batch beyond the acceptance bound changes nothing."""

import json
import pathlib
import shutil
import sys

import keras
import numpy as np
import pytest

import keras_spela
from keras_spela import SpelaConv2D
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela.lite import flatbuffer_ops
from keras_spela_device import DeviceTrainer
from keras_spela_device import DeviceTrainingError
from keras_spela_device import ModelFileError

# Fixtures that export models: the tests that use them are `slow` (tests/conftest.py).
EXPORTING_FIXTURES = ("exported",)

BATCH = 8


def _images(fashion_subset, rows=160):
    x, y = fashion_subset
    return x[:rows, 8:20, 8:20, None].astype(np.float32) / 255.0, (y[:rows] % 4).astype(np.int32)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return SpelaModel(
        [
            keras.Input((12, 12, 1)),
            SpelaConv2D(4, 3, padding="same", name="conv"),
            keras.layers.Flatten(),
            SpelaDense(16, name="hidden"),
            SpelaDense(12, name="head"),
        ],
        num_classes=4,
    )


@pytest.fixture(scope="module")
def exported(fashion_subset, tmp_path_factory):
    x, y = _images(fashion_subset)
    model = _model()
    model.compile()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    path = str(tmp_path_factory.mktemp("features") / "step.tflite")
    export = keras_spela.export_tflite_micro(
        model,
        path,
        batch_size=BATCH,
        optimizer="sgd",
        learning_rate=0.1,
        train_layers=1,
        quantize_frozen=True,
        representative_data=x,
        expose_weights=True,
    )
    return model, export, x, y


def test_front_is_an_int8_builtins_model_and_the_step_takes_its_features(exported):
    model, export, _, _ = exported
    data = pathlib.Path(export.features_path).read_bytes()
    operators = flatbuffer_ops.check_builtin_only(data)
    assert {
        "QUANTIZE",
        "CONV_2D",
        "MAX_POOL_2D",
        "LEAKY_RELU",
        "FULLY_CONNECTED",
        "DEQUANTIZE",
    } <= set(operators)
    description = json.loads(pathlib.Path(export.path).with_suffix(".json").read_text())
    assert description["input_shape"] == [16]  # the hidden layer's features
    assert description["features"]["input_shape"] == [12, 12, 1]
    assert description["features"]["file"] == pathlib.Path(export.features_path).name
    assert description["weight_names"] == ["head_kernel", "head_bias"]
    assert description["exits"] == ["exit_2"]  # the full model's exit numbers
    assert export.arena_bytes > 0 and export.features_arena_bytes > 0
    trainer = DeviceTrainer(export.path)
    assert trainer.input_shape == (12, 12, 1)


def test_device_learns_what_fit_learns_from_the_same_int8_features(exported):
    model, export, x, y = exported
    trainer = DeviceTrainer(export.path)
    features = trainer._backend.features(x)
    assert features.shape == (len(x), 16) and np.all(np.isfinite(features))
    # The int8 front is close to the float one (the host's hidden layer).
    float_features = keras.Sequential(model.stack[:3])(x).numpy()
    assert np.corrcoef(features.ravel(), float_features.ravel())[0, 1] > 0.99
    # The head on those features, trained by fit from the device's start.
    start = trainer.get_weights()
    head = SpelaDense(12, name="head", num_classes=4)
    host_head = SpelaModel([keras.Input((16,)), head], num_classes=4)
    head.kernel.assign(start["head_kernel"])
    head.bias.assign(start["head_bias"])
    head.class_vectors.assign(model.get_layer("head").class_vectors.numpy())
    host_head.compile(keras.optimizers.SGD(0.1))
    host_head.fit(features, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    trainer.fit(x, y, epochs=1, shuffle=False, verbose=0)
    device = trainer.get_weights()
    for name, variable in (("head_kernel", head.kernel), ("head_bias", head.bias)):
        expected = variable.numpy()
        assert np.max(np.abs(expected - start[name])) > 1e-4, name
        error = np.max(np.abs(device[name] - expected)) / np.max(np.abs(expected))
        assert error <= 1e-5, (name, error)


def test_a_batch_beyond_the_bound_changes_nothing(exported):
    _, export, x, y = exported
    trainer = DeviceTrainer(export.path)
    before = trainer.get_weights()
    bad = np.full((BATCH, 12, 12, 1), 3e38, np.float32)
    with pytest.raises(DeviceTrainingError, match="rejected the batch"):
        trainer.train_batch(bad, y[:BATCH])
    for name, value in trainer.get_weights().items():
        np.testing.assert_array_equal(value, before[name])
    trainer.train_batch(x[:BATCH], y[:BATCH])  # a good batch still learns


def test_a_missing_or_foreign_features_model_is_one_clear_error(exported, tmp_path):
    _, export, _, _ = exported
    stem = pathlib.Path(export.path).stem
    for suffix in (".tflite", ".json"):
        shutil.copy(pathlib.Path(export.path).with_suffix(suffix), tmp_path / (stem + suffix))
    with pytest.raises(ModelFileError, match="features model .* cannot be read"):
        DeviceTrainer(str(tmp_path / (stem + ".tflite")))
    foreign = tmp_path / pathlib.Path(export.features_path).name
    foreign.write_bytes(pathlib.Path(export.path).read_bytes())
    with pytest.raises(ModelFileError, match="different exports"):
        DeviceTrainer(str(tmp_path / (stem + ".tflite")))


def test_bad_settings_are_one_clear_error(fashion_subset, tmp_path):
    x, _ = _images(fashion_subset, 16)
    model = _model()
    with pytest.raises(ValueError, match="pass representative_data="):
        keras_spela.export_tflite_micro(
            model, str(tmp_path / "a.tflite"), train_layers=1, quantize_frozen=True
        )
    with pytest.raises(ValueError, match="nothing to quantise"):
        keras_spela.export_tflite_micro(
            model, str(tmp_path / "b.tflite"), quantize_frozen=True, representative_data=x
        )
    with pytest.raises(ValueError, match=r"examples of shape \(12, 12, 1\)"):
        keras_spela.export_tflite_micro(
            model,
            str(tmp_path / "c.tflite"),
            train_layers=1,
            quantize_frozen=True,
            representative_data=x[:, :, :6],
        )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
