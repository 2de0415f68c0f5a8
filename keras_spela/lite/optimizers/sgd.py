"""SGD, with or without (Nesterov) momentum, as `keras.optimizers.SGD`."""

import numbers

import keras
import tensorflow as tf

from keras_spela.lite.optimizers.base import UpdateRule


class SGD(UpdateRule):
    """`value - lr * g`; with momentum Keras' `m = m * momentum - lr * g`,
    `value + m` (Nesterov: `value + m * momentum - lr * g`), `m` zero
    before the first step (kept as `momentum_started`)."""

    keras_class = keras.optimizers.SGD
    defaults = {"momentum": 0.0, "nesterov": False}

    @classmethod
    def check(cls, settings):
        momentum = settings["momentum"]
        if not isinstance(momentum, numbers.Real) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), received {momentum!r}.")
        return {"momentum": float(momentum), "nesterov": bool(settings["nesterov"])}

    @property
    def state_kind(self):
        return "momentum" if self.settings["momentum"] > 0 else "sgd"

    def shared_initial_values(self):
        return (0.0,) if self.settings["momentum"] > 0 else ()

    def advance(self, shared):
        if self.settings["momentum"] > 0:
            return [tf.ones_like(shared[0])], (None, shared[0])
        return [], None

    def visible_slots(self, slots, shared):
        return [slot * shared[0] for slot in slots]

    def updated_variable(self, gradient, value, slots, coefficients, zero_start=False):
        lr = self.learning_rate
        momentum = self.settings["momentum"]
        if momentum == 0:
            return value - gradient * lr, []
        factor = momentum if zero_start else momentum * coefficients[1]
        m = slots[0] * factor - gradient * lr
        step = m * momentum - gradient * lr if self.settings["nesterov"] else m
        return value + step, [m]
