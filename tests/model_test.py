"""Tests for keras_spela.training.model.SpelaModel on the shipped digits data."""

import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spela import datasets
from keras_spela.core import class_vectors as class_vectors_lib
from keras_spela.core import rules
from keras_spela.layers import SpelaDense
from keras_spela.training.model import SpelaModel

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES


@functools.lru_cache(maxsize=None)
def _digits(flatten=True, normalize=True):
    return datasets.load_digits(flatten=flatten, normalize=normalize)


def _small_train(n=500):
    (x, y), _ = _digits()
    return x[:n], y[:n]


def _model(units=(64, 34), seed=0, input_dim=64, train_layers="all", **layer_kwargs):
    """A small SPELA MLP; layers are named h1, h2, ..."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    layers = [keras.Input((input_dim,))]
    layers += [
        SpelaDense(u, name=f"h{i + 1}", **layer_kwargs) for i, u in enumerate(units)
    ]
    return SpelaModel(layers, num_classes=NUM_CLASSES, train_layers=train_layers)


def _snapshot(model):
    return {v.path: v.numpy().copy() for v in model.weights}


def _changed(before, model):
    """Paths of the model's weights that differ from the snapshot."""
    return {
        v.path for v in model.weights if not np.array_equal(before[v.path], v.numpy())
    }


def _layer_paths(layer, trainable_only=True):
    variables = layer.trainable_variables if trainable_only else layer.weights
    return {v.path for v in variables}


