"""Device-side trainer for exported keras_spela models. Imports no TensorFlow.

Runs the `train` / `infer` / `get_weights` / `set_weights` signatures of a
model written by `keras_spela.export_tflite` on LiteRT (`ai-edge-litert`,
first choice) or `tflite-runtime` (fallback), or the single-graph train step
written by `keras_spela.export_tflite_micro` on TFLite Micro (`tflite-micro`).

As a script:

    python export/device_trainer.py --model spela.tflite --data data.npz \\
        --epochs 5 --save_weights weights.npz

where `data.npz` holds `x_train`, `y_train` and optionally `x_test`, `y_test`.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

RUNTIMES = ("litert", "tflite_runtime", "micro")


class DeviceTrainingError(ValueError):
    """A batch or a weight set that the device model must not learn from."""


def load_interpreter_class(runtime="auto"):
    """The `Interpreter` class of LiteRT, or of tflite-runtime as a fallback."""
    if runtime in ("auto", "litert"):
        try:
            from ai_edge_litert.interpreter import Interpreter

            return "litert", Interpreter
        except ImportError:
            if runtime == "litert":
                raise
    from tflite_runtime.interpreter import Interpreter

    return "tflite_runtime", Interpreter


class DeviceTrainer:
    """Trains and runs an exported SPELA model on a device runtime.

    Args:
        model_path: a `.tflite` file from `export_tflite` (LiteRT or
            tflite-runtime) or from `export_tflite_micro` (TFLite Micro; its
            `.json` description must sit beside it).
        runtime: `"auto"` (LiteRT, else tflite-runtime; TFLite Micro when the
            model has a micro description), `"litert"`, `"tflite_runtime"`
            or `"micro"`.
        num_threads: interpreter threads (LiteRT / tflite-runtime).

    Example:

    ```python
    trainer = DeviceTrainer("spela.tflite")
    trainer.fit(x, y, epochs=3)
    print(trainer.evaluate(x_test, y_test))
    trainer.save_weights("personal.npz")
    ```
    """

    def __init__(self, model_path, runtime="auto", num_threads=None):
        if runtime not in ("auto",) + RUNTIMES:
            raise ValueError(f"runtime must be 'auto' or one of {RUNTIMES}, received {runtime!r}.")
        description = os.path.splitext(model_path)[0] + ".json"
        if runtime == "auto" and os.path.exists(description):
            runtime = "micro"
        self.model_path = model_path
        if runtime == "micro":
            self._backend = _MicroBackend(model_path, description)
        else:
            self._backend = _SignatureBackend(model_path, runtime, num_threads)
        self.runtime = self._backend.runtime
        self.batch_size = self._backend.batch_size
        self.input_shape = self._backend.input_shape
        self.num_classes = self._backend.num_classes
        self.exits = self._backend.exits

    # ----------------------------------------------------------------- train
    def train_batch(self, x, y):
        """Learns from one batch of exactly `batch_size` examples.

        Returns:
            A dict of the model's losses (`loss`, `<layer>_loss`).

        Raises:
            DeviceTrainingError: for a wrong shape or dtype, a label outside
                `[0, num_classes)` or a NaN/inf value (checked before the
                model runs), or a batch the model itself rejected (its
                weights are then unchanged).
        """
        x, y = self._check_batch(x, y)
        outputs = self._backend.train(x, y)
        if int(outputs.pop("accepted")) != 1:
            raise DeviceTrainingError(
                "The device model rejected the batch (non-finite loss); its "
                "weights are unchanged."
            )
        return {k: float(v) for k, v in outputs.items() if k.endswith("loss")}

    def fit(self, x, y, epochs=1, shuffle=True, seed=0, verbose=1):
        """Trains for `epochs` passes over `(x, y)` in batches of `batch_size`.

        The last `len(x) % batch_size` examples of each (shuffled) epoch are
        left out: the train signature has a static batch size.

        Returns:
            A dict `{"loss": [mean loss per epoch], ...}`.
        """
        x, y = self._check_arrays(x, y)
        if len(x) < self.batch_size:
            raise DeviceTrainingError(
                f"fit needs at least batch_size={self.batch_size} examples, "
                f"received {len(x)}."
            )
        rng = np.random.default_rng(seed)
        history = {}
        steps = len(x) // self.batch_size
        for epoch in range(epochs):
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            totals = {}
            start = time.perf_counter()
            for step in range(steps):
                index = order[step * self.batch_size : (step + 1) * self.batch_size]
                for key, value in self.train_batch(x[index], y[index]).items():
                    totals[key] = totals.get(key, 0.0) + value
            for key, value in totals.items():
                history.setdefault(key, []).append(value / steps)
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
        TFLite Micro models give the last exit only."""
        x = self._check_inputs(x)
        scores = self._backend.infer(x)
        if exit == "all":
            return scores
        if exit is None:
            return scores[self.exits[-1]]
        if isinstance(exit, str):
            if exit not in scores:
                raise ValueError(f"Unknown exit {exit!r}; the exits are {self.exits}.")
            return scores[exit]
        return scores[self.exits[exit]]

    def evaluate(self, x, y):
        """Accuracy at every available exit: `{"exit_<k>_accuracy": ...}`
        (TFLite Micro models give the last exit only)."""
        x, y = self._check_arrays(x, y)
        scores = self._backend.infer(x)
        return {
            f"{name}_accuracy": float(np.mean(np.argmax(s, axis=-1) == y))
            for name, s in scores.items()
        }

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
                f"{missing}, unknown {unknown}."
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
            values[name] = value
        self._backend.set_weights(values)

    def save_weights(self, path):
        """Writes every learned weight and optimizer state to an `.npz` file."""
        np.savez(path, **self.get_weights())

    def load_weights(self, path):
        """Restores weights written by `save_weights`."""
        with np.load(path) as data:
            self.set_weights({k: data[k] for k in data.files})

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
        if y.shape != (len(x),):
            raise DeviceTrainingError(
                f"Labels must have shape ({len(x)},), received {y.shape}."
            )
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise DeviceTrainingError(
                f"Labels must be in [0, {self.num_classes}), received values in "
                f"[{y.min()}, {y.max()}]."
            )
        return x, y.astype(np.int32)

    def _check_batch(self, x, y):
        x, y = self._check_arrays(x, y)
        if len(x) != self.batch_size:
            raise DeviceTrainingError(
                f"The train signature takes batches of exactly {self.batch_size} "
                f"examples, received {len(x)}."
            )
        return x, y


