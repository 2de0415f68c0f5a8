"""Adam, as `keras.optimizers.Adam`, with float32 state only: `beta^t` are
running products (TFLite Micro has no POW and no int64 step counter)."""

import keras
import tensorflow as tf

from keras_spela.lite.optimizers.base import UpdateRule


class Adam(UpdateRule):
    """Keras' Adam: `m += (g - m)(1 - beta_1)`, `v += (g^2 - v)(1 - beta_2)`,
    `value - alpha m / (sqrt(v) + epsilon)` with `alpha = lr sqrt(1 -
    beta_2^t) / (1 - beta_1^t)`; the slots read as zero before the first
    step."""

    keras_class = keras.optimizers.Adam
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}

    @classmethod
    def check(cls, settings):
        return {name: float(value) for name, value in settings.items()}

    @property
    def state_kind(self):
        return "adam"

    def shared_initial_values(self):
        return (1.0, 1.0)

    def advance(self, shared):
        started = tf.cast(tf.less(shared[0], 1.0), tf.float32)
        beta_1_power = shared[0] * self.settings["beta_1"]
        beta_2_power = shared[1] * self.settings["beta_2"]
        alpha = self.learning_rate * tf.sqrt(1.0 - beta_2_power) / (1.0 - beta_1_power)
        return [beta_1_power, beta_2_power], (alpha, started)

    def visible_slots(self, slots, shared):
        started = self.advance(shared)[1][1]
        return [slot * started for slot in slots]

    def updated_variable(self, gradient, value, slots, coefficients, zero_start=False):
        beta_1, beta_2 = self.settings["beta_1"], self.settings["beta_2"]
        alpha, started = coefficients
        m, v = slots
        if zero_start:  # Keras' form: m += (g - m) (1 - beta_1), v likewise.
            m = m + (gradient - m) * (1.0 - beta_1)
            v = v + (tf.square(gradient) - v) * (1.0 - beta_2)
        else:  # the same, with the slots read as zero before the first step
            m = m * (beta_1 * started) + gradient * (1.0 - beta_1)
            v = v * (beta_2 * started) + tf.square(gradient) * (1.0 - beta_2)
        return value - (m * alpha) / (tf.sqrt(v) + self.settings["epsilon"]), [m, v]