# ------------------------------------------------------------------ accuracy
def test_fit_default_compile_reaches_95_percent_in_5_epochs():
    (x_train, y_train), (x_test, y_test) = _digits()
    keras.utils.set_random_seed(1)
    model = SpelaModel(
        [keras.Input((64,)), SpelaDense(256, name="hidden"), SpelaDense(34, name="top")],
        num_classes=NUM_CLASSES,
    )
    model.compile()
    history = model.fit(
        x_train, y_train, epochs=5, batch_size=50,
        validation_data=(x_test, y_test), verbose=0,
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
def test_optimizers_train_loss_decreases(make_optimizer):
    x, y = _small_train()
    model = _model()
    model.compile(optimizer=make_optimizer())
    history = model.fit(x, y, epochs=3, batch_size=50, verbose=0)
    for key in ("loss", "h1_loss", "h2_loss"):
        assert history.history[key][-1] < history.history[key][0], (key, history.history)
    # Chance is 10%.
    assert history.history["h1_accuracy"][-1] > 0.4, history.history
    assert history.history["h2_accuracy"][-1] > 0.4, history.history


# ------------------------------------------------------- train_step / manual
@pytest.mark.parametrize("local_loss", ["log_cosine", "softmax_cosine"])
def test_train_step_equals_manual_sgd_update(local_loss):
    x, y = _small_train(40)
    model = _model(units=(24, 12), local_loss=local_loss, normalize_inputs=True)
    learning_rate = 0.7
    model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    h1, h2 = model.exit_layers
    k1, b1 = h1.kernel.numpy(), h1.bias.numpy()
    k2, b2 = h2.kernel.numpy(), h2.bias.numpy()
    targets = rules.one_hot(tf.constant(y), NUM_CLASSES)

    step1 = h1.local_error(
        tf.constant(x), targets, weights={"kernel": tf.constant(k1), "bias": tf.constant(b1)}
    )
    # Layer 2 sees layer 1's PRE-update outputs.
    step2 = h2.local_error(
        step1.outputs, targets, weights={"kernel": tf.constant(k2), "bias": tf.constant(b2)}
    )
    grads1, grads2 = h1.parameter_gradients(step1), h2.parameter_gradients(step2)
    logs = model.train_on_batch(x, y, return_dict=True)

    for variable, old, grad in [
        (h1.kernel, k1, grads1[0]),
        (h1.bias, b1, grads1[1]),
        (h2.kernel, k2, grads2[0]),
        (h2.bias, b2, grads2[1]),
    ]:
        assert np.max(np.abs(grad.numpy())) > 0
        np.testing.assert_allclose(
            variable.numpy(), old - learning_rate * grad.numpy(), rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(logs["h1_loss"], step1.loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(logs["h2_loss"], step2.loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], step1.loss.numpy() + step2.loss.numpy(), rtol=1e-5)
    for name, step in (("h1", step1), ("h2", step2)):
        accuracy = np.mean(np.argmax(step.scores.numpy(), axis=1) == y)
        np.testing.assert_allclose(logs[f"{name}_accuracy"], accuracy, atol=1e-6)


# ------------------------------------------------------------------ locality
def _local_gradients(model, x, y, train_layers=None):
    """`(gradients, variables, losses, scores)` of one sweep, through the
    public methods that `train_step` calls."""
    errors, scores = model.compute_local_errors(x, y, train_layers=train_layers)
    gradients, variables, losses = model.compute_local_gradients(errors)
    return gradients, variables, losses, scores


def test_local_gradients_return_only_own_trainable_variables():
    x, y = _small_train(30)
    model = _model(units=(16, 12, 12))
    before = _snapshot(model)
    gradients, variables, losses, scores = _local_gradients(model, x, y)
    assert not _changed(before, model)
    expected = [v for layer in model.exit_layers for v in layer.trainable_variables]
    assert [v.path for v in variables] == [v.path for v in expected]
    assert all(v.trainable for v in variables)
    assert not any("class_vectors" in v.path for v in variables)
    for gradient, variable in zip(gradients, variables):
        assert gradient.shape == variable.shape
    assert set(losses) == set(scores) == {"h1", "h2", "h3"}
    for name, layer_scores in scores.items():
        assert layer_scores.shape == (30, NUM_CLASSES)

    # With a subset of learning layers, only theirs are returned.
    gradients, variables, losses, scores = _local_gradients(model, x, y, train_layers=["h2"])
    assert {v.path for v in variables} == _layer_paths(model.get_layer("h2"))
    assert set(losses) == {"h2"}
    assert set(scores) == {"h1", "h2", "h3"}


def test_changing_layer_two_leaves_layer_one_gradients_identical():
    x, y = _small_train(30)
    model = _model(units=(16, 12))
    h1, h2 = model.exit_layers
    grads_before, _, losses_before, _ = _local_gradients(model, x, y)

    rng = np.random.default_rng(0)
    h2.kernel.assign(rng.standard_normal(h2.kernel.shape).astype(np.float32))
    h2.class_vectors.assign(class_vectors_lib.random_vectors(NUM_CLASSES, 12, seed=99))
    grads_after, _, losses_after, _ = _local_gradients(model, x, y)

    n1 = len(h1.trainable_variables)
    for before, after in zip(grads_before[:n1], grads_after[:n1]):
        np.testing.assert_array_equal(before.numpy(), after.numpy())
    assert float(losses_before["h1"]) == float(losses_after["h1"])
    # Layer 2's own gradient did change (the edit had an effect).
    assert not np.allclose(grads_before[n1].numpy(), grads_after[n1].numpy())


def test_no_gradient_flows_from_layer_two_loss_into_layer_one():
    x, y = _small_train(30)
    model = _model(units=(16, 12))
    h1, h2 = model.exit_layers
    with tf.GradientTape(persistent=True) as tape:
        gradients, _, losses, _ = _local_gradients(model, x, y)
    assert tape.gradient(losses["h2"], h1.kernel) is None
    assert tape.gradient(losses["h2"], h1.bias) is None
    # Positive control: each loss does reach its own layer, and autodiff of the
    # returned loss agrees with the closed-form gradient.
    own = tape.gradient(losses["h1"], h1.kernel)
    assert own is not None
    np.testing.assert_allclose(own.numpy(), gradients[0].numpy(), rtol=1e-4, atol=1e-6)
    own2 = tape.gradient(losses["h2"], h2.kernel)
    np.testing.assert_allclose(own2.numpy(), gradients[2].numpy(), rtol=1e-4, atol=1e-6)
    del tape


# --------------------------------------------------------- evaluate / predict
@functools.lru_cache(maxsize=1)
def _trained_model():
    x, y = _small_train()
    model = _model(units=(64, 34, 34), seed=3)
    model.compile()
    model.fit(x, y, epochs=4, batch_size=50, verbose=0)
    return model


def test_evaluate_reports_accuracy_and_loss_for_every_exit():
    model = _trained_model()
    _, (x, y) = _digits()
    result = model.evaluate(x, y, batch_size=len(x), return_dict=True, verbose=0)
    assert set(result) == {"loss", "accuracy"} | {
        f"{n}_{m}" for n in ("h1", "h2", "h3") for m in ("loss", "accuracy")
    }
    targets = rules.one_hot(tf.constant(y), NUM_CLASSES)
    h = tf.constant(x)
    total = 0.0
    for k, layer in enumerate(model.exit_layers):
        scores = model.predict(x, exit=k, verbose=0)
        accuracy = np.mean(np.argmax(scores, axis=1) == y)
        np.testing.assert_allclose(result[f"{layer.name}_accuracy"], accuracy, atol=1e-6)
        step = layer.local_error(h, targets)
        np.testing.assert_allclose(result[f"{layer.name}_loss"], step.loss.numpy(), rtol=1e-5)
        total += float(step.loss)
        h = step.outputs
    np.testing.assert_allclose(result["loss"], total, rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], result["h3_accuracy"])
    # Trained a little: every exit is above chance (10%).
    for name in ("h1", "h2", "h3"):
        assert result[f"{name}_accuracy"] > 0.2, result


def test_predict_exits_shapes_and_consistency():
    model = _trained_model()
    _, (x, _) = _digits()
    x = x[:50]
    reference = {k: v.numpy() for k, v in model.exit_scores(tf.constant(x)).items()}
    assert list(reference) == ["h1", "h2", "h3"]

    last = model.predict(x, verbose=0)
    assert last.shape == (50, NUM_CLASSES)
    np.testing.assert_allclose(last, reference["h3"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(x, exit=-1, verbose=0), last)
    np.testing.assert_array_equal(model.predict(x, exit=2, verbose=0), last)
    np.testing.assert_array_equal(model.predict(x, exit="h3", verbose=0), last)

    first = model.predict(x, exit=0, verbose=0)
    assert first.shape == (50, NUM_CLASSES)
    np.testing.assert_allclose(first, reference["h1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(x, exit="h1", verbose=0), first)
    np.testing.assert_array_equal(model.predict(x, exit=-3, verbose=0), first)
    assert not np.allclose(first, last)

    everything = model.predict(x, exit="all", batch_size=16, verbose=0)
    assert set(everything) == {"h1", "h2", "h3"}
    for name, scores in everything.items():
        assert scores.shape == (50, NUM_CLASSES)
        np.testing.assert_allclose(scores, reference[name], rtol=1e-5, atol=1e-6)
        assert np.all(np.abs(scores) <= 1 + 1e-5)
    # The default exit is restored after a predict(exit=...), and choosing
    # an exit reuses the traced predict function.
    traced = model.predict_function
    np.testing.assert_array_equal(model.predict(x, verbose=0), last)
    np.testing.assert_array_equal(model.predict(x, exit=0, verbose=0), first)
    assert model.predict_function is traced
    # One batch of 50 rows, not predict's batches of 32 and 18: oneDNN's
    # products may round differently.
    np.testing.assert_allclose(model.predict_on_batch(x), last, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.predict_on_batch(x, exit="all")["h1"], first, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(model(x).numpy(), last, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("exit", [3, -4, "nope", 1.0])
def test_predict_unknown_exit_raises(exit):
    model = _trained_model()
    with pytest.raises(ValueError, match="exit"):
        model.predict(np.zeros((2, 64), np.float32), exit=exit, verbose=0)


def test_truncated_predicts_like_the_exit():
    model = _trained_model()
    _, (x, _) = _digits()
    for exit, name in [(0, "h1"), ("h2", "h2")]:
        small = model.truncated(exit)
        assert [layer.name for layer in small.exit_layers] == (
            ["h1"] if name == "h1" else ["h1", "h2"]
        )
        np.testing.assert_allclose(
            small.predict(x, verbose=0), model.predict(x, exit=exit, verbose=0),
            rtol=1e-6, atol=1e-7,
        )
        # The weights are shared, not copied.
        assert small.exit_layers[0].kernel is model.exit_layers[0].kernel


def test_early_exit_thresholds():
    model = _trained_model()
    _, (x, y) = _digits()
    scores = model.predict(x, exit="all", verbose=0)
    stacked = np.stack([scores[n] for n in ("h1", "h2", "h3")])

    predictions, exits = model.predict_early_exit(x, threshold=0.0)
    np.testing.assert_array_equal(exits, 0)
    np.testing.assert_array_equal(predictions, np.argmax(stacked[0], axis=1))
    result = model.evaluate_early_exit(x, y, threshold=0.0)
    assert result["mean_depth"] == 1.0 and result["mean_exit"] == 0.0
    assert result["exit_fractions"] == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(result["accuracy"], np.mean(predictions == y))

    # Cosines are in [-1, 1], so a margin can never exceed 2.
    predictions, exits = model.predict_early_exit(x, threshold=2.5)
    np.testing.assert_array_equal(exits, 2)
    np.testing.assert_array_equal(predictions, np.argmax(stacked[2], axis=1))
    result = model.evaluate_early_exit(x, y, threshold=2.5)
    assert result["mean_depth"] == 3.0
    assert result["exit_fractions"] == [0.0, 0.0, 1.0]
    np.testing.assert_allclose(result["accuracy"], np.mean(predictions == y))

    # An intermediate threshold: the first exit whose top-2 margin passes.
    threshold = float(np.median(np.diff(np.sort(stacked[0], axis=1)[:, -2:], axis=1)))
    predictions, exits = model.predict_early_exit(x, threshold=threshold, batch_size=64)
    for i in range(len(x)):
        margins = [np.sort(stacked[k, i])[-1] - np.sort(stacked[k, i])[-2] for k in range(3)]
        expected_exit = next((k for k in range(2) if margins[k] >= threshold), 2)
        assert exits[i] == expected_exit
        assert predictions[i] == np.argmax(stacked[expected_exit, i])
    result = model.evaluate_early_exit(x, y, threshold=threshold)
    np.testing.assert_allclose(result["accuracy"], np.mean(predictions == y))
    np.testing.assert_allclose(result["mean_depth"], np.mean(exits) + 1)
    np.testing.assert_allclose(sum(result["exit_fractions"]), 1.0)
    assert 0 < result["exit_fractions"][0] < 1


def test_metric_slots_read_reset_and_refuse_updates_one_by_one():
    """model.metrics (every mean held in ExitMetrics' two variables) as Keras' API
    uses them: names in order, result() per metric, reset_state() of one metric."""
    x, y = _small_train(100)
    model = _model()
    model.compile()
    logs = model.evaluate(x, y, batch_size=25, verbose=0, return_dict=True)
    names = [metric.name for metric in model.metrics]
    assert names == ["loss", "accuracy", "h1_loss", "h1_accuracy", "h2_loss", "h2_accuracy"]
    for metric in model.metrics:
        assert float(metric.result()) == pytest.approx(logs[metric.name], rel=1e-6)
    assert logs["accuracy"] == logs["h2_accuracy"] and logs["loss"] > logs["h1_loss"] > 0
    model.metrics[2].reset_state()
    assert float(model.metrics[2].result()) == 0.0
    for metric in model.metrics[:2] + model.metrics[3:]:
        assert float(metric.result()) == pytest.approx(logs[metric.name], rel=1e-6)
    model.reset_metrics()
    assert all(float(metric.result()) == 0.0 for metric in model.metrics)
    with pytest.raises(NotImplementedError, match="updated by SpelaModel's steps"):
        model.metrics[0].update_state(1.0)


# ------------------------------------------------------ layer-wise / subsets
class _PhaseSnapshots(keras.callbacks.Callback):
    """Records every weight at the start and end of each fit() call."""

    def __init__(self):
        super().__init__()
        self.phases = []

    def on_train_begin(self, logs=None):
        self.phases.append([{v.path: v.numpy().copy() for v in self.model.weights}])

    def on_train_end(self, logs=None):
        self.phases[-1].append({v.path: v.numpy().copy() for v in self.model.weights})


@pytest.mark.parametrize(
    "make_optimizer", [lambda: None, lambda: keras.optimizers.SGD(1.0)], ids=["default", "sgd"]
)
def test_fit_layerwise_trains_one_layer_at_a_time(make_optimizer):
    x, y = _small_train(200)
    model = _model(units=(32, 34, 34))
    model.compile(optimizer=make_optimizer())
    snapshots = _PhaseSnapshots()
    histories = model.fit_layerwise(
        x, y, epochs=2, batch_size=50, verbose=0, callbacks=[snapshots]
    )
    assert len(histories) == 3
    assert all(isinstance(h, keras.callbacks.History) for h in histories)
    assert len(snapshots.phases) == 3
    for k, (layer, history, (start, end)) in enumerate(
        zip(model.exit_layers, histories, snapshots.phases)
    ):
        changed = {p for p in start if not np.array_equal(start[p], end[p])}
        assert changed == _layer_paths(layer), (k, changed)
        assert len(history.history[f"{layer.name}_loss"]) == 2
        # Only the learning layer reports a loss; every exit reports accuracy.
        others = [l.name for l in model.exit_layers if l is not layer]
        assert not any(f"{name}_loss" in history.history for name in others)
        assert all(f"{name}_accuracy" in history.history for name in others)
    # Nothing changes between phases, and the model's setting is restored.
    for (_, end), (start, _) in zip(snapshots.phases, snapshots.phases[1:]):
        for path in end:
            np.testing.assert_array_equal(end[path], start[path])
    assert model.train_layers == ["h1", "h2", "h3"]


@pytest.mark.parametrize("name", ["h1", "h2"])
def test_train_layers_only_updates_named_layer(name):
    x, y = _small_train(200)
    model = _model(units=(32, 34), train_layers=[name])
    model.compile()
    before = _snapshot(model)
    history = model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    assert _changed(before, model) == _layer_paths(model.get_layer(name))
    assert np.isfinite(history.history[f"{name}_loss"][0])
    assert history.history[f"{name}_loss"][0] > 0


# -------------------------------------------------------------- save / load
def test_keras_save_load_round_trip_identical_at_every_exit(tmp_path):
    x, y = _small_train(200)
    model = _model(units=(32, 34), local_loss="log_cosine", class_vectors="random",
                   normalize_inputs=True)
    model.compile()
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    path = str(tmp_path / "spela.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SpelaModel)
    assert [l.name for l in loaded.exit_layers] == ["h1", "h2"]
    assert loaded.num_classes == NUM_CLASSES
    assert loaded.exit_layers[0].rule == model.exit_layers[0].rule
    _, (x_test, _) = _digits()
    original = model.predict(x_test, exit="all", verbose=0)
    restored = loaded.predict(x_test, exit="all", verbose=0)
    for name in ("h1", "h2"):
        np.testing.assert_array_equal(restored[name], original[name])
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_keras_save_load_keeps_optimizer_so_training_continues_identically(tmp_path):
    # Keras' .keras format stores the compiled optimizer and its state:
    # a loaded model should go on training exactly like the original.
    x, y = _small_train(200)
    model = _model(units=(32, 34))
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
    (x, y), (x_test, y_test) = _digits(flatten=False, normalize=False)
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


# ------------------------------------------------------- construction forms
def test_construct_from_built_sequential_chain():
    x, y = _small_train(200)
    keras.utils.set_random_seed(0)
    # Sequential with an Input is built at once: its layers need num_classes.
    sequential = keras.Sequential(
        [
            keras.Input((64,)),
            SpelaDense(32, num_classes=NUM_CLASSES, name="s1"),
            keras.layers.Dropout(0.1),
            SpelaDense(34, num_classes=NUM_CLASSES, name="s2"),
        ]
    )
    model = SpelaModel(sequential, num_classes=NUM_CLASSES)
    assert model.built
    assert [l.name for l in model.exit_layers] == ["s1", "s2"]
    assert model.exit_layers[0] is sequential.get_layer("s1")
    np.testing.assert_allclose(
        model.predict(x[:5], verbose=0),
        model.exit_layers[-1].class_scores(sequential(x[:5])).numpy(),
        rtol=1e-5, atol=1e-6,
    )
    model.compile()
    history = model.fit(x, y, epochs=2, batch_size=50, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_construct_from_unbuilt_sequential_chain_fits():
    x, y = _small_train(200)
    keras.utils.set_random_seed(0)
    # No Input: num_classes and the input width come from SpelaModel and fit.
    sequential = keras.Sequential(
        [SpelaDense(32, name="s1"), keras.layers.Dropout(0.1), SpelaDense(34, name="s2")]
    )
    model = SpelaModel(sequential, num_classes=NUM_CLASSES)
    assert [l.name for l in model.exit_layers] == ["s1", "s2"]
    assert all(l.num_classes == NUM_CLASSES for l in model.exit_layers)
    model.compile()
    history = model.fit(x, y, epochs=2, batch_size=50, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.predict(x[:5], verbose=0).shape == (5, NUM_CLASSES)


def test_layer_list_without_input_fits():
    # The docstring: "a list of layers, optionally starting with keras.Input".
    x, y = _small_train(200)
    keras.utils.set_random_seed(0)
    model = SpelaModel([SpelaDense(32, name="l1"), SpelaDense(34, name="l2")], NUM_CLASSES)
    model.compile()
    history = model.fit(x, y, epochs=2, batch_size=50, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.exit_layers[0].kernel.shape == (64, 32)


def test_construct_from_functional_chain():
    x, y = _small_train(200)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    hidden = SpelaDense(32, num_classes=NUM_CLASSES, name="f1")(inputs)
    hidden = keras.layers.Dropout(0.1)(hidden)
    outputs = SpelaDense(34, num_classes=NUM_CLASSES, name="f2")(hidden)
    functional = keras.Model(inputs, outputs)
    model = SpelaModel(functional, num_classes=NUM_CLASSES)
    assert [l.name for l in model.exit_layers] == ["f1", "f2"]
    assert model.exit_layers[0] is functional.get_layer("f1")
    np.testing.assert_allclose(
        model.predict(x[:5], verbose=0),
        model.exit_layers[-1].class_scores(functional(x[:5])).numpy(),
        rtol=1e-5, atol=1e-6,
    )
    model.compile()
    before = _snapshot(model)
    history = model.fit(x, y, epochs=2, batch_size=50, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The functional model's own layers were trained (shared weights).
    assert _changed(before, model) == _layer_paths(functional.get_layer("f1")) | _layer_paths(
        functional.get_layer("f2")
    )


# --------------------------------------------------------------- determinism
def _seeded_run(seed):
    x, y = _small_train(200)
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


def test_same_seed_gives_identical_runs_and_other_seed_differs():
    weights_a, history_a = _seeded_run(5)
    weights_b, history_b = _seeded_run(5)
    weights_c, history_c = _seeded_run(6)
    assert len(weights_a) == len(weights_b)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    assert history_a == history_b
    assert not all(np.array_equal(a, c) for a, c in zip(weights_a, weights_c))
    assert history_a != history_c


# ----------------------------------------------------------------- bad input
_ERRORS = (ValueError, TypeError, tf.errors.InvalidArgumentError)


def _bad_batches():
    x, y = _small_train(20)
    x_nan = x.copy()
    x_nan[3, 5] = np.nan
    x_inf = x.copy()
    x_inf[7, 0] = np.inf
    y_big = y.copy()
    y_big[4] = NUM_CLASSES
    y_negative = y.copy()
    y_negative[2] = -1
    x_huge = np.full_like(x, 3e38)  # finite, but overflows inside the layer
    return {
        "label_too_large": (x, y_big, "num_classes"),
        "negative_label": (x, y_negative, r"outside \[0, num_classes"),
        "float_labels": (x, y.astype(np.float32), "integer"),
        "one_hot_labels": (x, np.eye(NUM_CLASSES, dtype=np.int32)[y], "[Oo]ne-hot"),
        "nan_input": (x_nan, y, "NaN"),
        "inf_input": (x_inf, y, "infinite"),
        "row_mismatch": (x, y[:-1], "same number of"),
        "overflowing_input": (x_huge, y, "local loss of layer .* is not finite, or"),
    }


BAD_CASES = list(_bad_batches())


def _assert_rejected_without_update(model, x, y, match):
    before = _snapshot(model)
    with pytest.raises(_ERRORS, match=match):
        model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert not _changed(before, model)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_rejected_with_clear_error_and_no_update(case):
    x, y, match = _bad_batches()[case]
    model = _model(units=(16, 12))
    model.compile()
    _assert_rejected_without_update(model, x, y, match)


@pytest.mark.parametrize("case", ["nan_input", "label_too_large", "overflowing_input"])
def test_jit_compile_true_keeps_the_batch_checks(case):
    # XLA drops tf.debugging assertions: with jit_compile=True only the local
    # rule and the update are XLA functions, and the checks still stop a bad
    # batch before any update.
    model = _model(units=(16, 12))
    model.compile(jit_compile=True)
    assert model.xla_local_steps and model.jit_compile is False
    x, y, match = _bad_batches()[case]
    _assert_rejected_without_update(model, x, y, match)


def test_jit_compile_true_trains_like_the_uncompiled_step():
    x, y = _small_train(64)
    weights = []
    for jit_compile in (False, True):
        model = _model(units=(16, 12), seed=3)
        model.compile(jit_compile=jit_compile)
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        weights.append([v.numpy() for v in model.trainable_variables])
        assert history.history["loss"][-1] < history.history["loss"][0]
    for eager, compiled in zip(*weights):
        np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)


def test_jit_compile_true_layerwise_retraces_for_each_layer():
    x, y = _small_train(64)
    model = _model(units=(16, 12), seed=3)
    model.compile(jit_compile=True)
    first, second = model.exit_layers
    second_before = [v.numpy() for v in second.trainable_variables]
    model.train_layers = [first.name]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    # Only the first layer learned, although the step is compiled.
    for before, variable in zip(second_before, second.trainable_variables):
        np.testing.assert_array_equal(before, variable.numpy())
    model.train_layers = [second.name]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not np.array_equal(second_before[0], second.kernel.numpy())


def test_jit_compile_true_under_a_one_replica_strategy_fits():
    # The optimizer's cross-replica merge cannot be XLA-compiled: under any
    # tf.distribute strategy the step stays uncompiled.
    x, y = _small_train(64)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _model(units=(16, 12), seed=3)
        model.compile(jit_compile=True)
    before = model.exit_layers[0].kernel.numpy()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not np.array_equal(before, model.exit_layers[0].kernel.numpy())


def test_gradient_overflow_rejected_without_update():
    # Finite losses, but gradients whose squares overflow float32 (Adam's
    # second moment would become inf, then NaN on the next batch).
    x, y = _small_train(16)
    model = _model(units=(16, 12), local_loss="euclidean")
    model.compile()
    _assert_rejected_without_update(model, x * 1e10, y, "layer .* is not finite, or its gradients could exceed")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)


def test_setting_train_layers_in_a_callback_takes_effect_in_fit():
    x, y = _small_train(64)
    model = _model(units=(16, 12), seed=3)
    model.compile()
    first, second = model.exit_layers

    class SwitchAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.first_kernel = first.kernel.numpy()
                model.train_layers = [second.name]

    switch = SwitchAfterFirstEpoch()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[switch])
    # The second epoch left the first layer alone.
    np.testing.assert_array_equal(switch.first_kernel, first.kernel.numpy())


def test_sample_weight_column_equals_flat_sample_weight():
    x, y = _small_train(32)
    weights = np.linspace(0.5, 1.5, 32).astype(np.float32)
    results = []
    for sample_weight in (weights, weights[:, None]):
        model = _model(units=(16, 12), seed=3)
        model.compile()
        model.fit(x, y, sample_weight=sample_weight, batch_size=16, epochs=1,
                  shuffle=False, verbose=0)
        results.append(model.exit_layers[0].kernel.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_jit_compile_other_values_rejected():
    with pytest.raises(ValueError, match="jit_compile"):
        _model(units=(16, 12)).compile(jit_compile="yes")


@pytest.mark.parametrize("case", ["label_too_large", "negative_label", "nan_input"])
def test_bad_input_rejected_by_evaluate(case):
    x, y, match = _bad_batches()[case]
    model = _model(units=(16, 12))
    model.compile()
    with pytest.raises(_ERRORS, match=match):
        model.evaluate(x, y, batch_size=len(x), verbose=0)


def test_row_mismatch_in_dataset_rejected_naming_rows():
    # A dataset batch bypasses Keras' own cardinality check; SpelaModel's
    # check must name the problem.
    x, y = _small_train(20)
    model = _model(units=(16, 12))
    model.compile()
    before = _snapshot(model)
    dataset = tf.data.Dataset.from_tensors((x, y[:-1]))
    with pytest.raises(_ERRORS, match="same number of rows"):
        model.fit(dataset, epochs=1, verbose=0)
    assert not _changed(before, model)


def test_compile_rejects_loss():
    model = _model(units=(16, 12))
    with pytest.raises(ValueError, match="loss"):
        model.compile(loss="mse")
    with pytest.raises(ValueError, match="loss"):
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy())


def test_compile_rejects_other_metrics():
    model = _model(units=(16, 12))
    with pytest.raises(ValueError, match="metrics"):
        model.compile(metrics=["mse"])
    model.compile(metrics=["accuracy"])  # accepted


def test_unknown_train_layers_rejected():
    with pytest.raises(ValueError, match="nope"):
        _model(units=(16, 12), train_layers=["h1", "nope"])
    with pytest.raises(ValueError, match="train_layers"):
        _model(units=(16, 12), train_layers="nope")
    with pytest.raises(ValueError, match="train_layers"):
        _model(units=(16, 12), train_layers=True)
    with pytest.raises(ValueError, match="train_layers"):
        _model(units=(16, 12), train_layers=[])
    with pytest.raises(ValueError, match="distinct"):
        _model(units=(16, 12), train_layers=["h1", "h1"])
    # The same forms as the exporters: one name, the last k layers.
    assert _model(units=(16, 12), train_layers="h1").train_layers == ["h1"]
    assert _model(units=(16, 12), train_layers=1).train_layers == ["h2"]


def test_functional_chain_with_layers_also_used_elsewhere_accepted():
    pretrained_input = keras.Input((64,))
    shared = keras.layers.Dense(32, name="shared")
    keras.Model(pretrained_input, shared(pretrained_input))  # another model
    inputs = keras.Input((64,))
    outputs = SpelaDense(16, num_classes=NUM_CLASSES)(shared(inputs))
    model = SpelaModel(keras.Model(inputs, outputs), num_classes=NUM_CLASSES)
    assert [layer.name for layer in model.layers][0] == "shared"


@pytest.mark.parametrize("kind", ["branch_and_merge", "skip_connection", "two_inputs"])
def test_functional_model_that_is_not_a_chain_rejected(kind):
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(32)(inputs)
    extra_inputs = []
    if kind == "branch_and_merge":
        hidden = keras.layers.Add()([hidden, keras.layers.Dense(32)(inputs)])
    elif kind == "skip_connection":
        hidden = keras.layers.Concatenate()([hidden, inputs])
    else:
        extra_inputs = [keras.Input((4,))]
        hidden = keras.layers.Concatenate()([hidden, extra_inputs[0]])
    outputs = SpelaDense(16, num_classes=NUM_CLASSES)(hidden)
    chain = keras.Model([inputs] + extra_inputs, outputs)
    with pytest.raises(ValueError, match="chain"):
        SpelaModel(chain, num_classes=NUM_CLASSES)


def test_num_classes_mismatch_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        SpelaModel(
            [keras.Input((64,)), SpelaDense(16, num_classes=5), SpelaDense(12)],
            num_classes=NUM_CLASSES,
        )


def test_model_without_spela_layer_rejected():
    with pytest.raises(ValueError, match="SPELA layer"):
        SpelaModel([keras.Input((64,)), keras.layers.Dense(4)], num_classes=NUM_CLASSES)


def test_all_zero_input_row_with_normalize_inputs_trains_without_nan():
    x, y = _small_train(100)
    x = x.copy()
    x[::7] = 0.0
    model = _model(units=(16, 34), normalize_inputs=True)
    model.compile()
    history = model.fit(x, y, epochs=2, batch_size=25, verbose=0)
    for values in history.history.values():
        assert np.all(np.isfinite(values))
    for v in model.weights:
        assert np.all(np.isfinite(v.numpy())), v.path
    scores = model.predict(x, exit="all", verbose=0)
    for layer_scores in scores.values():
        assert np.all(np.isfinite(layer_scores))



def test_ordered_steps_train_to_the_same_weights(tmp_path):
    """compile(ordered_steps=True) only orders the ops (memory): the same
    weights as the default step, and it survives a .keras round trip."""
    x, y = _small_train(200)
    weights = []
    for ordered in (False, True):
        model = _model(units=(32, 16, 34))
        model.compile(keras.optimizers.SGD(0.5), ordered_steps=ordered)
        model.fit(x, y, batch_size=50, epochs=2, shuffle=False, verbose=0)
        weights.append([w.numpy() for w in model.trainable_weights])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    path = str(tmp_path / "ordered.keras")
    model.save(path)
    assert keras.saving.load_model(path).ordered_steps is True
    with pytest.raises(ValueError, match="ordered_steps must be True or False"):
        model.compile(ordered_steps="yes")

if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
