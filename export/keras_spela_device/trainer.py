"""DeviceTrainer: trains and runs an exported SPELA model on a device runtime.

Imports NumPy and, when a model is loaded, its runtime only (no TensorFlow).
Which kind a file is comes from the file itself (read with a small
flatbuffer reader, before any interpreter sees it), never from the files
beside it; the runtimes are backends (`keras_spela_device.backends`).
"""

import collections
import math
import os
import time

import numpy as np

from keras_spela_device import backends
from keras_spela_device import contract
from keras_spela_device.errors import DeviceTrainingError
from keras_spela_device.errors import ModelFileError
from keras_spela_device.npz import load_npz
from keras_spela_device.npz import npz_path
from keras_spela_device.tflite_file import TFLiteFormatError
from keras_spela_device.tflite_file import read_model_structure

RUNTIMES = backends.RUNTIMES
CLASS_MASK = contract.CLASS_MASK
PADDING_LABEL = contract.PADDING_LABEL

ModelFile = collections.namedtuple("ModelFile", ["path", "data", "structure", "kind"])
ModelFile.__doc__ = """A checked model file: its path, bytes, structure
(`tflite_file.read_model_structure`) and kind (`contract.model_kind`)."""


def read_model_file(model_path):
    """The `ModelFile` of `model_path`.

    Raises:
        ModelFileError: the file is missing, unreadable, not a TFLite model,
            corrupt, truncated or not a keras_spela export.
    """
    path = os.fspath(model_path)
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: the model file does not exist")
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: not a file (a directory?); give the exported .tflite file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        structure = read_model_structure(data)
    except TFLiteFormatError as error:
        raise ModelFileError(f"{path}: {error}") from None
    try:
        kind = contract.model_kind(structure)
    except ValueError as error:
        raise ModelFileError(f"{path}: {error}") from None
    return ModelFile(path, data, structure, kind)


