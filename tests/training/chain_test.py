"""A SpelaModel from a layer list, a Sequential or a functional chain; models that are not
a chain are refused."""

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


def _snapshot(model):
    return {v.path: v.numpy().copy() for v in model.weights}


def _changed(before, model):
    """Paths of the model's weights that differ from the snapshot."""
    return {v.path for v in model.weights if not np.array_equal(before[v.path], v.numpy())}


def _layer_paths(layer, trainable_only=True):
    variables = layer.trainable_variables if trainable_only else layer.weights
    return {v.path for v in variables}


# ------------------------------------------------------- construction forms
def test_construct_from_built_sequential_chain(digits):
    x, y = _small_train(digits, 200)
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
        rtol=1e-5,
        atol=1e-6,
    )
    model.compile()
    history = model.fit(x, y, epochs=2, batch_size=50, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_construct_from_unbuilt_sequential_chain_fits(digits):
    x, y = _small_train(digits, 200)
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


def test_layer_list_without_input_fits(digits):
    # The docstring: "a list of layers, optionally starting with keras.Input".
    x, y = _small_train(digits, 200)
    keras.utils.set_random_seed(0)
    model = SpelaModel([SpelaDense(32, name="l1"), SpelaDense(34, name="l2")], NUM_CLASSES)
    model.compile()
    history = model.fit(x, y, epochs=2, batch_size=50, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.exit_layers[0].kernel.shape == (64, 32)


def test_construct_from_functional_chain(digits):
    x, y = _small_train(digits, 200)
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
        rtol=1e-5,
        atol=1e-6,
    )
    model.compile()
    before = _snapshot(model)
    history = model.fit(x, y, epochs=2, batch_size=50, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The functional model's own layers were trained (shared weights).
    assert _changed(before, model) == _layer_paths(functional.get_layer("f1")) | _layer_paths(
        functional.get_layer("f2")
    )


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


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
