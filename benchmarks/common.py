"""Shared helpers of the keras_spela benchmarks (not a benchmark itself).

- `EpochTimer`: a Keras callback that records each epoch's training seconds.
- `EpochRecorder`: a Keras callback that records, after every epoch, the test
  accuracy at every exit (every SpelaDense layer of a SpelaModel, or the
  output of a plain Keras model) and the epoch's training seconds (the
  evaluation is not counted).
- `run_trial`: seeds, builds, fits and records one model.
- `backprop_mlp`: the Keras backprop baseline (Dense layers of the same widths
  plus a Dense softmax head, sparse categorical cross-entropy).
- timing helpers (`interleaved`, `median`, `load_average`), mean +- std formatting, plain-text
  tables, and `Tee` (print to the terminal and to a results file).

Import this module before keras/tensorflow: it sets KERAS_BACKEND and quiets
TensorFlow's C++ logging.
"""

import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# The benchmarks run from a checkout: make `import keras_spela` find it.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import keras_spela  # noqa: E402
from keras_spela import SpelaModel  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# The backprop baseline uses the same activation as SpelaDense's default
# (leaky ReLU, slope 0.01), so the two differ only by the learning rule.
BACKPROP_NEGATIVE_SLOPE = 0.01


def load_digits():
    """The project's fixed digits split: 1437 train / 360 test, /16, 64 features."""
    return keras_spela.datasets.load_digits()


class EpochTimer(keras.callbacks.Callback):
    """Training seconds of every epoch, in `epoch_seconds`.

    Measured from `on_epoch_begin` to `on_epoch_end`: Keras reads the epoch's
    metric results before `on_epoch_end`, so all the epoch's steps have
    finished by then.
    """

    def __init__(self):
        super().__init__()
        self.epoch_seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._start)


def exit_scores_function(model):
    """A tf.function `x -> [scores at every exit]` (first exit first) of a
    SpelaModel, or `[predictions]` of a Keras model."""
    if isinstance(model, SpelaModel):
        # dict order is the stack order: first exit first.
        return tf.function(lambda x: list(model.exit_scores(x).values()))
    return tf.function(lambda x: [model(x, training=False)])


def exit_accuracies(scores_function, x, y, batch_size=None):
    """Accuracy (fraction) at every exit of `scores_function(x)` against `y`,
    scoring `batch_size` rows at a time (None: all at once)."""
    batch_size = batch_size or len(y)
    correct = 0
    for start in range(0, len(y), batch_size):
        scores = scores_function(x[start : start + batch_size])
        correct = correct + np.array(
            [np.sum(np.argmax(s.numpy(), -1) == y[start : start + batch_size]) for s in scores]
        )
    return [float(c) / len(y) for c in correct]


def run_child(script, child, flags, what):
    """Runs `script --child <child> <flags>` in a fresh Python process and
    returns the JSON object of its last output line; RuntimeError naming
    `what` (and the child's last stderr line) when it fails."""
    command = [sys.executable, os.path.abspath(script), "--child", child] + list(flags)
    result = subprocess.run(command, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        error = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what}: {error}")
    return json.loads(lines[-1])


class EpochRecorder(EpochTimer):
    """Test accuracy at every exit and training seconds, after every epoch.

    Attributes (after `fit`):
        accuracy: list over epochs of lists over exits (fractions in [0, 1]).
        epoch_seconds: list over epochs of the training time (see
            `EpochTimer`; the test evaluation is not counted).
    """

    def __init__(self, x_test, y_test, eval_batch_size=None):
        super().__init__()
        self.x_test = tf.constant(x_test)
        self.y_test = np.asarray(y_test)
        self.eval_batch_size = eval_batch_size
        self.accuracy = []
        self._scores = None

    def set_model(self, model):
        super().set_model(model)
        self._scores = exit_scores_function(model)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.accuracy.append(
            exit_accuracies(self._scores, self.x_test, self.y_test, self.eval_batch_size)
        )


def run_trial(build, seed, data, epochs, batch_size, eval_batch_size=None):
    """Builds (after seeding) and fits one model, recording every epoch.

    Args:
        build: a function returning a compiled model.
        seed: passed to `keras.utils.set_random_seed` before `build`.
        data: `((x_train, y_train), (x_test, y_test))`.
        epochs, batch_size: as for `fit`.
        eval_batch_size: test rows scored at a time after each epoch (None:
            all at once).

    Returns:
        `(accuracy, epoch_seconds)`: an array `(epochs, exits)` of test
        accuracy and an array `(epochs,)` of training seconds per epoch.
    """
    (x_train, y_train), (x_test, y_test) = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build()
    recorder = EpochRecorder(x_test, y_test, eval_batch_size)
    model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=[recorder],
    )
    return np.array(recorder.accuracy), np.array(recorder.epoch_seconds)


