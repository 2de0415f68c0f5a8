"""The default optimizer anneals its learning rate over each fit (a cosine
over the epochs, restored at the end); an optimizer of the user's, anneal=False
or a learning-rate callback of the user's leave the rate alone."""

import math
import sys

import keras
import numpy as np
import pytest

from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela.training.default_optimizer import CosineOverFit


class RateRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.rates.append(float(self.model.optimizer.learning_rate))


def _model():
    keras.utils.set_random_seed(0)
    return SpelaModel([keras.Input((6,)), SpelaDense(8)], num_classes=3)


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 6)).astype("float32"), rng.integers(0, 3, 40)


def test_default_optimizer_anneals_over_each_fit_and_restores_the_rate():
    model = _model()
    model.compile()
    recorder = RateRecorder()
    model.fit(*_data(), epochs=4, batch_size=10, verbose=0, callbacks=[recorder])
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    np.testing.assert_allclose(recorder.rates, expected, rtol=1e-6)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)
    # A later fit (here resuming at epoch 2 of 4) anneals over its own epochs.
    recorder.rates = []
    model.fit(*_data(), epochs=4, initial_epoch=2, batch_size=10, verbose=0, callbacks=[recorder])
    np.testing.assert_allclose(recorder.rates, [1e-2, 5e-3], rtol=1e-6)
    assert model.get_compile_config()["anneal"] is True


@pytest.mark.parametrize(
    "compile_kwargs, callbacks",
    [
        (dict(optimizer=keras.optimizers.Adam(1e-2)), []),
        (dict(anneal=False), []),
        (dict(), [keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=100)]),
    ],
)
def test_rate_left_alone_by_a_users_optimizer_or_callback(compile_kwargs, callbacks):
    model = _model()
    model.compile(**compile_kwargs)
    recorder = RateRecorder()
    model.fit(*_data(), epochs=3, batch_size=10, verbose=0, callbacks=callbacks + [recorder])
    np.testing.assert_allclose(recorder.rates, [1e-2] * 3, rtol=1e-6)


def test_a_schedule_of_the_users_is_left_alone_even_with_anneal_true():
    model = _model()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5)
    model.compile(keras.optimizers.SGD(schedule), anneal=True)
    model.fit(*_data(), epochs=2, batch_size=10, verbose=0)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1 * 0.5 ** (8 / 4))


def test_a_users_optimizer_may_ask_for_annealing_and_bad_values_are_refused():
    model = _model()
    model.compile(keras.optimizers.SGD(0.5), anneal=True)
    recorder = RateRecorder()
    model.fit(*_data(), epochs=2, batch_size=10, verbose=0, callbacks=[recorder])
    np.testing.assert_allclose(recorder.rates, [0.5, 0.25], rtol=1e-6)
    with pytest.raises(ValueError, match="anneal must be True, False or None"):
        model.compile(anneal="cosine")
    assert CosineOverFit(1).epochs == 1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
