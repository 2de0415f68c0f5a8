"""Optimizers that run inside exported train signatures on every runtime.

Keras' optimizers keep an int64 step counter and use POW for Adam's bias
correction, which TFLite Micro has no kernels for. `DeviceOptimizer` computes
the same updates as `keras.optimizers.SGD` (with or without momentum,
Nesterov included) and `keras.optimizers.Adam` with float32 state only:
Adam's `beta^t` are kept as running products. Its update is a pure function
of values, so the exporter can gate it (a rejected batch changes nothing).
The tests check it against Keras' optimizers step by step.
"""

import numbers

import keras
import tensorflow as tf

from keras_spela_device import contract

KINDS = ("sgd", "adam")


class DeviceOptimizer:
    """A float32-state SGD / momentum / Adam for device train signatures.

    Args:
        kind: `"sgd"` or `"adam"`.
        learning_rate: a positive float (a constant on the device).
        momentum: SGD momentum in [0, 1).
        nesterov: Nesterov momentum for SGD.
        beta_1, beta_2, epsilon: Adam's settings, as in Keras.

    Example:

    ```python
    optimizer = DeviceOptimizer.from_keras(keras.optimizers.Adam(1e-2))
    ```
    """

    def __init__(
        self,
        kind="adam",
        learning_rate=1e-2,
        momentum=0.0,
        nesterov=False,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
    ):
        if kind not in KINDS:
            raise ValueError(f"Unknown optimizer kind={kind!r}; expected one of {KINDS}.")
        if (
            not isinstance(learning_rate, numbers.Real)
            or isinstance(learning_rate, bool)
            or not learning_rate > 0
        ):
            raise ValueError(
                "The device optimizer needs a constant learning_rate > 0, "
                f"received learning_rate={learning_rate!r}."
            )
        if not isinstance(momentum, numbers.Real) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), received {momentum!r}.")
        self.kind = kind
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)

    @classmethod
    def from_keras(cls, optimizer, learning_rate=None):
        """The device optimizer equal to a Keras SGD or Adam optimizer.

        Args:
            optimizer: a `keras.optimizers.SGD` or `keras.optimizers.Adam`, or
                the name `"sgd"` / `"adam"` (Keras' default settings).
            learning_rate: overrides the optimizer's rate (needed when it
                uses a schedule).

        Raises:
            ValueError: for an optimizer or a setting that cannot run on the
                device (other classes, schedules, weight decay, clipping,
                EMA, AMSGrad, loss scaling).
        """
        if isinstance(optimizer, str):
            optimizer = keras.optimizers.get(optimizer)
        if isinstance(optimizer, keras.optimizers.SGD):
            kind = "sgd"
        elif isinstance(optimizer, keras.optimizers.Adam):
            kind = "adam"
        else:
            raise ValueError(
                "On-device training supports keras.optimizers.SGD (with or "
                "without momentum) and keras.optimizers.Adam, received "
                f"{type(optimizer).__name__}."
            )
        config = optimizer.get_config()
        unsupported = {
            "weight_decay": config.get("weight_decay"),
            "clipnorm": config.get("clipnorm"),
            "clipvalue": config.get("clipvalue"),
            "global_clipnorm": config.get("global_clipnorm"),
            "use_ema": config.get("use_ema") or None,
            "amsgrad": config.get("amsgrad") or None,
            "loss_scale_factor": config.get("loss_scale_factor"),
            "gradient_accumulation_steps": config.get("gradient_accumulation_steps"),
        }
        unsupported = {k: v for k, v in unsupported.items() if v}
        if unsupported:
            raise ValueError(
                f"The model's optimizer cannot be exported for on-device training: "
                f"unsupported settings {unsupported}. Pass optimizer= to the exporter."
            )
        if learning_rate is None:
            learning_rate = config["learning_rate"]
            if not isinstance(learning_rate, numbers.Real):
                raise ValueError(
                    "The model's optimizer uses a learning-rate schedule; pass a "
                    "constant learning_rate= to the exporter."
                )
        if kind == "sgd":
            return cls(
                "sgd",
                learning_rate,
                momentum=config["momentum"],
                nesterov=config["nesterov"],
            )
        return cls(
            "adam",
            learning_rate,
            beta_1=config["beta_1"],
            beta_2=config["beta_2"],
            epsilon=config["epsilon"],
        )

    def get_config(self):
        return {
            "kind": self.kind,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }

    def slot_shapes(self, name, shape, zeros=False):
        """The per-variable state of a variable: `[(name, shape, initial)]`.

        By default a slot's initial value is None: it starts as a copy of the
        variable's own initial value, which the first step reads as zero
        (`advance` gives the factor). An exported model then stores those
        values once (identical constants share one buffer) instead of
        kernel-sized zeros. With `zeros`, slots start at 0.0 (pass
        `zero_start=True` to `updated_variable`): the TFLite Micro program
        does, because that update needs fewer temporaries in its arena."""
        initial = 0.0 if zeros else None
        slots = contract.OPTIMIZER_SLOTS[self._state_kind]
        return [(contract.slot_name(name, slot), shape, initial) for slot in slots]

    def shared_state_shapes(self):
        """The state shared by all variables: Adam's running `beta^t`, or
        whether momentum has started (1.0 after the first step)."""
        initial = {"adam": (1.0, 1.0), "momentum": (0.0,), "sgd": ()}[self._state_kind]
        names = contract.SHARED_OPTIMIZER_STATE[self._state_kind]
        return [(name, (), value) for name, value in zip(names, initial)]

    @property
    def _state_kind(self):
        """Which optimizer state it keeps (`contract.OPTIMIZER_SLOTS`)."""
        if self.kind == "sgd" and self.momentum > 0:
            return "momentum"
        return self.kind

    def state_shapes(self, names, shapes):
        """Names and shapes of the optimizer state for named variables.

        Returns:
            A list of `(name, shape, initial value)`: every variable's slots,
            grouped by slot kind (all `_m`, then all `_v`), then the shared
            state.
        """
        slots = [self.slot_shapes(n, s) for n, s in zip(names, shapes)]
        by_kind = [spec for kind in zip(*slots) for spec in kind] if slots else []
        return by_kind + self.shared_state_shapes()

    def advance(self, shared):
        """Starts one step: the new shared state and the step's coefficients.

        Args:
            shared: current values in `shared_state_shapes` order.

        Returns:
            `(new_shared, coefficients)`; pass `coefficients` to
            `updated_variable` for every variable of this step. They hold
            `started`, 0.0 before the first step (the slots then count as
            zero) and 1.0 after it.
        """
        if self.kind == "adam":
            started = tf.cast(tf.less(shared[0], 1.0), tf.float32)
            beta_1_power = shared[0] * self.beta_1
            beta_2_power = shared[1] * self.beta_2
            alpha = (
                self.learning_rate * tf.sqrt(1.0 - beta_2_power) / (1.0 - beta_1_power)
            )
            return [beta_1_power, beta_2_power], (alpha, started)
        if self.momentum > 0:
            return [tf.ones_like(shared[0])], (None, shared[0])
        return [], None

    def visible_slots(self, slots, shared):
        """The slots as the optimizer sees them (zero before the first
        step), for `get_weights`."""
        if not slots:
            return []
        started = self.advance(shared)[1][1]
        return [slot * started for slot in slots]

    def updated_variable(self, gradient, value, slots, coefficients, zero_start=False):
        """One variable's update as a pure function.

        Args:
            gradient: its gradient.
            value: its current value.
            slots: its current slots, in `slot_shapes` order.
            coefficients: from `advance` (the same for every variable).
            zero_start: the slots started at zero (`slot_shapes(zeros=True)`),
                so they need not be read as zero before the first step.

        Returns:
            `(new_value, new_slots)`.
        """
        lr = self.learning_rate
        if self.kind == "sgd":
            if self.momentum == 0:
                return value - gradient * lr, []
            # Keras: m = m * momentum - g * lr (m is zero before the first step).
            momentum = self.momentum
            if not zero_start:
                momentum = momentum * coefficients[1]
            m = slots[0] * momentum - gradient * lr
            step = m * self.momentum - gradient * lr if self.nesterov else m
            return value + step, [m]
        alpha, started = coefficients
        m, v = slots
        if zero_start:  # Keras' form: m += (g - m) (1 - beta_1), v likewise.
            m = m + (gradient - m) * (1.0 - self.beta_1)
            v = v + (tf.square(gradient) - v) * (1.0 - self.beta_2)
        else:  # the same, with the slots read as zero before the first step
            m = m * (self.beta_1 * started) + gradient * (1.0 - self.beta_1)
            v = v * (self.beta_2 * started) + tf.square(gradient) * (1.0 - self.beta_2)
        return value - (m * alpha) / (tf.sqrt(v) + self.epsilon), [m, v]

    def updated_values(self, gradients, values, state):
        """One optimizer step over several variables, as a pure function.

        Args:
            gradients: list of gradient tensors.
            values: list of current variable values (same order).
            state: list of current state values, in `state_shapes` order.

        Returns:
            `(new_values, new_state)`.
        """
        count = len(values)
        shared_count = len(self.shared_state_shapes())
        slot_count = (len(state) - shared_count) // max(count, 1)
        shared = state[len(state) - shared_count :]
        new_shared, coefficients = self.advance(shared)
        new_values, new_slots = [], []
        for i, (g, value) in enumerate(zip(gradients, values)):
            slots = [state[k * count + i] for k in range(slot_count)]
            value, slots = self.updated_variable(g, value, slots, coefficients)
            new_values.append(value)
            new_slots.append(slots)
        by_kind = [s[k] for k in range(slot_count) for s in new_slots]
        return new_values, by_kind + new_shared
