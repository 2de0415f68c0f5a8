"""Device-side trainer for exported keras_spela models. Imports no TensorFlow.

Runs the `train` / `infer` / `get_weights` / `set_weights` signatures of a
model written by `keras_spela.export_tflite` on LiteRT (`ai-edge-litert`,
first choice; its CompiledModel API with `runtime="litert_compiled"`) or
`tflite-runtime` (fallback), or the single-graph train step written by
`keras_spela.export_tflite_micro` on TFLite Micro (`tflite-micro`).
Which kind a file is comes from the file itself (read with a small
flatbuffer reader, before any interpreter sees it), never from the files
beside it.

As a script:

    python export/device_trainer.py --model spela.tflite --data data.npz \\
        --epochs 5 --save_weights weights.npz

where `data.npz` holds `x_train`, `y_train` and optionally `x_test`, `y_test`.
A user mistake (a missing or wrong file, bad data, a rejected batch) ends
with one `error:` line on stderr and exit code 1 (2 for bad arguments).
"""

import argparse
import atexit
import contextlib
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
import zipfile

import numpy as np

# The flatbuffer reader beside this file (pure Python; copy both to a device).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tflite_file import TFLiteFormatError  # noqa: E402
from tflite_file import io_names  # noqa: E402
from tflite_file import read_model_structure  # noqa: E402

# "litert_compiled" runs the same signatures through LiteRT's CompiledModel API
# (chosen by runtime= only: "auto" keeps the Interpreter).
RUNTIMES = ("litert", "tflite_runtime", "micro", "litert_compiled")
# The device state of a model exported from SpelaModel(max_classes=...): 1
# per active class (a get/set_weights name, or an input of a Micro step).
CLASS_MASK = "active_classes"
# The signatures that make a model a keras_spela `export_tflite` model.
SIGNATURES = ("train", "infer", "get_weights", "set_weights")
# Rows of a train batch labelled PADDING_LABEL are padding: the model ignores
# them (a batch of padding only is rejected). Models that do so say how many
# real examples they learned from in the train output PADDING_OUTPUT;
# DeviceTrainer then pads a short batch instead of dropping it.
PADDING_LABEL = -1
PADDING_OUTPUT = "examples"


class DeviceTrainingError(ValueError):
    """Something DeviceTrainer refuses: a batch, a weight set, a data file or
    a model file. Raised before anything changed (a batch the model itself
    rejected changed nothing either)."""


class ModelFileError(DeviceTrainingError):
    """A file that is not a model DeviceTrainer can run (or a TFLite Micro
    description that does not belong to the model). The message names the
    file and the problem."""


class RuntimeUnavailableError(ImportError):
    """The runtime that the model (or `runtime=`) needs is not installed."""


