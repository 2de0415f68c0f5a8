"""The interface of a device optimizer's update rule."""


class UpdateRule:
    """One kind of device optimizer: its settings and its float32 update.

    A kind is a module of `keras_spela.lite.optimizers` with one subclass,
    named in `REGISTRY`. Its state has the names of the device contract
    (`keras_spela_device.contract.OPTIMIZER_SLOTS` and
    `SHARED_OPTIMIZER_STATE`, keyed by `state_kind`). Every method is a
    pure function of values, so the exporters can gate the update (a
    rejected batch changes nothing).

    Class attributes:
        keras_class: the Keras optimizer it reproduces (for
            `DeviceOptimizer.from_keras`).
        defaults: `{setting: default}` of its settings besides the
            learning rate (the names of the Keras optimizer's config).

    Args:
        learning_rate: a float > 0.
        **settings: the kind's settings (`defaults`' names).
    """

    keras_class = None
    defaults = {}

    def __init__(self, learning_rate, **settings):
        self.learning_rate = learning_rate
        self.settings = settings

    @classmethod
    def check(cls, settings):
        """The settings, checked and typed; ValueError naming a bad one."""
        return settings

    @property
    def state_kind(self):
        """The contract's key of this rule's state names."""
        raise NotImplementedError

    def shared_initial_values(self):
        """Initial values of the shared state, in the contract's order."""
        return ()

    def advance(self, shared):
        """Starts one step: `(new shared state, coefficients)`;
        `coefficients` go to `updated_variable` for every variable."""
        raise NotImplementedError

    def visible_slots(self, slots, shared):
        """The slots as the optimizer sees them (zero before the first
        step), for `get_weights`."""
        return list(slots)

    def updated_variable(self, gradient, value, slots, coefficients, zero_start=False):
        """`(new value, new slots)` of one variable (see
        `DeviceOptimizer.updated_variable`)."""
        raise NotImplementedError
