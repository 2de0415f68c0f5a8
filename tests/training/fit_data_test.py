"""SpelaModel.fit's array input as one repeating pipeline (keras_spela.training.fit_data): the
same rows, batches, validation split and sample weights as Keras' own, and the same
weights at the end of fit as a hand-run loop over those batches."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela.training import fit_data


def _epochs(arguments, epochs):
    """The batches of `epochs` epochs of the pipeline, as lists of numpy tuples."""
    iterator = iter(arguments["x"])
    steps = arguments["steps_per_epoch"]
    return [[tuple(t.numpy() for t in next(iterator)) for _ in range(steps)] for _ in range(epochs)]


def _arrays(rows, features=3):
    x = np.arange(rows * features, dtype=np.float32).reshape(rows, features)
    return x, np.arange(rows, dtype=np.int32) % 4


@pytest.mark.parametrize("rows,batch_size", [(100, None), (101, 7), (5, 50)])
def test_batches_in_order_match_keras(rows, batch_size):
    x, y = _arrays(rows)
    arguments = fit_data.fit_arguments({"x": x, "y": y, "batch_size": batch_size, "shuffle": False})
    size = batch_size or 32
    assert arguments["steps_per_epoch"] == -(-rows // size)
    assert arguments["y"] is None and arguments["batch_size"] is None
    for epoch in _epochs(arguments, 2):
        assert [len(b[0]) for b in epoch] == [min(size, rows - i) for i in range(0, rows, size)]
        np.testing.assert_array_equal(np.concatenate([b[0] for b in epoch]), x)
        np.testing.assert_array_equal(np.concatenate([b[1] for b in epoch]), y)


def test_shuffle_is_a_new_permutation_every_epoch_with_rows_kept_together():
    x, y = _arrays(64)
    tf.random.set_seed(0)
    arguments = fit_data.fit_arguments({"x": x, "y": y, "batch_size": 10})
    orders = []
    for epoch in _epochs(arguments, 3):
        features = np.concatenate([b[0] for b in epoch])
        labels = np.concatenate([b[1] for b in epoch])
        order = (features[:, 0] / 3).astype(int)
        np.testing.assert_array_equal(np.sort(order), np.arange(64))
        np.testing.assert_array_equal(labels, y[order])
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])


def test_validation_split_takes_the_last_rows_and_sample_weight_rides_along():
    x, y = _arrays(50)
    weights = np.linspace(0.5, 1.5, 50).astype(np.float32)
    arguments = fit_data.fit_arguments(
        {
            "x": x,
            "y": y,
            "sample_weight": weights,
            "batch_size": 8,
            "shuffle": False,
            "validation_split": 0.25,
        }
    )
    val_x, val_y, val_w = arguments["validation_data"]
    np.testing.assert_array_equal(val_x, x[37:])  # floor(50 * 0.75) = 37, as Keras
    np.testing.assert_array_equal(val_y, y[37:])
    np.testing.assert_array_equal(val_w, weights[37:])
    assert "validation_split" not in arguments and arguments["steps_per_epoch"] == 5
    (epoch,) = _epochs(arguments, 1)
    np.testing.assert_array_equal(np.concatenate([b[2] for b in epoch]), weights[:37])


def test_other_inputs_go_to_keras_as_given():
    x, y = _arrays(20)
    for arguments in (
        {"x": x, "y": y, "class_weight": {0: 2.0}},
        {"x": x, "y": y, "shuffle": "batch"},
        {"x": x, "y": y, "steps_per_epoch": 3},
        {"x": [x], "y": y},
        {"x": x, "y": y[:10]},
        {"x": x[:0], "y": y[:0]},
    ):
        assert fit_data.fit_arguments(arguments) == arguments
    assert fit_data.fit_arguments({"x": x, "y": y}, one_step_calls=False) == {"x": x, "y": y}
    model = _model()
    assert model.runs_one_step_per_call()
    model.compile(steps_per_execution=3)
    assert not model.runs_one_step_per_call()
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert not _model().runs_one_step_per_call()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    assert fit_data.fit_arguments({"x": dataset})["steps_per_epoch"] == 4
    endless = dataset.repeat()
    assert fit_data.fit_arguments({"x": endless}) == {"x": endless}


def _model(seed=3):
    keras.utils.set_random_seed(seed)
    model = SpelaModel(
        [keras.Input((3,)), SpelaDense(16, seed=1), SpelaDense(8, seed=2)], num_classes=4
    )
    # A constant rate: the tests compare fit with loops over the same batches.
    model.compile(anneal=False)
    return model


def test_fit_ends_at_the_weights_of_a_loop_over_the_same_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(45, 3)).astype(np.float32)
    y = rng.integers(0, 4, 45).astype(np.int32)
    weights = rng.uniform(0.5, 1.5, 45).astype(np.float32)
    fitted = _model()
    history = fitted.fit(
        x, y, sample_weight=weights, batch_size=10, epochs=2, shuffle=False, verbose=0
    )
    looped = _model()
    for _ in range(2):
        for start in range(0, 45, 10):
            rows = slice(start, start + 10)
            looped.train_on_batch(x[rows], y[rows], sample_weight=weights[rows])
    for a, b in zip(fitted.get_weights(), looped.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(fitted.optimizer.iterations) == 10
    assert len(history.history["loss"]) == 2


def test_fit_with_validation_split_reports_the_last_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    model = _model()
    history = model.fit(x, y, batch_size=4, epochs=1, validation_split=0.25, verbose=0)
    assert int(model.optimizer.iterations) == 8  # 30 rows of batch 4
    # As Keras: validation at the training batch size (losses are means of batch means).
    evaluated = model.evaluate(x[30:], y[30:], batch_size=4, verbose=0, return_dict=True)
    assert history.history["val_accuracy"][0] == pytest.approx(evaluated["accuracy"])
    assert history.history["val_loss"][0] == pytest.approx(evaluated["loss"], rel=1e-5)
    other = model.evaluate(x[30:], y[30:], batch_size=32, verbose=0, return_dict=True)
    assert other["loss"] != pytest.approx(evaluated["loss"], rel=1e-5)


@pytest.mark.slow
def test_multi_step_executions_and_empty_arrays_keep_keras_behaviour():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    model = _model()
    model.compile(steps_per_execution=3)
    model.fit(x, y, batch_size=10, epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 8  # 4 batches per epoch, none more
    empty = _model()
    with pytest.warns(UserWarning, match="ran out of data"):
        empty.fit(x[:0], y[:0], batch_size=10, epochs=1, verbose=0)
    assert int(empty.optimizer.iterations) == 0


def test_float64_arrays_become_floatx_once():
    x, y = _arrays(12)
    arguments = fit_data.fit_arguments({"x": x.astype(np.float64), "y": y, "batch_size": 5})
    (epoch,) = _epochs(arguments, 1)
    assert all(b[0].dtype == np.float32 and b[1].dtype == np.int32 for b in epoch)