# ------------------------------------------------------------------ quiet
@contextlib.contextmanager
def capture_native_stderr(enabled=True):
    """Captures what native code writes to file descriptor 2 in the block.

    TensorFlow, LiteRT and TFLite Micro print INFO lines and notices from C++
    straight to fd 2 (`INFO: Created TensorFlow Lite XNNPACK delegate for
    CPU.`, oneDNN and CUDA notices, ...), where no Python setting reaches
    them. Inside the block fd 2 goes to a temporary file; if the block
    raises, what was captured is written to stderr before the exception
    propagates, otherwise it is dropped. Python's `sys.stderr` (warnings,
    logging) keeps going to the real stderr. Process-wide: output that other
    threads send to fd 2 meanwhile is captured too; if the process crashes
    inside the block (a segfault), what was captured is lost (use
    `enabled=False`, the CLIs' `--verbose`, to see it).

    Args:
        enabled: False runs the block without capturing (`--verbose`).
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2
        yield
        return
    python_stderr, replacement, failed = sys.stderr, None, False
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            try:
                if python_stderr.fileno() == 2:
                    replacement = os.fdopen(os.dup(saved), "w", buffering=1)
                    sys.stderr = replacement
            except (OSError, ValueError, AttributeError):
                pass  # sys.stderr is not fd 2 (pytest, a notebook): leave it
            yield
        except BaseException:
            failed = True
            raise
        finally:
            if replacement is not None:
                if sys.stderr is replacement:
                    sys.stderr = python_stderr
                replacement.close()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                captured.seek(0)
                text = captured.read()
                if text:
                    try:
                        os.write(2, text)
                    except OSError:
                        pass


def _model_kind(structure):
    """'signatures' (export_tflite), 'micro' (export_tflite_micro's step),
    or raises TFLiteFormatError saying what the model is instead."""
    signatures = structure["signatures"]
    if all(name in signatures for name in SIGNATURES):
        return "signatures"
    if not any(name in signatures for name in SIGNATURES):
        inputs = io_names(structure, 0, "inputs")
        if "x" in inputs and "y" in inputs:
            return "micro"
    listed = sorted(signatures) if signatures else "none"
    raise TFLiteFormatError(
        f"not a keras_spela export: it has neither the signatures "
        f"{', '.join(SIGNATURES)} of export_tflite (its signatures: {listed}) "
        f"nor the x and y inputs of export_tflite_micro's train step (its inputs: "
        f"{io_names(structure, 0, 'inputs')})"
    )


# ---------------------------------------------------------------- runtime
def load_interpreter_class(runtime="auto"):
    """The `Interpreter` class of LiteRT, or of tflite-runtime as a fallback.

    Returns:
        `(runtime name, Interpreter class)`.

    Raises:
        RuntimeUnavailableError: the runtime (any of them for "auto") is not
            installed.
    """
    if runtime in ("auto", "litert"):
        try:
            from ai_edge_litert.interpreter import Interpreter

            return "litert", Interpreter
        except ImportError as error:
            if runtime == "litert":
                raise RuntimeUnavailableError(
                    f"runtime 'litert' needs the ai-edge-litert package "
                    f"(pip install ai-edge-litert): {error}"
                ) from None
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError as error:
        needed = (
            "LiteRT (pip install ai-edge-litert) or tflite-runtime"
            if runtime == "auto" else "the tflite-runtime package"
        )
        raise RuntimeUnavailableError(
            f"running an export_tflite model here needs {needed}: {error}"
        ) from None
    return "tflite_runtime", Interpreter


def _read_model_file(model_path):
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
        kind = _model_kind(structure)
    except TFLiteFormatError as error:
        raise ModelFileError(f"{path}: {error}") from None
    return path, data, structure, kind


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
        if runtime not in ("auto",) + RUNTIMES:
            raise ValueError(f"runtime must be 'auto' or one of {RUNTIMES}, received {runtime!r}.")
        path, data, structure, kind = _read_model_file(model_path)
        if kind == "micro":
            if runtime not in ("auto", "micro"):
                raise ModelFileError(
                    f"{path}: a TFLite Micro train step (export_tflite_micro: one graph, "
                    f"no train/infer signatures); run it with runtime='micro', or run "
                    f"the export_tflite model on {runtime!r}"
                )
            if description_path is None:
                description_path = os.path.splitext(path)[0] + ".json"
            backend = _MicroBackend(path, data, structure, os.fspath(description_path), quiet)
        else:
            if runtime == "micro":
                raise ModelFileError(
                    f"{path}: a model written by export_tflite (signatures "
                    f"{', '.join(SIGNATURES)}), not a TFLite Micro train step; run it "
                    f"with runtime 'litert', 'litert_compiled' or 'tflite_runtime', or export the micro "
                    f"step with export_tflite_micro"
                )
            backend_class = (
                _CompiledModelBackend if runtime == "litert_compiled" else _SignatureBackend
            )
            backend = backend_class(path, data, structure, runtime, num_threads, quiet)
        self._attach(backend)
        self.model_path = path

    @classmethod
    def _from_backend(cls, backend):
        """A trainer over any object with the backend interface (tests)."""
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
        self.accepts_padding = bool(getattr(backend, "accepts_padding", False))
        self._cached_class_mask = None

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
        if int(outputs.pop("accepted")) != 1:
            raise DeviceTrainingError(
                "The device model rejected the batch (a NaN/inf value, a label it "
                "refuses, a non-finite loss or gradients too large); its weights "
                "are unchanged."
            )
        return {k: float(v) for k, v in outputs.items() if k.endswith("loss")}

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
                    f"fit needs at least batch_size={self.batch_size} examples, "
                    f"received {len(x)}."
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
                f"exit must be None, 'all', an exit index or name {self.exits}, "
                f"received {exit!r}."
            )
        if name not in self.scored_exits:
            raise ValueError(
                f"This {self.runtime} model scores its last exit only "
                f"({self.scored_exits[-1]!r}); exit {name!r} needs an export_tflite "
                f"model, which scores every exit."
            )
        return name

    @property
    def scored_exits(self):
        """The exits that `predict` and `evaluate` can score (every exit, or
        the last one on TFLite Micro)."""
        every = getattr(self._backend, "scores_every_exit", True)
        return list(self.exits) if every else self.exits[-1:]

    def _infer(self, x):
        """`{exit: scores}` of the scored exits; no runtime call for 0 rows."""
        if not len(x):
            return {
                name: np.zeros((0, self.num_classes), np.float32) for name in self.scored_exits
            }
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
            return {f"{name}_accuracy": 0.0 for name in self.scored_exits}
        scores = self._infer(x)
        return {
            f"{name}_accuracy": float(np.mean(np.argmax(s, axis=-1) == y))
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
                "This model has no room for new classes: export a "
                "SpelaModel(..., max_classes=N)."
            )
        if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) or not (
            0 <= class_id < self.num_classes
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
        if isinstance(self._backend, _MicroBackend):
            self._backend.class_mask = mask
        else:
            weights = self.get_weights()
            weights[CLASS_MASK] = mask
            self.set_weights(weights)

    def _class_mask(self):
        if isinstance(self._backend, _MicroBackend):
            return self._backend.class_mask
        if not getattr(self._backend, "has_class_mask", False):
            return None
        if self._cached_class_mask is None:  # refreshed after set_weights
            self._cached_class_mask = self._backend.get_weights()[CLASS_MASK]
        return self._cached_class_mask

    # --------------------------------------------------------------- weights
    def get_weights(self):
        """Every learned weight and optimizer state, by name (numpy arrays)."""
        return self._backend.get_weights()

    def set_weights(self, weights):
        """Sets every learned weight and optimizer state (names as in
        `get_weights`); non-finite values are refused and change nothing."""
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
        self._cached_class_mask = None
        self._backend.set_weights(values)

    def save_weights(self, path):
        """Writes every learned weight and optimizer state to an `.npz` file
        (`.npz` is appended to a path without it, as `np.savez` does).

        Returns:
            The path written.
        """
        path = _npz_path(path)
        np.savez(path, **self.get_weights())
        return path

    def load_weights(self, path):
        """Restores weights written by `save_weights` (from the same `path`
        given to it: `"w"` reads `w.npz` when no file `w` exists)."""
        path = os.fspath(path)
        if not os.path.exists(path):
            path = _npz_path(path)
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


def load_npz(path, what="data file"):
    """The arrays of an `.npz` file, as a dict; DeviceTrainingError (naming
    the file) when it is missing or not an `.npz` archive."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DeviceTrainingError(
            f"{path}: the {what} does not exist" if not os.path.exists(path)
            else f"{path}: the {what} is not a file"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DeviceTrainingError(
            f"{path}: the {what} is not an .npz archive written by np.savez ({_one_line(error)})"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DeviceTrainingError(
            f"{path}: the {what} holds one .npy array, not an .npz archive of named arrays (np.savez)"
        )
    try:
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DeviceTrainingError(f"{path}: the {what} is damaged ({_one_line(error)})") from None


def _tensor_problem(tensor, what, dtype, shape=None):
    """None if `tensor` has the dtype and shape (None entries: any positive
    size), else what is wrong with it."""
    if tensor.dtype != dtype:
        return f"{what} is {tensor.dtype}, not {dtype}"
    if shape is not None and (
        len(tensor.shape) != len(shape)
        or any(s is not None and s != t for s, t in zip(shape, tensor.shape))
    ):
        return f"{what} has shape {tensor.shape}, expected {tuple(shape)}"
    if any(d < 1 for d in tensor.shape):
        return f"{what} has a dynamic or empty shape {tensor.shape}"
    return None


def _check_signature_model(model_path, structure):
    """The `train` signature's `x` tensor and `infer`'s `scores` of an
    `export_tflite` model, or ModelFileError naming what does not fit."""
    signatures = structure["signatures"]
    train, infer = signatures["train"], signatures["infer"]
    x, y = train["inputs"].get("x"), train["inputs"].get("y")
    problems = []
    if x is None or y is None:
        problems.append(f"its train signature takes {sorted(train['inputs'])}, not x and y")
    elif x.dtype != "float32" or len(x.shape) < 1 or any(d < 1 for d in x.shape):
        problems.append(f"train's x is {x.dtype} of shape {x.shape}, not a float32 batch of static shape")
    else:
        batch = x.shape[0]
        problems.append(_tensor_problem(y, "train's y", "int32", (batch,)))
        infer_x = infer["inputs"].get("x")
        if infer_x is not None and tuple(infer_x.shape[1:]) != tuple(x.shape[1:]):
            problems.append(f"infer's x {infer_x.shape} and train's x {x.shape} disagree")
    unknown = sorted(set(train["inputs"]) - {"x", "y"})
    if unknown:
        problems.append(f"its train signature takes inputs {unknown} that DeviceTrainer does not know")
    if "accepted" not in train["outputs"] or "loss" not in train["outputs"]:
        problems.append(f"its train signature returns {sorted(train['outputs'])}, not accepted and loss")
    scores = infer["outputs"].get("scores")
    if "x" not in infer["inputs"] or scores is None or len(scores.shape) != 2:
        problems.append("its infer signature does not map x to (batch, classes) scores")
    elif any(
        len(t.shape) != 2 or t.shape[-1] != scores.shape[-1] for t in infer["outputs"].values()
    ):
        problems.append("its infer outputs are not all (batch, classes) scores")
    if sorted(signatures["set_weights"]["inputs"]) != sorted(signatures["get_weights"]["outputs"]):
        problems.append("its set_weights inputs are not the get_weights outputs")
    problems = [p for p in problems if p]
    if problems:
        raise ModelFileError(f"{model_path}: not a valid export_tflite model: {'; '.join(problems)}")
    return x, scores


class _SignatureBackend:
    """LiteRT or tflite-runtime, through the model's signature runners."""

    def __init__(self, model_path, data, structure, runtime, num_threads, quiet):
        x, scores = _check_signature_model(model_path, structure)
        train, infer = structure["signatures"]["train"], structure["signatures"]["infer"]
        self.batch_size = int(x.shape[0])
        self.input_shape = tuple(int(d) for d in x.shape[1:])
        self.num_classes = int(scores.shape[-1])
        self.accepts_padding = PADDING_OUTPUT in train["outputs"]
        self.exposes_weights = True
        self.scores_every_exit = True
        self.has_class_mask = CLASS_MASK in structure["signatures"]["get_weights"]["outputs"]
        self.exits = sorted(
            (n[: -len("_scores")] for n in infer["outputs"] if re.fullmatch(r"exit_\d+_scores", n)),
            key=lambda name: int(name.split("_")[1]),
        )
        if not self.exits:
            raise ModelFileError(f"{model_path}: its infer signature has no exit_<k>_scores output")
        self._load(model_path, data, structure, runtime, num_threads, quiet)

    def _load(self, model_path, data, structure, runtime, num_threads, quiet):
        self.runtime, interpreter_class = load_interpreter_class(runtime)
        try:
            with capture_native_stderr(quiet):
                self._model_data = data  # the interpreter reads from these bytes
                self.interpreter = interpreter_class(model_content=data, num_threads=num_threads)
                self._train = self.interpreter.get_signature_runner("train")
                self._infer = self.interpreter.get_signature_runner("infer")
                self._get = self.interpreter.get_signature_runner("get_weights")
                self._set = self.interpreter.get_signature_runner("set_weights")
                # Runs once so that the runtime allocates (and prints) now.
                self._infer(x=np.zeros((1,) + self.input_shape, np.float32))
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(
                f"{model_path}: {self.runtime} could not load the model: {_one_line(error)}"
            ) from None

    def train(self, x, y):
        return self._train(x=x, y=y)

    def infer(self, x):
        outputs = self._infer(x=x)
        return {name: outputs[f"{name}_scores"] for name in self.exits}

    def get_weights(self):
        return {k: np.array(v) for k, v in self._get(request=np.int32(0)).items()}

    def set_weights(self, values):
        if int(self._set(**values)["accepted"]) != 1:
            raise DeviceTrainingError("The device model refused the weights.")


def load_compiled_model_api():
    """LiteRT's CompiledModel API: `(CompiledModel, Options, CpuOptions)`.

    Raises:
        RuntimeUnavailableError: ai-edge-litert, or its CompiledModel API
            (ai-edge-litert 2.x), is not installed.
    """
    try:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.compiled_model import CpuOptions
        from ai_edge_litert.compiled_model import Options
    except ImportError as error:
        raise RuntimeUnavailableError(
            f"runtime 'litert_compiled' needs LiteRT's CompiledModel API, in "
            f"ai-edge-litert 2.x (pip install 'ai-edge-litert>=2'): {error}"
        ) from None
    return CompiledModel, Options, CpuOptions


class _CompiledSignature:
    """One signature of a CompiledModel, run with TensorBuffers.

    The buffers are bound by position (`run_by_index`): LiteRT 2.3 names a
    signature's outputs after their tensors, so two names of one tensor
    (`scores` and `exit_<last>_scores` in `infer`) come back as one name
    twice, and `run_by_name` fails on `get_weights`. Which names each
    position carries comes from the file's signature defs instead.
    """

    def __init__(self, model, structure, name):
        definition = structure["signatures"][name]
        graph = structure["subgraphs"][definition["subgraph"]]
        self.name = name
        self.model = model
        self.index = model.get_signature_index(name)
        by_tensor = {t.index: n for n, t in definition["inputs"].items()}
        self.input_names = [by_tensor[t.index] for t in graph["inputs"]]
        self.output_names = [
            [n for n, t in definition["outputs"].items() if t.index == tensor.index]
            for tensor in graph["outputs"]
        ]
        # The file's outputs: a resized batch replaces their first dimension.
        self.file_outputs = [(tuple(t.shape), np.dtype(t.dtype)) for t in graph["outputs"]]
        listed = model.get_signature_list()[name]
        if list(listed["inputs"]) != self.input_names or len(listed["outputs"]) != len(
            self.output_names
        ) or any(n not in names for n, names in zip(listed["outputs"], self.output_names)):
            raise ValueError(
                f"CompiledModel lists the {name} signature as {listed}, not as the "
                f"file's inputs {self.input_names} and outputs {self.output_names}"
            )
        self.allocate()

    def allocate(self, batch=None):
        """(Re)creates the input and output buffers; with `batch`, outputs
        of `batch` rows in host memory that this object owns.

        LiteRT 2.3 does not propagate a resized input through a RESHAPE
        before the first run: `create_output_buffers` then returns buffers of
        the old batch, which the run overflows (a heap corruption that kills
        the process later). Every output of a resized signature here has
        the batch as its first dimension (`infer`'s `(batch, classes)`
        scores), so its size is known from the file.
        """
        self.inputs = self.model.create_input_buffers(self.index)
        if batch is None:
            self.outputs = self.model.create_output_buffers(self.index)
            self._host_outputs = None
        else:
            from ai_edge_litert.tensor_buffer import TensorBuffer

            # 64-byte aligned arrays: TensorBuffer binds them without a copy
            # (an aligned copy it made itself would not be kept alive). No
            # create_output_buffers after a resize: its stale buffers make
            # the next run fail ("Custom allocation is too small").
            self._host_outputs = [
                _aligned_zeros((batch,) + shape[1:], dtype) for shape, dtype in self.file_outputs
            ]
            self.outputs = [TensorBuffer.create_from_host_memory(a) for a in self._host_outputs]
        self.output_layout = []
        for k, buffer in enumerate(self.outputs):
            if self._host_outputs is None:
                details = buffer.get_tensor_details()
                shape, dtype = tuple(int(d) for d in details["shape"]), np.dtype(details["dtype"])
            else:  # a host-memory buffer's details are flat
                shape, dtype = self._host_outputs[k].shape, self._host_outputs[k].dtype
            self.output_layout.append((shape, int(np.prod(shape, dtype=np.int64)), dtype))

    def resize_batch(self, name, shape):
        """Gives input `name` a new shape (`shape[0]`: the new batch) and
        allocates outputs of that batch."""
        self.model.resize_input_tensor(self.input_names.index(name), list(shape), self.index)
        self.allocate(batch=int(shape[0]))

    def __call__(self, **values):
        for name, buffer in zip(self.input_names, self.inputs):
            buffer.write(np.ascontiguousarray(values[name]))
        self.model.run_by_index(self.index, self.inputs, self.outputs)
        results = {}
        # Two positions of one tensor (infer's `scores` and its last exit):
        # the runtime writes the later binding, read last.
        for names, buffer, (shape, size, dtype) in zip(
            self.output_names, self.outputs, self.output_layout
        ):
            value = buffer.read(size, dtype).reshape(shape)
            for name in names:
                results[name] = value
        return results


def _aligned_zeros(shape, dtype, alignment=64):
    """A C-contiguous zero array whose data starts at a multiple of
    `alignment` bytes (a view into a slightly larger array)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    raw = np.zeros(size + alignment // dtype.itemsize + 1, dtype)
    start = (-raw.ctypes.data % alignment) // dtype.itemsize
    return raw[start : start + size].reshape(shape)


def _drop_native_stderr_at_exit():
    """Sends file descriptor 2 to /dev/null once Python is done with it.

    LiteRT's CompiledModel keeps its accelerator registry until the process
    ends: its C++ destructors print `INFO: [accelerator_registry.cc:43]
    DestroyAccelerator: ...` lines after the interpreter has shut down, where
    no capture reaches them. Registered (once) when a quiet CompiledModel
    backend is created; runs after the program's own output, last of the
    atexit functions registered after it."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


_exit_quieted = []


class _CompiledModelBackend(_SignatureBackend):
    """LiteRT's CompiledModel API (`ai_edge_litert.compiled_model`) with
    TensorBuffers, on the CPU. The model keeps its weights and optimizer
    state in resource variables inside the compiled model, as with the
    Interpreter: they persist across `train` calls and are shared by the
    four signatures. (`export_tflite` writes `get_weights` outputs as
    computed tensors: a bare variable read is a dynamic tensor, which
    CompiledModel cannot bind to a TensorBuffer.)"""

    def _load(self, model_path, data, structure, runtime, num_threads, quiet):
        self.runtime = "litert_compiled"
        compiled_model_class, options_class, cpu_options_class = load_compiled_model_api()
        options = options_class(cpu_options=cpu_options_class(num_threads=num_threads or 0))
        self._quiet = quiet
        try:
            with capture_native_stderr(quiet):
                self._model_data = data
                self.compiled_model = compiled_model_class.from_buffer(data, options=options)
                self._train, self._infer, self._get, self._set = (
                    _CompiledSignature(self.compiled_model, structure, name)
                    for name in ("train", "infer", "get_weights", "set_weights")
                )
                self._infer_batch = int(self._infer.inputs[0].get_tensor_details()["shape"][0])
                # Runs once so that the runtime allocates (and prints) now.
                self.infer(np.zeros((1,) + self.input_shape, np.float32))
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(
                f"{model_path}: litert_compiled (LiteRT CompiledModel) could not load "
                f"the model: {_one_line(error)}"
            ) from None
        if quiet and not _exit_quieted:
            atexit.register(_drop_native_stderr_at_exit)
            _exit_quieted.append(True)

    def __del__(self):
        # The compiled model, its buffers and its environment go now; their
        # C++ destructors print INFO lines, captured like at creation.
        held = [n for n in ("_train", "_infer", "_get", "_set", "compiled_model") if n in vars(self)]
        try:
            with capture_native_stderr(getattr(self, "_quiet", True)):
                for name in held:
                    delattr(self, name)
        except Exception:  # late in interpreter shutdown: nothing left to print to
            pass

    def infer(self, x):
        if len(x) != self._infer_batch:
            self._infer.resize_batch("x", x.shape)
            self._infer_batch = len(x)
        outputs = self._infer(x=x)
        return {name: outputs[f"{name}_scores"] for name in self.exits}


def _npz_path(path):
    """`path` with `.npz` appended when it lacks it (as `np.savez` writes)."""
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def _some(names, shown=6):
    """A list of names for a message, cut after `shown` of them."""
    if len(names) <= shown:
        return str(names)
    return "[" + ", ".join(repr(n) for n in names[:shown]) + f", ... ({len(names)} in all)]"


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def _micro_arena_size(description):
    """The measured arena plus 1 KiB, or 64 MiB when it was not measured
    (exported without tflite-micro installed)."""
    measured = description.get("arena_bytes")
    return int(measured) + 1024 if measured else 64 * 1024 * 1024


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_str_list(value, nonempty=False):
    return (
        isinstance(value, list)
        and all(isinstance(v, str) for v in value)
        and (len(value) > 0 or not nonempty)
    )


# Keys of a micro description that DeviceTrainer needs, with their checks.
_DESCRIPTION_KEYS = {
    "inputs": (lambda v: _is_str_list(v, True), "a non-empty list of names"),
    "outputs": (lambda v: _is_str_list(v, True), "a non-empty list of names"),
    "batch_size": (lambda v: _is_int(v, 1), "a positive integer"),
    "input_shape": (
        lambda v: isinstance(v, list) and all(_is_int(d, 1) for d in v),
        "a list of positive integers",
    ),
    "num_classes": (lambda v: _is_int(v, 2), "an integer of at least 2"),
    "exits": (lambda v: _is_str_list(v, True), "a non-empty list of names"),
    "weight_names": (lambda v: _is_str_list(v), "a list of names"),
    "arena_bytes": (lambda v: v is None or _is_int(v, 1), "a positive integer or null"),
}


def check_micro_description(description, data, structure):
    """Problems of a micro description against its model, as a list of
    strings (empty: it belongs to the model).

    Args:
        description: the parsed JSON.
        data: the bytes of the model.
        structure: `read_model_structure(data)`.
    """
    if not isinstance(description, dict):
        return [f"it must hold a JSON object, found a JSON {type(description).__name__}"]
    missing = [k for k in _DESCRIPTION_KEYS if k not in description]
    if missing:
        return [f"it is missing the keys {missing} of an export_tflite_micro description"]
    problems = [
        f"{key!r} must be {kind}, found {description[key]!r}"
        for key, (valid, kind) in _DESCRIPTION_KEYS.items()
        if not valid(description[key])
    ]
    if "model_sha256" in description:
        digest = description["model_sha256"]
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            problems.append(f"'model_sha256' must be 64 hex digits, found {digest!r}")
        elif digest.lower() != hashlib.sha256(data).hexdigest():
            problems.append(
                f"its model_sha256 {digest[:12]}... is not the SHA-256 of the model "
                f"({hashlib.sha256(data).hexdigest()[:12]}...): it was written for another "
                f"(an earlier?) export"
            )
    if problems:
        return problems

    graph = structure["subgraphs"][0]
    inputs = io_names(structure, 0, "inputs")
    if description["inputs"] != inputs:
        problems.append(f"its inputs {description['inputs']} are not the model's inputs {inputs} (in index order)")
        return problems
    tensors = dict(zip(inputs, graph["inputs"]))
    batch, shape = description["batch_size"], tuple(description["input_shape"])
    x, y = tensors["x"], tensors["y"]
    if x.shape != (batch,) + shape:
        problems.append(
            f"its batch_size {batch} and input_shape {list(shape)} do not match the "
            f"model's x tensor {x.shape}"
        )
    problems.append(_tensor_problem(x, "the model's x", "float32"))
    problems.append(_tensor_problem(y, "the model's y", "int32", (x.shape[0] if x.shape else None,)))
    unknown = sorted(set(inputs) - {"x", "y", CLASS_MASK})
    if unknown:
        problems.append(f"its inputs {unknown} are not x, y or {CLASS_MASK}")
    if CLASS_MASK in tensors:
        classes = description["num_classes"]
        problems.append(
            _tensor_problem(tensors[CLASS_MASK], f"the model's {CLASS_MASK}", "float32", (classes,))
        )
        active = description.get(CLASS_MASK)
        if not (
            isinstance(active, list)
            and all(_is_int(k, 0) and k < classes for k in active)
            and len(set(active)) == len(active)
        ):
            problems.append(
                f"its {CLASS_MASK} {active!r} is not a list of distinct class ids in "
                f"[0, {classes})"
            )
    outputs = io_names(structure, 0, "outputs")
    declared = description["outputs"]
    if len(declared) != len(outputs) or any(o is not None and o != d for o, d in zip(outputs, declared)):
        problems.append(
            f"its outputs {declared} are not the model's {len(outputs)} outputs "
            f"{outputs if any(o is not None for o in outputs) else ''}".rstrip()
        )
    elif not {"accepted", "scores", "loss"} <= set(declared):
        problems.append(f"its outputs {declared} lack accepted, scores or loss")
    else:
        scores = graph["outputs"][declared.index("scores")]
        if len(scores.shape) != 2 or scores.shape[-1] != description["num_classes"]:
            problems.append(
                f"its num_classes {description['num_classes']} does not match the "
                f"model's scores {scores.shape}"
            )
        # Only the learning exits have a loss (train_layers).
        if not any(f"{e}_loss" in declared for e in description["exits"]):
            problems.append(f"none of its exits {description['exits']} has an <exit>_loss output")
    return [p for p in problems if p]


class _MicroBackend:
    """TFLite Micro: one interpreter running the single-graph train step."""

    runtime = "micro"

    def __init__(self, model_path, data, structure, description_path, quiet):
        where = f"{description_path} (the description of {model_path})"
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
        problems = check_micro_description(description, data, structure)
        if problems:
            raise ModelFileError(
                f"{where}: does not belong to the model: {'; '.join(problems)}. "
                f"Re-export with export_tflite_micro, or remove the stale description"
            )
        try:
            from tflite_micro import runtime as micro_runtime
        except ImportError as error:
            raise RuntimeUnavailableError(
                f"{model_path} is a TFLite Micro train step; running it here needs the "
                f"tflite-micro package (pip install tflite-micro): {error}"
            ) from None
        self.description = description
        arena = _micro_arena_size(description)
        try:
            with capture_native_stderr(quiet):
                self.interpreter = micro_runtime.Interpreter.from_bytes(data, arena_size=arena)
        except (RuntimeError, ValueError) as error:
            hint = (
                "" if "model_sha256" in description else
                "; the description has no model_sha256 to tie it to this model: if it "
                "comes from an earlier export, re-export with export_tflite_micro"
            )
            raise ModelFileError(
                f"{model_path}: TFLite Micro could not prepare the step in an arena of "
                f"{arena} bytes (arena_bytes of {description_path} + 1 KiB): "
                f"{_one_line(error)}{hint}"
            ) from None
        self.inputs = description["inputs"]
        self.outputs = description["outputs"]
        self.batch_size = int(description["batch_size"])
        self.input_shape = tuple(description["input_shape"])
        self.num_classes = int(description["num_classes"])
        self.exits = list(description["exits"])
        self.accepts_padding = PADDING_OUTPUT in self.outputs
        self.scores_every_exit = False  # the step's scores: the last exit
        self.exposes_weights = all(n in self.outputs for n in description["weight_names"])
        # A max_classes model takes the active classes as an input of every
        # step; the trainer keeps them.
        self.class_mask = None
        if CLASS_MASK in self.inputs:
            self.class_mask = np.zeros(self.num_classes, np.float32)
            self.class_mask[description.get("active_classes") or []] = 1.0

    def train(self, x, y):
        return self._invoke(x, y)

    def _invoke(self, x, y):
        self.interpreter.set_input(x, self.inputs.index("x"))
        self.interpreter.set_input(y, self.inputs.index("y"))
        if self.class_mask is not None:
            self.interpreter.set_input(self.class_mask, self.inputs.index(CLASS_MASK))
        self.interpreter.invoke()
        return {
            name: self.interpreter.get_output(i) for i, name in enumerate(self.outputs)
        }

    def infer(self, x):
        """Scores the last exit in padded batches; labels of -1 mean no update."""
        scores = []
        for start in range(0, len(x), self.batch_size):
            chunk = x[start : start + self.batch_size]
            padded = np.zeros((self.batch_size,) + self.input_shape, np.float32)
            padded[: len(chunk)] = chunk
            labels = np.full((self.batch_size,), -1, np.int32)
            scores.append(self._invoke(padded, labels)["scores"][: len(chunk)])
        if not scores:
            return {self.exits[-1]: np.zeros((0, self.num_classes), np.float32)}
        return {self.exits[-1]: np.concatenate(scores)}  # the last exit only

    def get_weights(self):
        names = self.description["weight_names"]
        if not self.exposes_weights:
            raise DeviceTrainingError(
                "This TFLite Micro model does not output its weights; export it "
                "with export_tflite_micro(..., expose_weights=True)."
            )
        probe = self.infer(np.zeros((1,) + self.input_shape, np.float32))
        del probe  # the step above ran with labels -1: weights unchanged
        weights = {
            name: np.array(self.interpreter.get_output(self.outputs.index(name)))
            for name in names
        }
        if self.class_mask is not None:
            weights[CLASS_MASK] = self.class_mask.copy()
        return weights

    def set_weights(self, values):
        raise NotImplementedError(
            "TFLite Micro models keep their weights in the arena; re-export "
            "from the host to change them."
        )


# ------------------------------------------------------------ command line
def _integer_at_least(minimum, kind):
    """An argparse type: an integer >= `minimum`, named `kind` in errors."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {kind}, received {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {kind}, received {value}")
        return value

    return parse


_positive_int = _integer_at_least(1, "positive integer")
_non_negative_int = _integer_at_least(0, "non-negative integer")


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # One line (argparse would print the whole usage first); exit code 2.
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def _data_arrays(path):
    arrays = load_npz(path, "--data file")
    known = {"x_train", "y_train", "x_test", "y_test"}
    problems = []
    if not {"x_train", "y_train"} <= set(arrays):
        problems.append("it needs x_train and y_train")
    if ("x_test" in arrays) != ("y_test" in arrays):
        problems.append("x_test and y_test go together")
    unknown = sorted(set(arrays) - known)
    if unknown:
        problems.append(f"unknown keys {unknown}")
    if problems:
        raise DeviceTrainingError(
            f"{path}: the --data file holds {sorted(arrays)}; {'; '.join(problems)} "
            f"(keys x_train, y_train and optionally x_test, y_test)"
        )
    return arrays


def _checked_split(trainer, arrays, path, split):
    x_key, y_key = f"x_{split}", f"y_{split}"
    try:
        return trainer._check_arrays(arrays[x_key], arrays[y_key])
    except DeviceTrainingError as error:
        raise DeviceTrainingError(f"{path}: {x_key}/{y_key}: {error}") from None


def _run(args):
    trainer = DeviceTrainer(
        args.model,
        runtime=args.runtime,
        num_threads=args.num_threads,
        description_path=args.description,
        quiet=not args.verbose,
    )
    arrays = _data_arrays(args.data)
    train = _checked_split(trainer, arrays, args.data, "train")
    test = _checked_split(trainer, arrays, args.data, "test") if "x_test" in arrays else None
    if trainer.runtime == "micro" and args.load_weights:
        raise DeviceTrainingError(
            "--load_weights: TFLite Micro models have no set_weights (their weights "
            "live in the arena); re-export from the host to change them"
        )
    if args.save_weights and not getattr(trainer._backend, "exposes_weights", True):
        raise DeviceTrainingError(
            f"--save_weights: {args.model} does not output its weights; export it with "
            "export_tflite_micro(..., expose_weights=True)"
        )
    if args.save_weights:
        directory = os.path.dirname(os.path.abspath(args.save_weights))
        if not os.path.isdir(directory):
            raise DeviceTrainingError(f"--save_weights {args.save_weights}: the directory {directory} does not exist")
    print(f"runtime {trainer.runtime}, batch {trainer.batch_size}, exits {trainer.exits}")
    if args.load_weights:
        trainer.load_weights(args.load_weights)
    if test is not None:
        print("before:", trainer.evaluate(*test))
    try:
        trainer.fit(*train, epochs=args.epochs, seed=args.seed)
    except DeviceTrainingError as error:
        raise DeviceTrainingError(f"{args.data}: {error}") from None
    if test is not None:
        print("after:", trainer.evaluate(*test))
    if args.save_weights:
        trainer.save_weights(args.save_weights)
        print(f"saved weights to {args.save_weights}")


def _main(argv=None):
    parser = _ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="exported .tflite model")
    parser.add_argument("--data", required=True, help=".npz with x_train, y_train[, x_test, y_test]")
    parser.add_argument("--runtime", default="auto", choices=("auto",) + RUNTIMES)
    parser.add_argument("--description", default=None, help="JSON description of a micro step (default: <model stem>.json)")
    parser.add_argument("--epochs", type=_positive_int, default=1)
    parser.add_argument("--seed", type=_non_negative_int, default=0)
    parser.add_argument("--num_threads", type=_positive_int, default=None)
    parser.add_argument("--load_weights", default=None)
    parser.add_argument("--save_weights", default=None)
    parser.add_argument(
        "--verbose", action="store_true",
        help="show the runtime's own (C++) log lines, normally captured",
    )
    args = parser.parse_args(argv)
    try:
        _run(args)
    except (DeviceTrainingError, RuntimeUnavailableError, NotImplementedError, OSError) as error:
        sys.stdout.flush()
        print(f"{parser.prog}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
