"""What the backends of `export_tflite` models share: the model read from its
signatures, and its four signature runners on an Interpreter."""

import numpy as np

from keras_spela_device import contract
from keras_spela_device.backends.base import Backend
from keras_spela_device.errors import DeviceTrainingError
from keras_spela_device.errors import ModelFileError
from keras_spela_device.errors import one_line
from keras_spela_device.native_stderr import capture_native_stderr


class SignatureModelBackend(Backend):
    """An `export_tflite` model (signatures train, infer, get_weights,
    set_weights); subclasses load it into their runtime (`_load`)."""

    model_kind = contract.SIGNATURE_MODEL

    def __init__(self, model, num_threads=None, description_path=None, quiet=True):
        del description_path  # a micro step's
        problems = contract.signature_model_problems(model.structure)
        if problems:
            raise ModelFileError(
                f"{model.path}: not a valid export_tflite model: {'; '.join(problems)}"
            )
        signatures = model.structure["signatures"]
        train, infer = signatures[contract.TRAIN], signatures[contract.INFER]
        x = train["inputs"][contract.TRAIN_INPUTS[0]]
        self.batch_size = int(x.shape[0])
        self.input_shape = tuple(int(d) for d in x.shape[1:])
        self.num_classes = int(infer["outputs"][contract.SCORES_OUTPUT].shape[-1])
        self.accepts_padding = contract.PADDING_OUTPUT in train["outputs"]
        self.has_class_mask = contract.CLASS_MASK in signatures[contract.GET_WEIGHTS]["outputs"]
        self.exits = contract.exits_scored_by(infer["outputs"])
        self._cached_class_mask = None
        self.check_installed()
        self._load(model, num_threads, quiet)

    def _load(self, model, num_threads, quiet):
        """Creates the runtime's model and sets `_train`, `_infer`, `_get`
        and `_set`: callables of keyword arrays returning `{name: array}`."""
        raise NotImplementedError

    def train(self, x, y):
        x_name, y_name = contract.TRAIN_INPUTS
        return self._train(**{x_name: x, y_name: y})

    def infer(self, x):
        outputs = self._infer(**{contract.INFER_INPUT: x})
        return {name: outputs[contract.exit_scores_name(name)] for name in self.exits}

    def get_weights(self):
        outputs = self._get(**{contract.GET_WEIGHTS_INPUT: np.int32(0)})
        return {k: np.array(v) for k, v in outputs.items()}

    def set_weights(self, values):
        self._cached_class_mask = None
        if int(self._set(**values)[contract.ACCEPTED_OUTPUT]) != 1:
            raise DeviceTrainingError("The device model refused the weights.")

    def class_mask(self):
        if not self.has_class_mask:
            return None
        if self._cached_class_mask is None:  # read again after set_weights
            self._cached_class_mask = self.get_weights()[contract.CLASS_MASK]
        return self._cached_class_mask

    def set_class_mask(self, mask):
        if not self.has_class_mask:
            super().set_class_mask(mask)
        weights = self.get_weights()
        weights[contract.CLASS_MASK] = mask
        self.set_weights(weights)


class InterpreterBackend(SignatureModelBackend):
    """The signature runners of an Interpreter (LiteRT's or tflite-runtime's,
    the same API): subclasses give `interpreter_class()`."""

    @classmethod
    def check_installed(cls):
        cls.interpreter_class()

    @classmethod
    def interpreter_class(cls):
        """The runtime's `Interpreter`; RuntimeUnavailableError without it."""
        raise NotImplementedError

    def _load(self, model, num_threads, quiet):
        interpreter_class = self.interpreter_class()
        try:
            with capture_native_stderr(quiet):
                self._model_data = model.data  # the interpreter reads from these bytes
                self.interpreter = interpreter_class(
                    model_content=model.data, num_threads=num_threads
                )
                self._train, self._infer, self._get, self._set = (
                    self.interpreter.get_signature_runner(name) for name in contract.SIGNATURES
                )
                # Runs once so that the runtime allocates (and prints) now.
                self.infer(np.zeros((1,) + self.input_shape, np.float32))
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(
                f"{model.path}: {self.runtime} could not load the model: {one_line(error)}"
            ) from None
