"""Optimizers that run inside exported train signatures on every runtime.

Keras' optimizers keep an int64 step counter and use POW for Adam's bias
correction, which TFLite Micro has no kernels for. A `DeviceOptimizer`
computes the same updates as `keras.optimizers.SGD` (with or without
momentum, Nesterov included) and `keras.optimizers.Adam` with float32 state
only. Its update is a pure function of values, so the exporters can gate it
(a rejected batch changes nothing). The tests check it against Keras'
optimizers step by step.

Each kind is one module with an `UpdateRule` (`base.py`); adding a kind
takes that module, its line in `REGISTRY` and its state names in the device
contract (`keras_spela_device.contract.OPTIMIZER_SLOTS`,
`SHARED_OPTIMIZER_STATE`), which the device side reads.
"""

import importlib
import numbers

import keras

from keras_spela_device import contract

# kind -> "module:UpdateRule subclass".
REGISTRY = {
    "sgd": "keras_spela.lite.optimizers.sgd:SGD",
    "adam": "keras_spela.lite.optimizers.adam:Adam",
}
KINDS = tuple(REGISTRY)


def rule_class(kind):
    """The `UpdateRule` subclass of a kind of `REGISTRY`."""
    if kind not in REGISTRY:
        raise ValueError(f"Unknown optimizer kind={kind!r}; expected one of {KINDS}.")
    module, name = REGISTRY[kind].split(":")
    return getattr(importlib.import_module(module), name)


class DeviceOptimizer:
    """A float32-state optimizer for device train signatures.

    Args:
        kind: a kind of `REGISTRY`: `"sgd"` or `"adam"`.
        learning_rate: a positive float (a constant on the device).
        **settings: the kind's settings, as in Keras: `momentum` (in
            [0, 1)) and `nesterov` for `"sgd"`; `beta_1`, `beta_2`,
            `epsilon` for `"adam"`. Unset ones take Keras' defaults.

    Example:

    ```python
    optimizer = DeviceOptimizer.from_keras(keras.optimizers.Adam(1e-2))
    optimizer = DeviceOptimizer("sgd", 0.1, momentum=0.9)
    ```
    """

    def __init__(self, kind="adam", learning_rate=1e-2, **settings):
        rule = rule_class(kind)
        if (
            not isinstance(learning_rate, numbers.Real)
            or isinstance(learning_rate, bool)
            or not learning_rate > 0
        ):
            raise ValueError(
                "The device optimizer needs a constant learning_rate > 0, "
                f"received learning_rate={learning_rate!r}."
            )
        unknown = sorted(set(settings) - set(rule.defaults))
        if unknown:
            raise ValueError(
                f"Unknown setting(s) {unknown} for the {kind!r} device optimizer; it "
                f"takes {sorted(rule.defaults)}."
            )
        self.kind = kind
        self.learning_rate = float(learning_rate)
        self.settings = rule.check({**rule.defaults, **settings})
        self.rule = rule(self.learning_rate, **self.settings)

    def __getattr__(self, name):
        # The kind's settings read as attributes (optimizer.momentum, ...).
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(name)

    @classmethod
    def from_keras(cls, optimizer, learning_rate=None):
        """The device optimizer equal to a Keras optimizer of `REGISTRY`.

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
        kinds = [k for k in KINDS if type(optimizer) is rule_class(k).keras_class]
        if not kinds:
            names = ", ".join(
                f"keras.optimizers.{rule_class(k).keras_class.__name__}" for k in KINDS
            )
            raise ValueError(
                f"On-device training supports {names}, received {type(optimizer).__name__}."
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
        rule = rule_class(kinds[0])
        return cls(kinds[0], learning_rate, **{name: config[name] for name in rule.defaults})

    def get_config(self):
        return {"kind": self.kind, "learning_rate": self.learning_rate, **self.settings}

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
        slots = contract.OPTIMIZER_SLOTS[self.rule.state_kind]
        return [(contract.slot_name(name, slot), shape, initial) for slot in slots]

    def shared_state_shapes(self):
        """The state shared by all variables, `[(name, (), initial)]`:
        Adam's running `beta^t`, or whether momentum has started."""
        names = contract.SHARED_OPTIMIZER_STATE[self.rule.state_kind]
        return [(n, (), v) for n, v in zip(names, self.rule.shared_initial_values())]

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
            `updated_variable` for every variable of this step.
        """
        return self.rule.advance(shared)

    def visible_slots(self, slots, shared):
        """The slots as the optimizer sees them (zero before the first
        step), for `get_weights`."""
        return self.rule.visible_slots(slots, shared) if slots else []

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
        return self.rule.updated_variable(gradient, value, slots, coefficients, zero_start)

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