class _SignatureBackend:
    """LiteRT or tflite-runtime, through the model's signature runners."""

    def __init__(self, model_path, runtime, num_threads):
        self.runtime, interpreter_class = load_interpreter_class(runtime)
        self.interpreter = interpreter_class(model_path=model_path, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        needed = {"train", "infer", "get_weights", "set_weights"}
        if not needed <= set(signatures):
            raise ValueError(
                f"{model_path} lacks the signatures {sorted(needed - set(signatures))}; "
                "export it with keras_spela.export_tflite."
            )
        self._train = self.interpreter.get_signature_runner("train")
        self._infer = self.interpreter.get_signature_runner("infer")
        self._get = self.interpreter.get_signature_runner("get_weights")
        self._set = self.interpreter.get_signature_runner("set_weights")
        x_detail = self._train.get_input_details()["x"]
        self.batch_size = int(x_detail["shape"][0])
        self.input_shape = tuple(int(d) for d in x_detail["shape"][1:])
        self.exits = sorted(
            (n[: -len("_scores")] for n in signatures["infer"]["outputs"] if n.startswith("exit_")),
            key=lambda name: int(name.split("_")[1]),
        )
        probe = self._infer(x=np.zeros((1,) + self.input_shape, np.float32))
        self.num_classes = int(probe["scores"].shape[-1])

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


def _micro_arena_size(description):
    """The measured arena plus 1 KiB, or 64 MiB when it was not measured
    (exported without tflite-micro installed)."""
    measured = description.get("arena_bytes")
    return int(measured) + 1024 if measured else 64 * 1024 * 1024


class _MicroBackend:
    """TFLite Micro: one interpreter running the single-graph train step."""

    runtime = "micro"

    def __init__(self, model_path, description_path):
        from tflite_micro import runtime as micro_runtime

        with open(description_path) as f:
            self.description = json.load(f)
        with open(model_path, "rb") as f:
            data = f.read()
        self.interpreter = micro_runtime.Interpreter.from_bytes(
            data, arena_size=_micro_arena_size(self.description)
        )
        self.inputs = self.description["inputs"]
        self.outputs = self.description["outputs"]
        self.batch_size = int(self.description["batch_size"])
        self.input_shape = tuple(self.description["input_shape"])
        self.num_classes = int(self.description["num_classes"])
        self.exits = list(self.description["exits"])

    def train(self, x, y):
        return self._invoke(x, y)

    def _invoke(self, x, y):
        self.interpreter.set_input(x, self.inputs.index("x"))
        self.interpreter.set_input(y, self.inputs.index("y"))
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
        return {self.exits[-1]: np.concatenate(scores)}  # the last exit only

    def get_weights(self):
        names = self.description["weight_names"]
        if not all(name in self.outputs for name in names):
            raise ValueError(
                "This TFLite Micro model does not output its weights; export it "
                "with export_tflite_micro(..., expose_weights=True)."
            )
        probe = self.infer(np.zeros((1,) + self.input_shape, np.float32))
        del probe  # the step above ran with labels -1: weights unchanged
        return {
            name: np.array(self.interpreter.get_output(self.outputs.index(name)))
            for name in names
        }

    def set_weights(self, values):
        raise NotImplementedError(
            "TFLite Micro models keep their weights in the arena; re-export "
            "from the host to change them."
        )


def _main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="exported .tflite model")
    parser.add_argument("--data", required=True, help=".npz with x_train, y_train[, x_test, y_test]")
    parser.add_argument("--runtime", default="auto", choices=("auto",) + RUNTIMES)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load_weights", default=None)
    parser.add_argument("--save_weights", default=None)
    args = parser.parse_args(argv)
    trainer = DeviceTrainer(args.model, runtime=args.runtime)
    print(f"runtime {trainer.runtime}, batch {trainer.batch_size}, exits {trainer.exits}")
    if args.load_weights:
        trainer.load_weights(args.load_weights)
    with np.load(args.data) as data:
        arrays = {k: data[k] for k in data.files}
    if "x_test" in arrays:
        print("before:", trainer.evaluate(arrays["x_test"], arrays["y_test"]))
    trainer.fit(arrays["x_train"], arrays["y_train"], epochs=args.epochs, seed=args.seed)
    if "x_test" in arrays:
        print("after:", trainer.evaluate(arrays["x_test"], arrays["y_test"]))
    if args.save_weights:
        trainer.save_weights(args.save_weights)
        print(f"saved weights to {args.save_weights}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
