"""SpelaModel on the shipped digits: default compile reaches its accuracy, optimizers train,
.keras round trips, seeds, and compile's refusals."""

import sys

import keras
import numpy as np
import pytest

from keras_spela import datasets
from keras_spela.layers import SpelaDense
from keras_spela.training.model import SpelaModel

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES


def _small_train(digits, n=500):
    (x, y), _ = digits
    return x[:n], y[:n]


# ------------------------------------------------------------------ accuracy
def test_fit_default_compile_reaches_95_percent_in_5_epochs(digits):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(1)
    model = SpelaModel(
        [keras.Input((64,)), SpelaDense(256, name="hidden"), SpelaDense(34, name="top")],
        num_classes=NUM_CLASSES,
    )
    model.compile()
    history = model.fit(
        x_train,
        y_train,
        epochs=5,
        batch_size=50,
        validation_data=(x_test, y_test),
        verbose=0,
    )
    layer_keys = {"hidden_loss", "hidden_accuracy", "top_loss", "top_accuracy"}
    train_keys = {"loss", "accuracy"} | layer_keys
    assert set(history.history) == train_keys | {f"val_{k}" for k in train_keys}
    for values in history.history.values():
        assert len(values) == 5
        assert np.all(np.isfinite(values))
    # The training loss is the sum of the layers' local losses and decreases.
    np.testing.assert_allclose(
        history.history["loss"],
        np.add(history.history["hidden_loss"], history.history["top_loss"]),
        rtol=1e-5,
    )
    assert history.history["loss"][-1] < history.history["loss"][0]
    # "accuracy" is the last exit's.
    assert history.history["accuracy"] == history.history["top_accuracy"]

    result = model.evaluate(x_test, y_test, batch_size=len(x_test), return_dict=True, verbose=0)
    best = max(result["hidden_accuracy"], result["top_accuracy"])
    assert best >= 0.95, result
    # evaluate agrees with the history's validation values of the last epoch.
    np.testing.assert_allclose(
        result["top_accuracy"], history.history["val_top_accuracy"][-1], atol=1e-6
    )


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: keras.optimizers.SGD(1.0),
        lambda: keras.optimizers.SGD(0.2, momentum=0.9),
        lambda: keras.optimizers.Adam(1e-2),
    ],
    ids=["sgd", "sgd_momentum", "adam"],
)
def test_optimizers_train_loss_decreases(make_optimizer, spela_mlp, digits):
    x, y = _small_train(digits)
    model = spela_mlp()
    model.compile(optimizer=make_optimizer())
    history = model.fit(x, y, epochs=3, batch_size=50, verbose=0)
    for key in ("loss", "h1_loss", "h2_loss"):
        assert history.history[key][-1] < history.history[key][0], (key, history.history)
    # Chance is 10%.
    assert history.history["h1_accuracy"][-1] > 0.4, history.history
    assert history.history["h2_accuracy"][-1] > 0.4, history.history


