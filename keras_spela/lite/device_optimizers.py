"""Optimizers that run inside exported train signatures on every runtime.

Keras' optimizers keep an int64 step counter and use POW for Adam's bias
correction, which TFLite Micro has no kernels for. `DeviceOptimizer` computes
the same updates as `keras.optimizers.SGD` (with or without momentum,
Nesterov included) and `keras.optimizers.Adam` with float32 state only:
Adam's `beta^t` are kept as running products. Its update is a pure function
of values, so the exporter can gate it (a rejected batch changes nothing).
The tests check it against Keras' optimizers step by step.
"""

import keras
import tensorflow as tf

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
        if not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
            raise ValueError(
                "The device optimizer needs a constant learning_rate > 0, "
                f"received learning_rate={learning_rate!r}."
            )
        if not 0.0 <= momentum < 1.0:
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
            if not isinstance(learning_rate, (int, float)):
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

    def state_shapes(self, names, shapes):
        """Names and shapes of the optimizer state for named variables.

        Returns:
            A list of `(name, shape, initial value)`, in a fixed order.
        """
        state = []
        if self.kind == "sgd" and self.momentum > 0:
            state += [(f"{n}_momentum", s, 0.0) for n, s in zip(names, shapes)]
        if self.kind == "adam":
            state += [(f"{n}_m", s, 0.0) for n, s in zip(names, shapes)]
            state += [(f"{n}_v", s, 0.0) for n, s in zip(names, shapes)]
            state += [("adam_beta_1_power", (), 1.0), ("adam_beta_2_power", (), 1.0)]
        return state

    def updated_values(self, gradients, values, state):
        """One optimizer step as a pure function.

        Args:
            gradients: list of gradient tensors.
            values: list of current variable values (same order).
            state: list of current state values, in `state_shapes` order.

        Returns:
            `(new_values, new_state)`.
        """
        lr = self.learning_rate
        if self.kind == "sgd":
            if self.momentum == 0:
                return [v - g * lr for g, v in zip(gradients, values)], []
            new_values, new_state = [], []
            for g, v, m in zip(gradients, values, state):
                m = m * self.momentum - g * lr
                step = m * self.momentum - g * lr if self.nesterov else m
                new_values.append(v + step)
                new_state.append(m)
            return new_values, new_state
        count = len(values)
        ms, vs = state[:count], state[count : 2 * count]
        beta_1_power = state[2 * count] * self.beta_1
        beta_2_power = state[2 * count + 1] * self.beta_2
        alpha = lr * tf.sqrt(1.0 - beta_2_power) / (1.0 - beta_1_power)
        new_values, new_ms, new_vs = [], [], []
        for g, value, m, v in zip(gradients, values, ms, vs):
            m = m + (g - m) * (1.0 - self.beta_1)
            v = v + (tf.square(g) - v) * (1.0 - self.beta_2)
            new_values.append(value - (m * alpha) / (tf.sqrt(v) + self.epsilon))
            new_ms.append(m)
            new_vs.append(v)
        return new_values, new_ms + new_vs + [beta_1_power, beta_2_power]
