"""TFLite Micro (`tflite-micro`): the single-graph train step of
`export_tflite_micro`, with the JSON description written beside it."""

import json
import os

import numpy as np

from keras_spela_device import contract
from keras_spela_device.backends.base import Backend
from keras_spela_device.errors import DeviceTrainingError
from keras_spela_device.errors import ModelFileError
from keras_spela_device.errors import RuntimeUnavailableError
from keras_spela_device.errors import one_line
from keras_spela_device.native_stderr import capture_native_stderr


def micro_arena_size(description):
    """The measured arena plus 1 KiB, or 64 MiB when it was not measured
    (exported without tflite-micro installed)."""
    measured = description.get("arena_bytes")
    return int(measured) + 1024 if measured else 64 * 1024 * 1024


def read_description(model, description_path):
    """The parsed description of `model`, checked against it
    (`contract.micro_description_problems`); ModelFileError otherwise."""
    where = f"{description_path} (the description of {model.path})"
    if not os.path.isfile(description_path):
        raise ModelFileError(
            f"{where}: no description found; a TFLite Micro train step needs the JSON "
            f"that export_tflite_micro writes beside it (or pass description_path=)"
        )
    try:
        with open(description_path, "rb") as f:
            text = f.read()
    except OSError as error:
        raise ModelFileError(f"{where}: cannot be read ({error.strerror or error})") from None
    try:
        description = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelFileError(f"{where}: not valid JSON (not UTF-8 text)") from None
    except ValueError as error:
        raise ModelFileError(f"{where}: not valid JSON ({error})") from None
    problems = contract.micro_description_problems(description, model.data, model.structure)
    if problems:
        raise ModelFileError(
            f"{where}: does not belong to the model: {'; '.join(problems)}. "
            f"Re-export with export_tflite_micro, or remove the stale description"
        )
    return description


