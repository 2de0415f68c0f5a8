"""SpelaModel(max_classes=...): room for classes the host never had.

Activation on the host and on the device (LiteRT, TFLite Micro), training
of a new class equal to fit's, labels of inactive classes refused without a
change, prediction and evaluation over the active classes, .keras round trip.
"""

import sys

import keras
import numpy as np
import pytest

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela.testing import host_weights
from keras_spela_device import DeviceTrainer
from keras_spela_device import DeviceTrainingError

BATCH = 8


def test_host_activation_training_and_scores(digits, tmp_path, spela_mlp):
    (x, y), (x_test, y_test) = digits
    model = spela_mlp((32, 16), names=("hidden", "last"), num_classes=8, max_classes=10)
    # Adam 1e-2, the library's optimizer, at a constant rate: the fit on 140 examples
    # below is a fine-tune, which the default cosine would cool before the new classes
    # are learned (20 epochs: 0.93-0.96 on seeds 0-2; 10 epochs: 0.39-0.94).
    model.compile(anneal=False)
    assert model.num_classes == 10 and model.max_classes == 10
    assert model.active_classes == list(range(8))
    old = y < 8
    model.fit(x[old], y[old], batch_size=50, epochs=3, verbose=0)
    # Inactive classes never win, and evaluate covers the active ones.
    assert model.predict(x_test, verbose=0).argmax(1).max() < 8
    accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    predicted = model.predict(x_test[y_test < 8], verbose=0).argmax(1)
    assert accuracy == pytest.approx(np.mean(predicted == y_test[y_test < 8]), abs=1e-6)
    before = [w.numpy().copy() for w in model.weights + model.optimizer.variables]
    with pytest.raises(keras_spela.BatchRejectedError, match="not active"):
        model.fit(x[:50], y[:50], batch_size=50, verbose=0)
    # No weight and no optimizer variable (its iteration count included) moved.
    for weight, value in zip(model.weights + model.optimizer.variables, before):
        np.testing.assert_array_equal(weight.numpy(), value)
    model.activate_class(8)
    with pytest.raises(ValueError, match="already active"):
        model.activate_class(8)
    with pytest.raises(ValueError, match=r"\[0, max_classes=10\)"):
        model.activate_class(10)
    model.activate_class(9)
    # 20 examples of each new class, with 100 stored old ones (replay).
    new = np.concatenate(
        [np.flatnonzero(y == 8)[:20], np.flatnonzero(y == 9)[:20], np.flatnonzero(y < 8)[:100]]
    )
    model.fit(x[new], y[new], batch_size=BATCH, epochs=20, verbose=0)
    predicted = model.predict(x_test, verbose=0).argmax(1)
    assert np.mean(predicted[y_test >= 8] == y_test[y_test >= 8]) >= 0.8
    path = str(tmp_path / "slots.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.active_classes == list(range(10)) and restored.max_classes == 10
    np.testing.assert_allclose(
        restored.predict(x_test[:20], verbose=0),
        model.predict(x_test[:20], verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )


def test_inactive_count_never_goes_negative():
    """A count below 0 could cancel another reason in `accepted`."""
    import tensorflow as tf

    from keras_spela.core import acceptance

    x = tf.zeros((2, 3))
    counts = acceptance.input_rejections(
        x, tf.constant([2, 0]), 3, class_mask=tf.constant([1.0, 1.0, 2.0])
    )
    assert float(counts["inactive"]) == 0.0
    counts = acceptance.input_rejections(
        x, tf.constant([2, 0]), 3, class_mask=tf.constant([1.0, 1.0, 0.0])
    )
    assert float(counts["inactive"]) == 1.0


def test_evaluate_with_sample_weights_covers_active_classes(digits, spela_mlp):
    (x, y), _ = digits
    model = spela_mlp((32, 16), names=("hidden", "last"), num_classes=8, max_classes=10)
    model.compile(keras.optimizers.SGD(0.5))
    weights = np.ones((100, 1), np.float32)
    result = model.evaluate(x[:100], y[:100], sample_weight=weights, verbose=0, return_dict=True)
    predicted = model.predict(x[:100], verbose=0).argmax(1)
    keep = y[:100] < 8
    assert result["accuracy"] == pytest.approx(np.mean(predicted[keep] == y[:100][keep]), abs=1e-6)


def test_max_classes_errors():
    with pytest.raises(ValueError, match="max_classes=5 must be >= num_classes=8"):
        SpelaModel([keras.Input((4,)), SpelaDense(16)], num_classes=8, max_classes=5)
    model = SpelaModel([keras.Input((4,)), SpelaDense(16)], num_classes=8)
    with pytest.raises(ValueError, match="no room for new classes"):
        model.activate_class(3)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["litert", "micro"])
def test_device_new_class_training_equals_fit(digits, tmp_path, runtime, spela_mlp):
    (x, y), _ = digits
    model = spela_mlp((32, 16), names=("hidden", "last"), num_classes=8, max_classes=10, seed=1)
    model.compile(keras.optimizers.SGD(0.5))
    if runtime == "litert":
        path = keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=BATCH).path
    else:
        path = keras_spela.export_tflite_micro(
            model, str(tmp_path / "m.tflite"), batch_size=BATCH, expose_weights=True
        ).path
    trainer = DeviceTrainer(path, runtime=runtime)
    assert trainer.active_classes == list(range(8))
    # Examples of inactive classes only: nothing to score, accuracy 0.
    assert set(trainer.evaluate(x[y >= 8][:5], y[y >= 8][:5]).values()) == {0.0}
    new = np.flatnonzero(y >= 8)[:24]
    mixed = np.concatenate([new, np.flatnonzero(y < 8)[:19]])  # a short last batch too
    before = trainer.get_weights()
    with pytest.raises(DeviceTrainingError, match=r"not active: \[8, 9\]"):
        trainer.fit(x[mixed], y[mixed], epochs=1, verbose=0)
    for name, value in trainer.get_weights().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    for k in (8, 9):
        trainer.activate_class(k)
        model.activate_class(k)
    with pytest.raises(DeviceTrainingError, match="already active"):
        trainer.activate_class(9)
    with pytest.raises(DeviceTrainingError, match=r"\[0, max_classes=10\)"):
        trainer.activate_class(12)
    assert trainer.active_classes == list(range(10))
    trainer.fit(x[mixed], y[mixed], epochs=1, shuffle=False, verbose=0)
    model.fit(x[mixed], y[mixed], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    device = trainer.get_weights()
    for name, reference in host_weights(model).items():
        error = np.max(np.abs(device[name] - reference)) / np.max(np.abs(reference))
        assert error <= 1e-5, (name, error)
    np.testing.assert_allclose(
        trainer.predict(x[:16]), model.predict(x[:16], verbose=0), rtol=1e-5, atol=1e-5
    )
    if runtime == "litert":
        weights = trainer.get_weights()
        weights["active_classes"] = np.full(10, 0.5, np.float32)
        with pytest.raises(DeviceTrainingError, match="0 or 1 per class"):
            trainer.set_weights(weights)
        assert trainer.active_classes == list(range(10))
        # The active classes are saved and restored with the weights.
        trainer.save_weights(str(tmp_path / "w.npz"))
        fresh = DeviceTrainer(path, runtime=runtime)
        assert fresh.active_classes == list(range(8))
        fresh.load_weights(str(tmp_path / "w.npz"))
        assert fresh.active_classes == list(range(10))


@pytest.mark.slow
def test_device_trainer_without_max_classes_has_no_slots(digits, tmp_path):
    model = SpelaModel([keras.Input((64,)), SpelaDense(16)], num_classes=10)
    path = keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=BATCH).path
    trainer = DeviceTrainer(path)
    assert trainer.active_classes is None
    with pytest.raises(DeviceTrainingError, match="no room for new classes"):
        trainer.activate_class(3)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
