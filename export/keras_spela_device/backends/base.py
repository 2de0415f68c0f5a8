"""The interface between DeviceTrainer and a device runtime.

A backend runs one exported model on one runtime. `DeviceTrainer` checks
everything it is given (shapes, dtypes, labels, NaN, weight names) before a
backend sees it, and reads what a backend can do from its capabilities,
never from its class. To add a runtime, write a module with a `Backend`
subclass in this package and add one line to `backends.REGISTRY` (see
docs/extending.md, "A new runtime backend").

Capabilities (class attributes):

- `runtime`: its name in `DeviceTrainer(runtime=...)` and in `REGISTRY`.
- `display_name`: how messages name it ("LiteRT", "TFLite Micro").
- `model_kind`: the exports it runs, `contract.SIGNATURE_MODEL`
  (`export_tflite`) or `contract.MICRO_STEP` (`export_tflite_micro`).
- `chosen_by_auto`: whether `runtime="auto"` may pick it for its model kind
  (the first of `REGISTRY` whose runtime is installed).
- `scores_every_exit`: `infer` scores every exit (else the last one only).
- `sets_weights`: `set_weights` works (else the weights live in the model).
- `install_hint`: what to install (messages of `runtime="auto"`).
- `weights_hint`: how to export a model whose `get_weights` works, for a
  model whose `exposes_weights` is False.

Set by the constructor: `batch_size` (the train step's static batch),
`input_shape` (one example), `num_classes`, `exits` (every exit of the
model, `exit_<k>`), `accepts_padding` (the train step ignores rows labelled
`contract.PADDING_LABEL`), `exposes_weights` (`get_weights` works).
"""

from keras_spela_device import contract
from keras_spela_device.errors import DeviceTrainingError


class Backend:
    """One runtime running one exported model (see the module docstring).

    Args:
        model: the `ModelFile` (path, bytes and structure of a checked file of
            this backend's `model_kind`).
        num_threads: interpreter threads, where the runtime has them.
        description_path: the JSON description of a micro train step.
        quiet: capture what the runtime's C++ code prints while it loads
            the model (shown only if that fails).

    Raises:
        ModelFileError: the model does not fit, or the runtime refuses it.
        RuntimeUnavailableError: the runtime is not installed.
    """

    runtime = None
    display_name = None
    model_kind = contract.SIGNATURE_MODEL
    chosen_by_auto = False
    scores_every_exit = True
    sets_weights = True
    install_hint = None
    weights_hint = "re-export the model with its weights as outputs"

    batch_size = None
    input_shape = ()
    num_classes = None
    exits = ()
    accepts_padding = False
    exposes_weights = True

    @classmethod
    def check_installed(cls):
        """Raises RuntimeUnavailableError (saying what to install) unless
        the runtime can be imported."""

    def train(self, x, y):
        """One step on a full batch: `x` float32 `(batch_size,) +
        input_shape`, `y` int32 `(batch_size,)`.

        Returns:
            `{name: value}`: `contract.ACCEPTED_OUTPUT` (1 or 0), the losses
            (`contract.LOSS_OUTPUT`, `exit_<k>_loss`) and, for a model that
            ignores padding rows, `contract.PADDING_OUTPUT`.
        """
        raise NotImplementedError

    def infer(self, x):
        """`{exit: (rows, num_classes) scores}` of every exit (or of the last
        one, without `scores_every_exit`) for float32 `x` of at least one row."""
        raise NotImplementedError

    def get_weights(self):
        """Every learned weight and optimizer state (and the class mask), by
        name."""
        raise NotImplementedError

    def set_weights(self, values):
        """Sets every weight of `get_weights` (names, shapes and values
        checked by DeviceTrainer)."""
        raise NotImplementedError(f"{self.display_name} models have no set_weights.")

    def class_mask(self):
        """The class mask of a `max_classes` model (1.0 per active class), or
        None for another model."""
        return None

    def set_class_mask(self, mask):
        """Starts the classes of `mask` (checked by DeviceTrainer)."""
        raise DeviceTrainingError(
            "This model has no room for new classes: export a SpelaModel(..., max_classes=N)."
        )