# -------------------------------------------------------------- save / load
def test_keras_save_load_round_trip_identical_at_every_exit(tmp_path, spela_mlp, digits):
    x, y = _small_train(digits, 200)
    model = spela_mlp(
        units=(32, 34), local_loss="log_cosine", class_vectors="random", normalize_inputs=True
    )
    model.compile()
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    path = str(tmp_path / "spela.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SpelaModel)
    assert [l.name for l in loaded.exit_layers] == ["h1", "h2"]
    assert loaded.num_classes == NUM_CLASSES
    assert loaded.exit_layers[0].rule == model.exit_layers[0].rule
    _, (x_test, _) = digits
    original = model.predict(x_test, exit="all", verbose=0)
    restored = loaded.predict(x_test, exit="all", verbose=0)
    for name in ("h1", "h2"):
        np.testing.assert_array_equal(restored[name], original[name])
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_keras_save_load_keeps_optimizer_so_training_continues_identically(
    tmp_path, spela_mlp, digits
):
    # Keras' .keras format stores the compiled optimizer and its state:
    # a loaded model should go on training exactly like the original.
    x, y = _small_train(digits, 200)
    model = spela_mlp(units=(32, 34))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    path = str(tmp_path / "spela.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert getattr(loaded, "optimizer", None) is not None, "loaded model is not compiled"
    model.fit(x, y, epochs=1, batch_size=50, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=50, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_model_with_rescaling_flatten_dropout_trains_saves_loads(tmp_path):
    (x, y), (x_test, y_test) = datasets.load_digits(flatten=False, normalize=False)
    x, y = x[:500], y[:500]
    assert x.shape[1:] == (8, 8, 1)
    keras.utils.set_random_seed(0)
    model = SpelaModel(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1.0 / 16),
            keras.layers.Flatten(),
            SpelaDense(64, name="a"),
            keras.layers.Dropout(0.2),
            SpelaDense(34, name="b"),
        ],
        num_classes=NUM_CLASSES,
    )
    assert [l.name for l in model.exit_layers] == ["a", "b"]
    model.compile()
    history = model.fit(x, y, epochs=3, batch_size=50, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["a_accuracy"][-1] > 0.4
    path = str(tmp_path / "pipeline.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    original = model.predict(x_test, exit="all", verbose=0)
    restored = loaded.predict(x_test, exit="all", verbose=0)
    for name in ("a", "b"):
        np.testing.assert_array_equal(restored[name], original[name])
    # Rescaling is really applied: the same scores as feeding scaled, flat data
    # to the SPELA layers directly.
    flat = (x_test / 16.0).reshape(len(x_test), -1)
    a_out = model.get_layer("a")(flat)
    np.testing.assert_allclose(
        original["a"], model.get_layer("a").class_scores(a_out).numpy(), rtol=1e-5, atol=1e-6
    )


# --------------------------------------------------------------- determinism
def _seeded_run(digits, seed):
    x, y = _small_train(digits, 200)
    keras.utils.set_random_seed(seed)
    model = SpelaModel(
        [
            keras.Input((64,)),
            SpelaDense(24, name="d1"),
            keras.layers.Dropout(0.2),
            SpelaDense(34, name="d2"),
        ],
        num_classes=NUM_CLASSES,
    )
    model.compile()
    history = model.fit(x, y, epochs=2, batch_size=50, shuffle=True, verbose=0)
    return [v.numpy() for v in model.weights], history.history


def test_same_seed_gives_identical_runs_and_other_seed_differs(digits):
    weights_a, history_a = _seeded_run(digits, 5)
    weights_b, history_b = _seeded_run(digits, 5)
    weights_c, history_c = _seeded_run(digits, 6)
    assert len(weights_a) == len(weights_b)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    assert history_a == history_b
    assert not all(np.array_equal(a, c) for a, c in zip(weights_a, weights_c))
    assert history_a != history_c


def test_compile_rejects_loss(spela_mlp):
    model = spela_mlp(units=(16, 12))
    with pytest.raises(ValueError, match="loss"):
        model.compile(loss="mse")
    with pytest.raises(ValueError, match="loss"):
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy())


def test_compile_rejects_other_metrics(spela_mlp):
    model = spela_mlp(units=(16, 12))
    with pytest.raises(ValueError, match="metrics"):
        model.compile(metrics=["mse"])
    model.compile(metrics=["accuracy"])  # accepted


def test_num_classes_mismatch_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        SpelaModel(
            [keras.Input((64,)), SpelaDense(16, num_classes=5), SpelaDense(12)],
            num_classes=NUM_CLASSES,
        )


def test_model_without_spela_layer_rejected():
    with pytest.raises(ValueError, match="SPELA layer"):
        SpelaModel([keras.Input((64,)), keras.layers.Dense(4)], num_classes=NUM_CLASSES)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