class MicroBackend(Backend):
    """One TFLite Micro interpreter running the train step; with all labels
    `PADDING_LABEL` the same step only scores (the last exit). A
    `max_classes` model takes the class mask as an input of every step,
    which this backend keeps."""

    runtime = "micro"
    display_name = "TFLite Micro"
    model_kind = contract.MICRO_STEP
    chosen_by_auto = True
    scores_every_exit = False
    sets_weights = False
    install_hint = "tflite-micro (pip install tflite-micro)"
    # How to export a model whose weights come out (get_weights, --save_weights).
    weights_hint = "export it with export_tflite_micro(..., expose_weights=True)"

    @classmethod
    def check_installed(cls, model_path=None):
        try:
            from tflite_micro import runtime as micro_runtime
        except ImportError as error:
            what = (
                f"{model_path} is a TFLite Micro train step; running it here"
                if model_path
                else "runtime 'micro'"
            )
            raise RuntimeUnavailableError(
                f"{what} needs the tflite-micro package (pip install tflite-micro): {error}"
            ) from None
        return micro_runtime

    def __init__(self, model, num_threads=None, description_path=None, quiet=True):
        del num_threads  # one thread
        if description_path is None:
            description_path = os.path.splitext(model.path)[0] + ".json"
        description_path = os.fspath(description_path)
        description = read_description(model, description_path)
        micro_runtime = self.check_installed(model.path)
        self.description = description
        arena = micro_arena_size(description)
        try:
            with capture_native_stderr(quiet):
                self.interpreter = micro_runtime.Interpreter.from_bytes(
                    model.data, arena_size=arena
                )
        except (RuntimeError, ValueError) as error:
            hint = (
                ""
                if contract.MODEL_SHA256 in description
                else f"; the description has no {contract.MODEL_SHA256} to tie it to this model: if "
                "it comes from an earlier export, re-export with export_tflite_micro"
            )
            raise ModelFileError(
                f"{model.path}: TFLite Micro could not prepare the step in an arena of "
                f"{arena} bytes (arena_bytes of {description_path} + 1 KiB): "
                f"{one_line(error)}{hint}"
            ) from None
        self.inputs = description["inputs"]
        self.outputs = description["outputs"]
        self.batch_size = int(description["batch_size"])
        self.step_shape = tuple(description["input_shape"])
        self.input_shape = self.step_shape
        self.features = None
        if contract.FEATURES in description:
            self.features = _FeaturesModel(
                micro_runtime, model, description, description_path, quiet
            )
            self.input_shape = self.features.input_shape
        self.num_classes = int(description["num_classes"])
        self.exits = list(description["exits"])
        self.accepts_padding = contract.PADDING_OUTPUT in self.outputs
        self.exposes_weights = all(n in self.outputs for n in description["weight_names"])
        self._class_mask = None
        if contract.CLASS_MASK in self.inputs:
            self._class_mask = np.zeros(self.num_classes, np.float32)
            self._class_mask[description.get(contract.CLASS_MASK) or []] = 1.0

    def train(self, x, y):
        if self.features is not None:
            learns = np.any(y != contract.PADDING_LABEL)
            if learns and np.max(np.abs(x), initial=0.0) > contract.MAX_ACTIVATION:
                # The int8 front would clamp what the host's float front
                # turns into activations beyond the acceptance bound.
                return {contract.ACCEPTED_OUTPUT: 0}
            x = self.features(x)
        x_name, y_name = contract.TRAIN_INPUTS
        self.interpreter.set_input(x, self.inputs.index(x_name))
        self.interpreter.set_input(y, self.inputs.index(y_name))
        if self._class_mask is not None:
            self.interpreter.set_input(self._class_mask, self.inputs.index(contract.CLASS_MASK))
        self.interpreter.invoke()
        return {name: self.interpreter.get_output(i) for i, name in enumerate(self.outputs)}

    def infer(self, x):
        """The last exit's scores, in padded batches of padding labels (no
        update)."""
        scores = []
        for start in range(0, len(x), self.batch_size):
            chunk = x[start : start + self.batch_size]
            padded = np.zeros((self.batch_size,) + self.input_shape, np.float32)
            padded[: len(chunk)] = chunk
            labels = np.full((self.batch_size,), contract.PADDING_LABEL, np.int32)
            scores.append(self.train(padded, labels)[contract.SCORES_OUTPUT][: len(chunk)])
        return {self.exits[-1]: np.concatenate(scores)}

    def get_weights(self):
        if not self.exposes_weights:
            raise DeviceTrainingError(
                f"This TFLite Micro model does not output its weights; {self.weights_hint}."
            )
        # A step of padding only: the weights come out, unchanged.
        self.infer(np.zeros((1,) + self.input_shape, np.float32))
        weights = {
            name: np.array(self.interpreter.get_output(self.outputs.index(name)))
            for name in self.description["weight_names"]
        }
        if self._class_mask is not None:
            weights[contract.CLASS_MASK] = self._class_mask.copy()
        return weights

    def set_weights(self, values):
        raise NotImplementedError(
            "TFLite Micro models keep their weights in the arena; re-export "
            "from the host to change them."
        )

    def class_mask(self):
        return self._class_mask

    def set_class_mask(self, mask):
        if self._class_mask is None:
            super().set_class_mask(mask)
        self._class_mask = np.asarray(mask, np.float32).copy()


class _FeaturesModel:
    """The full-int8 features model of a step exported with
    `quantize_frozen=True`: maps raw examples to the step's `x`, one example
    per run (`contract.FEATURES`)."""

    def __init__(self, micro_runtime, model, description, description_path, quiet):
        features = description[contract.FEATURES]
        where = f"{description_path} (the description of {model.path})"
        problems = contract.features_problems(features, None)
        if problems:
            raise ModelFileError(f"{where}: {'; '.join(problems)}")
        path = os.path.join(os.path.dirname(os.path.abspath(model.path)), features["file"])
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as error:
            raise ModelFileError(
                f"{path}: the int8 features model that {where} names cannot be read "
                f"({error.strerror or error}); keep it beside the train step"
            ) from None
        problems = contract.features_problems(features, data)
        if problems:
            raise ModelFileError(f"{where}: {'; '.join(problems)}")
        arena = micro_arena_size(features)
        try:
            with capture_native_stderr(quiet):
                self.interpreter = micro_runtime.Interpreter.from_bytes(data, arena_size=arena)
        except (RuntimeError, ValueError) as error:
            raise ModelFileError(
                f"{path}: TFLite Micro could not prepare the features model in an arena "
                f"of {arena} bytes: {one_line(error)}"
            ) from None
        self.input_shape = tuple(features["input_shape"])
        self.output_shape = tuple(description["input_shape"])

    def __call__(self, x):
        rows = []
        for row in np.asarray(x, np.float32):
            self.interpreter.set_input(row[None], 0)
            self.interpreter.invoke()
            rows.append(np.reshape(self.interpreter.get_output(0), self.output_shape))
        return np.stack(rows) if rows else np.zeros((0,) + self.output_shape, np.float32)
