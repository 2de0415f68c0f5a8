"""SpelaModel's steps (keras_spela.training.steps): the train step is a manual SGD update
of each layer's closed-form gradient, no gradient crosses layers, the XLA step trains
like the uncompiled one and keeps the batch checks."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spela import datasets
from keras_spela.core import class_vectors as class_vectors_lib
from keras_spela.core import rules

NUM_CLASSES = datasets.DIGITS_NUM_CLASSES


def _small_train(digits, n=500):
    (x, y), _ = digits
    return x[:n], y[:n]


def _snapshot(model):
    return {v.path: v.numpy().copy() for v in model.weights}


def _changed(before, model):
    """Paths of the model's weights that differ from the snapshot."""
    return {v.path for v in model.weights if not np.array_equal(before[v.path], v.numpy())}


def _layer_paths(layer, trainable_only=True):
    variables = layer.trainable_variables if trainable_only else layer.weights
    return {v.path for v in variables}


# ------------------------------------------------------- train_step / manual
@pytest.mark.parametrize("local_loss", ["log_cosine", "softmax_cosine"])
def test_train_step_equals_manual_sgd_update(local_loss, spela_mlp, digits):
    x, y = _small_train(digits, 40)
    model = spela_mlp(units=(24, 12), local_loss=local_loss, normalize_inputs=True)
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


def test_local_gradients_return_only_own_trainable_variables(spela_mlp, digits):
    x, y = _small_train(digits, 30)
    model = spela_mlp(units=(16, 12, 12))
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


def test_changing_layer_two_leaves_layer_one_gradients_identical(spela_mlp, digits):
    x, y = _small_train(digits, 30)
    model = spela_mlp(units=(16, 12))
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


def test_no_gradient_flows_from_layer_two_loss_into_layer_one(spela_mlp, digits):
    x, y = _small_train(digits, 30)
    model = spela_mlp(units=(16, 12))
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


# ----------------------------------------------------------------- bad input
_ERRORS = (ValueError, TypeError, tf.errors.InvalidArgumentError)


def _bad_batches(digits):
    x, y = _small_train(digits, 20)
    x_nan = x.copy()
    x_nan[3, 5] = np.nan
    x_inf = x.copy()
    x_inf[7, 0] = np.inf
    y_big = y.copy()
    y_big[4] = NUM_CLASSES
    y_negative = y.copy()
    y_negative[2] = -1
    x_huge = np.full_like(x, 3e38)  # finite, but beyond the acceptance bound
    return {
        "label_too_large": (x, y_big, "num_classes"),
        "negative_label": (x, y_negative, r"outside \[0, num_classes"),
        "float_labels": (x, y.astype(np.float32), "integer"),
        "one_hot_labels": (x, np.eye(NUM_CLASSES, dtype=np.int32)[y], "[Oo]ne-hot"),
        "nan_input": (x_nan, y, "NaN"),
        "inf_input": (x_inf, y, "infinite"),
        "row_mismatch": (x, y[:-1], "same number of"),
        "overflowing_input": (x_huge, y, r"values beyond 1e\+18"),
    }


def _assert_rejected_without_update(model, x, y, match):
    before = _snapshot(model)
    with pytest.raises(_ERRORS, match=match):
        model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert not _changed(before, model)


@pytest.mark.parametrize("case", ["nan_input", "label_too_large", "overflowing_input"])
def test_jit_compile_true_keeps_the_batch_checks(case, spela_mlp, digits):
    # XLA drops tf.debugging assertions: with jit_compile=True only the local
    # rule and the update are XLA functions, and the checks still stop a bad
    # batch before any update.
    model = spela_mlp(units=(16, 12))
    model.compile(jit_compile=True)
    assert model.xla_local_steps and model.jit_compile is False
    x, y, match = _bad_batches(digits)[case]
    _assert_rejected_without_update(model, x, y, match)


@pytest.mark.slow
def test_jit_compile_true_trains_like_the_uncompiled_step(spela_mlp, digits):
    x, y = _small_train(digits, 64)
    weights = []
    for jit_compile in (False, True):
        model = spela_mlp(units=(16, 12), seed=3)
        model.compile(jit_compile=jit_compile)
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        weights.append([v.numpy() for v in model.trainable_variables])
        assert history.history["loss"][-1] < history.history["loss"][0]
    for eager, compiled in zip(*weights):
        np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_jit_compile_true_layerwise_retraces_for_each_layer(spela_mlp, digits):
    x, y = _small_train(digits, 64)
    model = spela_mlp(units=(16, 12), seed=3)
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


def test_jit_compile_true_under_a_one_replica_strategy_fits(spela_mlp, digits):
    # The optimizer's cross-replica merge cannot be XLA-compiled: under any
    # tf.distribute strategy the step stays uncompiled.
    x, y = _small_train(digits, 64)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = spela_mlp(units=(16, 12), seed=3)
        model.compile(jit_compile=True)
    before = model.exit_layers[0].kernel.numpy()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not np.array_equal(before, model.exit_layers[0].kernel.numpy())


def test_gradient_overflow_rejected_without_update(spela_mlp, digits):
    # Finite losses, but gradients whose squares overflow float32 (Adam's
    # second moment would become inf, then NaN on the next batch).
    x, y = _small_train(digits, 16)
    model = spela_mlp(units=(16, 12), local_loss="euclidean")
    model.compile()
    _assert_rejected_without_update(
        model, x * 1e10, y, "layer .* is not finite, or its gradients could exceed"
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)


def test_sample_weight_column_equals_flat_sample_weight(spela_mlp, digits):
    x, y = _small_train(digits, 32)
    weights = np.linspace(0.5, 1.5, 32).astype(np.float32)
    results = []
    for sample_weight in (weights, weights[:, None]):
        model = spela_mlp(units=(16, 12), seed=3)
        model.compile()
        model.fit(
            x, y, sample_weight=sample_weight, batch_size=16, epochs=1, shuffle=False, verbose=0
        )
        results.append(model.exit_layers[0].kernel.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_jit_compile_other_values_rejected(spela_mlp):
    with pytest.raises(ValueError, match="jit_compile"):
        spela_mlp(units=(16, 12)).compile(jit_compile="yes")


def test_all_zero_input_row_with_normalize_inputs_trains_without_nan(spela_mlp, digits):
    x, y = _small_train(digits, 100)
    x = x.copy()
    x[::7] = 0.0
    model = spela_mlp(units=(16, 34), normalize_inputs=True)
    model.compile()
    history = model.fit(x, y, epochs=2, batch_size=25, verbose=0)
    for values in history.history.values():
        assert np.all(np.isfinite(values))
    for v in model.weights:
        assert np.all(np.isfinite(v.numpy())), v.path
    scores = model.predict(x, exit="all", verbose=0)
    for layer_scores in scores.values():
        assert np.all(np.isfinite(layer_scores))


def test_ordered_steps_train_to_the_same_weights(tmp_path, spela_mlp, digits):
    """compile(ordered_steps=True) only orders the ops (memory): the same
    weights as the default step, and it survives a .keras round trip."""
    x, y = _small_train(digits, 200)
    weights = []
    for ordered in (False, True):
        model = spela_mlp(units=(32, 16, 34))
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