def backprop_mlp(input_dim, widths, num_classes, optimizer=None, jit_compile=False):
    """A Keras backprop MLP: Dense(w, leaky ReLU) for each width, then a
    Dense(num_classes) softmax head; sparse categorical cross-entropy,
    accuracy metric, Adam(1e-3) unless `optimizer` is given."""
    layers = [keras.Input((input_dim,))]
    for width in widths:
        layers.append(
            keras.layers.Dense(
                width,
                activation=lambda z: keras.activations.leaky_relu(
                    z, negative_slope=BACKPROP_NEGATIVE_SLOPE
                ),
            )
        )
    layers.append(keras.layers.Dense(num_classes, activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def best_exit_summary(accuracies, epochs_at):
    """Best-exit accuracy after given epochs and best within all epochs.

    Args:
        accuracies: list over seeds of arrays `(epochs, exits)`.
        epochs_at: epochs (1-based) to report, e.g. (1, 5).

    Returns:
        A dict: `{"after_<e>": per-seed values, "best": per-seed best over
        all epochs and exits, "final": per-seed best exit at the last epoch}`.
    """
    summary = {}
    for e in epochs_at:
        summary[f"after_{e}"] = [float(a[e - 1].max()) for a in accuracies]
    summary["best"] = [float(a.max()) for a in accuracies]
    summary["final"] = [float(a[-1].max()) for a in accuracies]
    return summary


def print_best_exit_table(accuracies, epochs, seeds):
    """Prints the best-exit table (after 1 and 5 epochs, best within all,
    final) of `{configuration: [per-seed (epochs, exits) arrays]}`.

    Returns:
        `(summaries, epochs_at)`: `{configuration: best_exit_summary}` and the
        epochs reported.
    """
    epochs_at = [e for e in (1, 5) if e <= epochs]
    summaries = {name: best_exit_summary(accs, epochs_at) for name, accs in accuracies.items()}
    headers = (
        ["configuration"]
        + [f"after {e} ep" for e in epochs_at]
        + [f"best within {epochs}", f"final (ep {epochs})"]
    )
    rows = [
        [name]
        + [mean_std(s[f"after_{e}"]) for e in epochs_at]
        + [mean_std(s["best"]), mean_std(s["final"])]
        for name, s in summaries.items()
    ]
    print()
    print(
        format_table(
            headers, rows, title=f"Best-exit test accuracy %, mean ± std over {seeds} seeds"
        )
    )
    return summaries, epochs_at


def mean_std(values, scale=100.0, digits=1):
    """'mean ± std' of values (population std over seeds), scaled."""
    values = np.asarray(values, float) * scale
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def median(values):
    return float(statistics.median(values))


def interleaved(functions, repeats):
    """Runs `functions` (a dict name -> no-arg callable) round-robin
    `repeats` times; returns `{name: [seconds per call]}`."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def format_table(headers, rows, title=None):
    """A plain-text table with columns padded to their widest cell."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = "-+-".join("-" * w for w in widths)
    text = []
    if title:
        text.append(title)
    text.append(" | ".join(h.ljust(w) for h, w in zip(cells[0], widths)))
    text.append(line)
    for row in cells[1:]:
        text.append(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
    return "\n".join(text)


def load_average():
    """The 1, 5 and 15 minute load averages, as '1.23, 0.98, 0.75'."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def environment_line():
    return (
        f"python {sys.version.split()[0]}, tensorflow {tf.__version__}, "
        f"keras {keras.__version__}, keras_spela {keras_spela.__version__}, "
        f"numpy {np.__version__}, cpu cores visible: {os.cpu_count()}"
    )


class Tee:
    """Context manager: everything printed also goes to `path` (if given)."""

    def __init__(self, path):
        self.path = path
        self._file = None
        self._stdout = None

    def __enter__(self):
        if self.path:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._file = open(self.path, "w")
            self._stdout = sys.stdout
            sys.stdout = self
        return self

    def write(self, text):
        self._stdout.write(text)
        self._file.write(text)

    def flush(self):
        self._stdout.flush()
        self._file.flush()

    def __exit__(self, *exc):
        if self._file:
            sys.stdout = self._stdout
            self._file.close()
        return False


def results_path(name, quick):
    """`benchmarks/results/<name>[_quick].<ext>` (name includes the extension)."""
    stem, ext = os.path.splitext(name)
    return os.path.join(RESULTS_DIR, f"{stem}{'_quick' if quick else ''}{ext}")