class DeviceTrainer:
    """Trains and runs an exported SPELA model on a device runtime.

    Which kind of model a file is comes from the file: a model with the
    `train`, `infer`, `get_weights` and `set_weights` signatures
    (`export_tflite`) runs on LiteRT or tflite-runtime; a train step with
    inputs `x` and `y` and none of those signatures (`export_tflite_micro`)
    runs on TFLite Micro, with its JSON description. Both are checked before
    an interpreter sees them.

    Args:
        model_path: a `.tflite` file from `export_tflite` or
            `export_tflite_micro`.
        runtime: `"auto"` (from the model: LiteRT, else tflite-runtime, for
            a signature model; TFLite Micro for a micro train step),
            `"litert"`, `"tflite_runtime"` or `"micro"` (must fit the model),
            or `"litert_compiled"`: the signatures of an `export_tflite` model
            through LiteRT's CompiledModel API with TensorBuffers (CPU; never
            chosen by `"auto"`; the same losses and weights as `"litert"`).
            Any runtime of `keras_spela_device.backends.REGISTRY`.
        num_threads: interpreter threads (LiteRT, tflite-runtime and
            CompiledModel's CPU options).
        description_path: the JSON description of a micro train step;
            default `<model stem>.json`. It must be the one written with this
            model: its keys, types, input order, batch size, input shape and
            outputs are checked against the model's tensors, and its
            `model_sha256`, when present, against the file's SHA-256.
        quiet: capture what the runtime's C++ code prints to stderr while the
            interpreter is created (shown only if that fails).

    Raises:
        ModelFileError: the file (or the description) is missing, not a
            model, corrupt, truncated, not a keras_spela export, or does
            not fit `runtime`. The message names the file and the problem.
        RuntimeUnavailableError: the runtime is not installed.
        ValueError: an unknown `runtime`.

    Example:

    ```python
    trainer = DeviceTrainer("spela.tflite")
    trainer.fit(x, y, epochs=3)
    print(trainer.evaluate(x_test, y_test))
    trainer.save_weights("personal.npz")
    ```
    """

    def __init__(
        self, model_path, runtime="auto", num_threads=None, description_path=None, quiet=True
    ):
        if runtime != "auto":
            backends.backend_class(runtime)  # ValueError for an unknown one
        model = read_model_file(model_path)
        backend_class = backends.choose_backend(runtime, model)
        backend = backend_class(
            model, num_threads=num_threads, description_path=description_path, quiet=quiet
        )
        self._attach(backend)
        self.model_path = model.path

    @classmethod
    def _from_backend(cls, backend):
        """A trainer over any `backends.base.Backend` (tests)."""
        trainer = cls.__new__(cls)
        trainer._attach(backend)
        trainer.model_path = None
        return trainer

    def _attach(self, backend):
        self._backend = backend
        self.runtime = backend.runtime
        self.batch_size = backend.batch_size
        self.input_shape = tuple(backend.input_shape)
        self.num_classes = backend.num_classes
        self.exits = list(backend.exits)
        # True when the train step ignores rows labelled PADDING_LABEL: short
        # batches are then padded, not dropped.
        self.accepts_padding = bool(backend.accepts_padding)

    @property
    def exposes_weights(self):
        """Whether `get_weights` (and `save_weights`) work."""
        return bool(self._backend.exposes_weights)

    @property
    def sets_weights(self):
        """Whether `set_weights` (and `load_weights`) work."""
        return bool(self._backend.sets_weights)

    # ----------------------------------------------------------------- train
    def train_batch(self, x, y):
        """Learns from one batch of exactly `batch_size` examples (1 to
        `batch_size` when the model ignores padding rows, `accepts_padding`:
        a shorter batch is padded with zero rows labelled -1).

        Returns:
            A dict of the model's losses (`loss`, `<layer>_loss`).

        Raises:
            DeviceTrainingError: for a wrong shape or dtype, a label outside
                `[0, num_classes)` or a NaN/inf value (checked before the
                model runs), or a batch the model itself rejected (its
                weights are then unchanged).
        """
        x, y = self._check_batch(x, y)
        return self._train_checked(x, y)

    def _train_checked(self, x, y):
        n = len(x)
        if self.accepts_padding and n < self.batch_size:
            padded_x = np.zeros((self.batch_size,) + self.input_shape, np.float32)
            padded_y = np.full((self.batch_size,), PADDING_LABEL, np.int32)
            padded_x[:n], padded_y[:n] = x, y
            x, y = padded_x, padded_y
        outputs = self._backend.train(x, y)
        if int(outputs.pop(contract.ACCEPTED_OUTPUT)) != 1:
            raise DeviceTrainingError(
                "The device model rejected the batch (a NaN/inf value, a label it "
                "refuses, values beyond 1e18, a non-finite loss or gradients too "
                "large); its weights are unchanged."
            )
        return {
            k: float(v)
            for k, v in outputs.items()
            if k == contract.LOSS_OUTPUT or k.endswith(contract.LOSS_SUFFIX)
        }

    def fit(self, x, y, epochs=1, shuffle=True, seed=0, verbose=1):
        """Trains for `epochs` passes over `(x, y)` in batches of `batch_size`.

        The train signature has a static batch size. When the model ignores
        padding rows (`accepts_padding`, every model of this keras_spela),
        the last, short batch of each epoch is padded with rows labelled -1
        and learned from like `SpelaModel.fit`'s short last batch (the mean
        over its real examples), so every example is learned from, and fewer
        examples than `batch_size` train too. Models exported before that
        leave the `len(x) % batch_size` last examples of each (shuffled)
        epoch out and need at least `batch_size` examples.

        Returns:
            A dict `{"loss": [mean loss per epoch], ...}` (each step weighted
            by its number of real examples).

        Raises:
            DeviceTrainingError: bad data (nothing is trained), or a batch
                that the model rejected (the steps before it were learned).
        """
        x, y = self._check_arrays(x, y)
        self._check_active(y)
        if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 1:
            raise DeviceTrainingError(f"epochs must be a positive integer, received {epochs!r}.")
        if len(x) == 0:
            raise DeviceTrainingError("fit needs at least one example, received 0.")
        if self.accepts_padding:
            steps = math.ceil(len(x) / self.batch_size)
            used = len(x)
        else:
            if len(x) < self.batch_size:
                raise DeviceTrainingError(
                    f"fit needs at least batch_size={self.batch_size} examples, received {len(x)}."
                )
            steps = len(x) // self.batch_size
            used = steps * self.batch_size
        rng = np.random.default_rng(seed)
        history = {}
        for epoch in range(epochs):
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            totals = {}
            start = time.perf_counter()
            for step in range(steps):
                index = order[step * self.batch_size : (step + 1) * self.batch_size]
                try:
                    losses = self._train_checked(x[index], y[index])
                except DeviceTrainingError as error:
                    raise DeviceTrainingError(
                        f"Epoch {epoch + 1}/{epochs}, step {step + 1}/{steps}: {error}"
                        + (" The steps before it were learned." if epoch or step else "")
                    ) from None
                for key, value in losses.items():
                    totals[key] = totals.get(key, 0.0) + value * len(index)
            for key, value in totals.items():
                history.setdefault(key, []).append(value / used)
            if verbose:
                seconds = time.perf_counter() - start
                print(
                    f"epoch {epoch + 1}/{epochs} - {steps} steps - "
                    f"{1000 * seconds / steps:.2f} ms/step - "
                    f"loss {history['loss'][-1]:.4f}",
                    flush=True,
                )
        return history

    # --------------------------------------------------------------- predict
    def predict(self, x, exit=None):
        """Class scores at the last exit, at exit `exit` (an index or a name
        like `"exit_0"`), or at every exit with `exit="all"` (a dict).
        TFLite Micro models give the last exit only.

        Raises:
            ValueError: an exit the model does not have, or (TFLite Micro)
                an exit other than the last.
            DeviceTrainingError: bad inputs.
        """
        name = self._exit_name(exit)
        x = self._check_inputs(x)
        scores = self._infer(x)
        return scores if name is None else scores[name]

    def _exit_name(self, exit):
        """The exit's name, or None for "all"; ValueError for any other value."""
        if isinstance(exit, str) and exit == "all":
            return None
        if exit is None:
            name = self.exits[-1]
        elif isinstance(exit, str):
            if exit not in self.exits:
                raise ValueError(f"Unknown exit {exit!r}; the exits are {self.exits}.")
            name = exit
        elif isinstance(exit, (int, np.integer)) and not isinstance(exit, bool):
            if not -len(self.exits) <= exit < len(self.exits):
                raise ValueError(
                    f"exit={exit} is out of range: the model has {len(self.exits)} exits "
                    f"{self.exits} (indices {-len(self.exits)} to {len(self.exits) - 1})."
                )
            name = self.exits[exit]
        else:
            raise ValueError(
                f"exit must be None, 'all', an exit index or name {self.exits}, received {exit!r}."
            )
        if name not in self.scored_exits:
            raise ValueError(
                f"This {self._backend.display_name} model scores its last exit only "
                f"({self.scored_exits[-1]!r}); exit {name!r} needs an export_tflite "
                f"model, which scores every exit."
            )
        return name

    @property
    def scored_exits(self):
        """The exits that `predict` and `evaluate` can score (every exit, or
        the last one on TFLite Micro)."""
        return list(self.exits) if self._backend.scores_every_exit else self.exits[-1:]

    def _infer(self, x):
        """`{exit: scores}` of the scored exits; no runtime call for 0 rows."""
        if not len(x):
            return {name: np.zeros((0, self.num_classes), np.float32) for name in self.scored_exits}
        return self._backend.infer(x)

    def evaluate(self, x, y):
        """Accuracy at every available exit: `{"exit_<k>_accuracy": ...}`
        (TFLite Micro models give the last exit only). For a `max_classes`
        model, over the examples of the active classes only."""
        x, y = self._check_arrays(x, y)
        active = self.active_classes
        if active is not None:
            keep = np.isin(y, active)
            x, y = x[keep], y[keep]
        if not len(y):  # nothing to score
            return {f"{name}{contract.ACCURACY_SUFFIX}": 0.0 for name in self.scored_exits}
        scores = self._infer(x)
        return {
            f"{name}{contract.ACCURACY_SUFFIX}": float(np.mean(np.argmax(s, axis=-1) == y))
            for name, s in scores.items()
        }

    # ------------------------------------------------------------- classes
    @property
    def active_classes(self):
        """The active class ids of a model exported from
        `SpelaModel(max_classes=...)`, or None for another model."""
        mask = self._class_mask()
        return None if mask is None else [int(k) for k in np.flatnonzero(mask > 0.5)]

    def activate_class(self, class_id):
        """Starts class `class_id` on the device: its labels are learned from
        and it counts in `predict` / `evaluate` from now on (device state:
        `get_weights()["active_classes"]`, saved with the weights; a TFLite
        Micro step takes it as an input, which the trainer keeps).

        Raises:
            DeviceTrainingError: the model has no room for new classes,
                `class_id` is not in `[0, num_classes)`, or the class is
                already active. Nothing changes then.
        """
        mask = self._class_mask()
        if mask is None:
            raise DeviceTrainingError(
                "This model has no room for new classes: export a SpelaModel(..., max_classes=N)."
            )
        if (
            isinstance(class_id, bool)
            or not isinstance(class_id, (int, np.integer))
            or not (0 <= class_id < self.num_classes)
        ):
            raise DeviceTrainingError(
                f"class_id must be an integer in [0, max_classes={self.num_classes}), "
                f"received {class_id!r}."
            )
        if mask[class_id] > 0.5:
            raise DeviceTrainingError(
                f"Class {class_id} is already active (active: {self.active_classes})."
            )
        mask = mask.copy()
        mask[class_id] = 1.0
        self._backend.set_class_mask(mask)

    def _class_mask(self):
        return self._backend.class_mask()

    # --------------------------------------------------------------- weights
    def get_weights(self):
        """Every learned weight and optimizer state, by name (numpy arrays)."""
        return self._backend.get_weights()

    def set_weights(self, weights):
        """Sets every learned weight and optimizer state (names as in
        `get_weights`); non-finite values are refused and change nothing.

        Raises:
            DeviceTrainingError: other names or shapes, NaN or inf values.
            NotImplementedError: a runtime whose weights live in the model
                (TFLite Micro).
        """
        if not self.sets_weights:
            raise NotImplementedError(
                f"{self._backend.display_name} models have no set_weights (their weights "
                "live in the model); re-export from the host to change them."
            )
        current = self.get_weights()
        missing = sorted(set(current) - set(weights))
        unknown = sorted(set(weights) - set(current))
        if missing or unknown:
            raise DeviceTrainingError(
                f"set_weights needs exactly the names of get_weights; missing "
                f"{_some(missing)}, unknown {_some(unknown)}."
            )
        values = {}
        for name, value in weights.items():
            value = np.asarray(value, np.float32)
            if value.shape != current[name].shape:
                raise DeviceTrainingError(
                    f"Weight {name!r} must have shape {current[name].shape}, "
                    f"received {value.shape}."
                )
            if not np.all(np.isfinite(value)):
                raise DeviceTrainingError(f"Weight {name!r} contains NaN or inf.")
            if name == CLASS_MASK and not np.all((value == 0.0) | (value == 1.0)):
                raise DeviceTrainingError(
                    f"Weight {name!r} must hold 0 or 1 per class, received {value}."
                )
            values[name] = value
        self._backend.set_weights(values)

    def save_weights(self, path):
        """Writes every learned weight and optimizer state to an `.npz` file
        (`.npz` is appended to a path without it, as `np.savez` does).

        Returns:
            The path written.
        """
        path = npz_path(path)
        np.savez(path, **self.get_weights())
        return path

    def load_weights(self, path):
        """Restores weights written by `save_weights` (from the same `path`
        given to it: `"w"` reads `w.npz` when no file `w` exists)."""
        path = os.fspath(path)
        if not os.path.exists(path):
            path = npz_path(path)
        arrays = load_npz(path, "weights file")
        try:
            self.set_weights(arrays)
        except DeviceTrainingError as error:
            raise DeviceTrainingError(f"{path}: {error}") from None

    # ---------------------------------------------------------------- checks
    def _check_inputs(self, x):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise DeviceTrainingError(
                f"x must hold floating-point values, received dtype {x.dtype}; "
                "scale integer images to floats first."
            )
        x = x.astype(np.float32, copy=False)
        if x.ndim < 1 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise DeviceTrainingError(
                f"x must have shape (batch, {', '.join(map(str, self.input_shape))}), "
                f"received {x.shape}."
            )
        if not np.all(np.isfinite(x)):
            raise DeviceTrainingError("x contains NaN or infinite values.")
        return x

    def _check_arrays(self, x, y):
        x = self._check_inputs(x)
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.integer):
            raise DeviceTrainingError(
                f"Labels must be integer class ids, received dtype {y.dtype}."
            )
        if y.shape == (len(x), 1):  # a column of labels, as SpelaModel takes it
            y = y.reshape(-1)
        if y.shape != (len(x),):
            raise DeviceTrainingError(
                f"Labels must have shape ({len(x)},) or ({len(x)}, 1), received {y.shape}."
            )
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise DeviceTrainingError(
                f"Labels must be in [0, {self.num_classes}), received values in "
                f"[{y.min()}, {y.max()}]."
            )
        return x, y.astype(np.int32)

    def _check_active(self, y):
        """Labels of inactive classes (a `max_classes` model) are refused."""
        active = self.active_classes
        if active is not None and not np.all(np.isin(y, active)):
            inactive = sorted(set(int(k) for k in y) - set(active))
            raise DeviceTrainingError(
                f"Labels of classes that are not active: {inactive}; call "
                f"activate_class first (active: {active})."
            )

    def _check_batch(self, x, y):
        x, y = self._check_arrays(x, y)
        self._check_active(y)
        if self.accepts_padding:
            if not 1 <= len(x) <= self.batch_size:
                raise DeviceTrainingError(
                    f"The train signature takes batches of 1 to at most "
                    f"{self.batch_size} examples, received {len(x)}."
                )
        elif len(x) != self.batch_size:
            raise DeviceTrainingError(
                f"The train signature takes batches of exactly {self.batch_size} "
                f"examples, received {len(x)}."
            )
        return x, y


def _some(names, shown=6):
    """A list of names for a message, cut after `shown` of them."""
    if len(names) <= shown:
        return str(names)
    return "[" + ", ".join(repr(n) for n in names[:shown]) + f", ... ({len(names)} in all)]"
