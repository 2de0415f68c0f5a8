"""
Title: SPELA convolutional networks: canvas digits, Fashion-MNIST, CIFAR-10/100, SVHN
Author: keras_spela contributors
Date created: 2026/12/01
Last modified: 2026/12/01
Description: Convolution blocks and dense layers that each learn from their own
    local loss in one forward pass; test accuracy at every exit, epoch by epoch.
Accelerator: None for the canvas digits (seconds per epoch on a CPU); a GPU for
    the 32x32 colour sets.
"""

"""
## Introduction

SPELA ("Solo Pass Embedded Learning Algorithm", Somasundaram, Mishra and
Borthakur, "Learning Using a Single Forward Pass", TMLR 2025) trains a network
without a backward pass: every layer owns fixed class vectors, compares its
own output with the vector of the true class (a *local* loss), updates its own
weights from that loss in closed form with its input held constant, and passes
its output on. Nothing flows back to earlier layers, and every layer is an
*exit* that can predict on its own.

`keras_spela.SpelaConv2D(filters, kernel_size, ...)` is the convolutional SPELA
layer: convolution -> LeakyReLU -> max-pooling. Its default objective,
`"readout"`, average-pools its output to a 4x4 grid, reads the class scores
out of those features with a trainable linear read-out of its own, and learns
from a local softmax cross-entropy: the best measured on real images.
`--objective pooled` scores the channel means against fixed class vectors
(cosines, softmax cross-entropy); `--objective projection` gives the paper's
(per-channel trainable projections, classes grouped onto a few vectors per
channel, `(1 - cos)^2`). Dense SPELA layers stack on top after a `Flatten`,
and everything trains in the same single pass.

This example trains such a network and prints the test accuracy at every exit
after every epoch:

- `--dataset digits_canvas` (the default, offline, seconds per epoch on a
  CPU): the 8x8 handwritten digits that ship with `keras_spela`, each pasted at
  a random offset on a 20x20 canvas (`keras_spela.datasets.load_canvas_digits`,
  1,437 training and 360 test images). A dense network sees the digit at a
  different place in every image; a convolution does not care. Network
  `SpelaConv2D(32, 5x5) -> SpelaConv2D(64, 3x3) -> Flatten -> SpelaDense(256)
  -> SpelaDense(34)`.
- `--dataset fashion_mnist` (offline where the files are on the machine):
  60,000 training and 10,000 test images of clothes, 28x28 grey, from
  `keras_spela.datasets.load_fashion_mnist` (the Debian package
  `dataset-fashion-mnist`, Keras' cache or `--data_dir`; otherwise Keras
  downloads them). Network: `SpelaConv2D(32, 3x3) -> SpelaConv2D(64, 3x3) ->
  Flatten -> SpelaDense(256) -> SpelaDense(34)`, every SPELA layer and
  `compile()` at the library's defaults: the 2-block CNN of
  `benchmarks/fashion_mnist.py`, which measured (seed 0, 12 epochs, batch 50)
  a best exit of 92.90 % (conv exits 88.97 and 91.89 %) against 91.24 % for a
  backprop CNN of the same widths (`benchmarks/results/fashion_mnist.txt`).
- `--dataset cifar10 | cifar100 | svhn_cropped`: 32x32 colour images from
  TensorFlow Datasets, kept as `(32, 32, 3)` floats in `[0, 1]` (not
  flattened). Network `SpelaConv2D(64, 5x5) -> SpelaConv2D(128, 3x3) ->
  SpelaConv2D(256, 3x3) -> Flatten -> SpelaDense(256) -> SpelaDense(34)`
  (`SpelaDense(512) -> SpelaDense(234)` for the 100 classes of CIFAR-100, whose
  regular simplex of class vectors needs 99 dimensions).

What was run here (a 2-core x86 CPU, no GPU, shared with other jobs):

```
python examples/cifar_svhn_cnn.py        # --dataset digits_canvas, 20 epochs
```

It prints (seed 0, batch 50) the test accuracy at every exit after every
epoch. `benchmarks/cnn_accuracy.py` measured the same network with the
`"pooled"` objective at a constant Adam 1e-2 over 5 seeds and 30 epochs: best
exit 98.2 ± 0.5 % (conv1 94.4 %, conv2 98.2 %), against 90.2 ± 0.5 % for a
backprop CNN of the same widths, 94.7 % for the paper's projection objective
and 40.8 % for a SPELA MLP (`benchmarks/results/cnn_accuracy.txt`).

The TensorFlow Datasets sets were NOT downloaded or run here (this machine
reaches package registries only), so no accuracy is claimed for them and the
wide default network (64-128-256) is untuned; the tests only train them for one
epoch on `tfds.testing.mock_data` images. A user with internet runs, from the
repository root:

```
bash tools/install.sh             # the "examples" extra: tensorflow-datasets, matplotlib
python examples/cifar_svhn_cnn.py --dataset fashion_mnist   # no download with the Debian package
python examples/cifar_svhn_cnn.py --dataset cifar10
python examples/cifar_svhn_cnn.py --dataset cifar100 --epochs 30
python examples/cifar_svhn_cnn.py --dataset svhn_cropped --data_dir ~/tensorflow_datasets
```

TFDS downloads and prepares each set on first use (CIFAR-10 about 160 MB,
CIFAR-100 160 MB, SVHN cropped 1.5 GB) into `--data_dir` (default
`~/tensorflow_datasets`); without internet the script says in one line that
the set must be downloaded first. For reference only (a different network and
objective): the authors' CNN notebook reached conv exits of 41-49 % and 65 %
after a SPELA MLP head on CIFAR-10 (64x64 resized images, 128-kernel 5x5
blocks).
"""

"""
## Setup
"""

import contextlib
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np

from example_flags import check_flags  # absl only: the flags are checked first
from example_flags import parse_flags
from example_flags import require_positive

TFDS_DATASETS = ("cifar10", "cifar100", "svhn_cropped")
DATASETS = ("digits_canvas", "fashion_mnist") + TFDS_DATASETS

# Default widths: the measured canvas-digits network, the Fashion-MNIST
# benchmark's convnet widths, and a wider one for the 32x32 colour sets (the
# last two not measured here).
DEFAULT_FILTERS = {"digits_canvas": "32,64", "fashion_mnist": "32,64"}
DEFAULT_FILTERS_TFDS = "64,128,256"
# digits_canvas: a 5x5 first block (its exit sees whole strokes), 3x3 after it.
DEFAULT_KERNELS = {"digits_canvas": "5,3", "fashion_mnist": "3,3"}
DEFAULT_KERNELS_TFDS = "5,3,3"
DEFAULT_DENSE = {"cifar100": "512,234"}
DEFAULT_DENSE_OTHER = "256,34"

# For tests only: when this environment variable holds a positive integer N,
# TensorFlow Datasets is replaced by `tfds.testing.mock_data(num_examples=N)`
# (random images of the right shapes, nothing is downloaded).
MOCK_TFDS_ENV = "KERAS_SPELA_EXAMPLE_MOCK_TFDS"

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "dataset",
    "digits_canvas",
    DATASETS,
    "digits_canvas: the embedded digits on a 20x20 canvas (offline); fashion_mnist: "
    "the files of the Debian package, Keras' cache or --data_dir (else downloaded by "
    "Keras); the others come from TensorFlow Datasets (downloaded on first use).",
)
flags.DEFINE_integer("epochs", 20, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 50, "Batch size.", lower_bound=1)
flags.DEFINE_float(
    "learning_rate",
    1e-2,
    "Adam learning rate of every SPELA layer, annealed by a cosine over the epochs "
    "(the library's default compile()).",
)
require_positive("learning_rate")
flags.DEFINE_string(
    "filters",
    None,
    "Comma-separated filters of the SpelaConv2D blocks ('same', 2x2 max-pool); "
    f"default {DEFAULT_FILTERS['digits_canvas']} for digits_canvas and fashion_mnist, "
    f"{DEFAULT_FILTERS_TFDS} for the TFDS sets.",
)
flags.DEFINE_string(
    "kernel_sizes",
    None,
    "Comma-separated kernel sizes of the SpelaConv2D blocks, one per block; default "
    f"{DEFAULT_KERNELS['digits_canvas']} for digits_canvas, "
    f"{DEFAULT_KERNELS['fashion_mnist']} for fashion_mnist, {DEFAULT_KERNELS_TFDS} for "
    "the TFDS sets.",
)
flags.DEFINE_enum(
    "objective",
    "readout",
    ("readout", "pooled", "projection"),
    "The conv blocks' local objective: readout (the library's default: grid-pooled "
    "features, a trainable read-out, local cross-entropy), pooled (channel means vs "
    "class vectors) or projection (the paper's per-channel projections and class groups).",
)
flags.DEFINE_string(
    "dense",
    None,
    "Comma-separated units of the SpelaDense layers after Flatten; default "
    f"{DEFAULT_DENSE['cifar100']} for cifar100, else {DEFAULT_DENSE_OTHER}.",
)
flags.DEFINE_integer(
    "seed", 0, "Seed of the initial weights, class vectors and shuffling.", lower_bound=0
)
flags.DEFINE_string(
    "data_dir",
    None,
    "TFDS data directory (default: TFDS's own), or a directory with Fashion-MNIST's "
    "four .gz files (looked in first).",
)
flags.DEFINE_string(
    "plot",
    "spela_cnn_{dataset}.png",
    "Where to save the plot of per-exit test accuracy ('' for none); "
    "{dataset} is replaced by the dataset name.",
)
flags.DEFINE_integer(
    "max_examples",
    0,
    "Use only the first N training and N test examples (smoke runs); 0 = all.",
    lower_bound=0,
)
flags.DEFINE_bool(
    "verbose",
    False,
    "Show TensorFlow's own log lines (captured by default).",
)


def widths(text, name):
    """Comma-separated positive integers of flag `name`; one error line if not."""
    try:
        values = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SystemExit(
            f"error: --{name} must be comma-separated positive integers, received {text!r}"
        )
    return values


def network_widths():
    """The conv blocks' filters and kernel sizes and the dense units, from the
    flags or the dataset's defaults; one error line if they do not fit together."""
    filters = widths(
        FLAGS.filters or DEFAULT_FILTERS.get(FLAGS.dataset, DEFAULT_FILTERS_TFDS), "filters"
    )
    dense = widths(FLAGS.dense or DEFAULT_DENSE.get(FLAGS.dataset, DEFAULT_DENSE_OTHER), "dense")
    kernel_sizes = widths(
        FLAGS.kernel_sizes or DEFAULT_KERNELS.get(FLAGS.dataset, DEFAULT_KERNELS_TFDS),
        "kernel_sizes",
    )
    if len(kernel_sizes) != len(filters):
        raise SystemExit(
            f"error: --kernel_sizes has {len(kernel_sizes)} values for {len(filters)} conv "
            f"blocks (--filters {','.join(map(str, filters))}): give one per block."
        )
    return filters, kernel_sizes, dense


check_flags(__name__, network_widths)  # a bad flag ends here, before TensorFlow is imported

from example_setup import keras  # TensorFlow, Keras and keras_spela, quietly
from example_setup import keras_spela

from keras_spela import SpelaConv2D
from keras_spela import SpelaDense
from keras_spela import SpelaModel


"""
## Data

`keras_spela.datasets.load_canvas_digits()` returns numpy arrays of shape
`(N, 20, 20, 1)`, `keras_spela.datasets.load_fashion_mnist(normalize=True,
channel_axis=True)` float32 images `(N, 28, 28, 1)` in `[0, 1]`. For the TFDS sets, `keras_spela.datasets.load_tfds(...,
flatten=False)` gives a batched `tf.data.Dataset` of `(32, 32, 3)` float32
images in `[0, 1]` and int32 labels (CIFAR-100: its 100 fine labels),
reshuffled every epoch; the test split is read into memory with
`load_tfds_numpy`. `dataset_spec(name)` tells the image shape and number of
classes without a download.
"""


def mock_tfds_examples():
    """N from `$KERAS_SPELA_EXAMPLE_MOCK_TFDS` (tests only), else 0."""
    value = os.environ.get(MOCK_TFDS_ENV, "").strip()
    return int(value) if value else 0


def tfds_mock():
    """For tests only: `tfds.testing.mock_data` when `$KERAS_SPELA_EXAMPLE_MOCK_TFDS`
    is set and a TFDS set is asked for, else a context that does nothing."""
    num_mock = mock_tfds_examples()
    if num_mock <= 0 or FLAGS.dataset not in TFDS_DATASETS:
        return contextlib.nullcontext()
    import tensorflow_datasets as tfds

    print(f"(tests) TensorFlow Datasets mocked: {num_mock} random examples per split")
    # The mock's own deprecation warnings are noise.
    logging.set_verbosity(logging.ERROR)
    # USE_CODE builds the dataset info from the builder class: no metadata
    # file is read and nothing is downloaded.
    return tfds.testing.mock_data(num_examples=num_mock, policy=tfds.testing.MockPolicy.USE_CODE)


def split(name, max_examples):
    """A TFDS split string, cut to the first `max_examples` when asked."""
    return f"{name}[:{max_examples}]" if max_examples > 0 else name


def load_tfds_data():
    spec = keras_spela.datasets.dataset_spec(FLAGS.dataset)
    if not FLAGS["verbosity"].present:
        # TFDS warns of every data directory it does not find; a missing set
        # is load_tfds' one error line.
        logging.set_verbosity(logging.ERROR)
    train = keras_spela.datasets.load_tfds(
        FLAGS.dataset,
        split=split("train", FLAGS.max_examples),
        batch_size=FLAGS.batch_size,
        data_dir=FLAGS.data_dir,
        flatten=False,
        shuffle=True,
        seed=FLAGS.seed,
    )
    test = keras_spela.datasets.load_tfds_numpy(
        FLAGS.dataset,
        split=split("test", FLAGS.max_examples),
        data_dir=FLAGS.data_dir,
        flatten=False,
    )
    return train, test, spec.image_shape, spec.num_classes


def load_data():
    """Returns `(train, test, image_shape, num_classes)`.

    `train` is a pair of numpy arrays or a batched `tf.data.Dataset`; `test`
    is a pair of numpy arrays.
    """
    if FLAGS.dataset in TFDS_DATASETS:
        return load_tfds_data()
    if FLAGS.dataset == "fashion_mnist":
        (x_train, y_train), (x_test, y_test) = keras_spela.datasets.load_fashion_mnist(
            FLAGS.data_dir, normalize=True, channel_axis=True
        )
    else:
        (x_train, y_train), (x_test, y_test) = keras_spela.datasets.load_canvas_digits()
    if FLAGS.max_examples > 0:
        x_train, y_train = x_train[: FLAGS.max_examples], y_train[: FLAGS.max_examples]
        x_test, y_test = x_test[: FLAGS.max_examples], y_test[: FLAGS.max_examples]
    return (x_train, y_train), (x_test, y_test), x_train.shape[1:], 10


"""
## Model

Each `SpelaConv2D` block is a convolution ('same' padding; 5x5 first, then
3x3), LeakyReLU(0.01) and 2x2 max-pooling, with the library's default local
loss and class vectors. After `Flatten`, dense SPELA layers finish the stack.
`compile` needs no loss (each layer has its own); Adam(1e-2), annealed by a
cosine over each `fit`'s epochs, is the library's default.
"""


def make_model(image_shape, num_classes, filters, kernel_sizes, dense):
    layers = [keras.Input(tuple(image_shape))]
    for k, (width, size) in enumerate(zip(filters, kernel_sizes)):
        layers.append(
            SpelaConv2D(width, size, padding="same", objective=FLAGS.objective, name=f"conv{k + 1}")
        )
    layers.append(keras.layers.Flatten())
    for k, units in enumerate(dense):
        layers.append(SpelaDense(units, name=f"d{k + 1}"))
    model = SpelaModel(layers, num_classes=num_classes)
    if FLAGS["learning_rate"].present:
        model.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate), anneal=True)
    else:
        model.compile()  # the library's default: Adam(1e-2), cosine-annealed
    return model


def describe(model, image_shape):
    """One line: every layer's output shape (without the batch axis)."""
    shape = (None,) + tuple(image_shape)
    parts = [f"input {tuple(image_shape)}"]
    for layer in model.stack:
        shape = tuple(layer.compute_output_shape(shape))
        parts.append(f"{layer.name} {shape[1:]}")
    return " -> ".join(parts)


"""
## The accuracy at every exit, every epoch

With `validation_data`, `fit` logs `val_<layer>_accuracy` for every SPELA
layer; a small callback prints them after every epoch.
"""


class ExitAccuracyPrinter(keras.callbacks.Callback):
    def __init__(self, exit_names):
        super().__init__()
        self.exit_names = exit_names

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        exits = " | ".join(
            f"{name} {100 * logs[f'val_{name}_accuracy']:.2f}%" for name in self.exit_names
        )
        print(
            f"epoch {epoch + 1:3d}/{self.params['epochs']} - train loss "
            f"{logs['loss']:.4f} - test accuracy: {exits}",
            flush=True,
        )


"""
## Plot
"""


def plot(history, exit_names, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history[f"val_{exit_names[0]}_accuracy"]) + 1)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k, name in enumerate(exit_names):
        accuracy = 100 * np.asarray(history[f"val_{name}_accuracy"])
        ax.plot(
            epochs, accuracy, marker="." if len(epochs) < 30 else None, label=f"exit {k} ({name})"
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved the plot to {path}")


"""
## Results

The final accuracy at every exit, and the best one. A cheaper model that ends
at an earlier exit is `model.truncated(name)` (shared weights).
"""


def report(history, exit_names):
    final = {name: 100 * history[f"val_{name}_accuracy"][-1] for name in exit_names}
    for k, name in enumerate(exit_names):
        print(f"final test accuracy, exit {k} ({name}): {final[name]:.2f}%")
    best = max(final, key=final.get)
    print(f"best exit at the last epoch: {best} ({final[best]:.2f}%)")


"""
## Train

`fit` takes the numpy arrays (shuffled every epoch) or the tf.data pipeline
as it is (already batched and reshuffled).
"""


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO logs are noise here
    try:
        with tfds_mock():  # only under the tests' environment variable
            train_and_report()
    except keras_spela.datasets.DatasetError as error:  # not here, not downloadable
        raise SystemExit(f"error: {error}") from None


def train_and_report():
    keras.utils.set_random_seed(FLAGS.seed)
    train, test, image_shape, num_classes = load_data()
    filters, kernel_sizes, dense = network_widths()
    model = make_model(image_shape, num_classes, filters, kernel_sizes, dense)
    exit_names = [layer.name for layer in model.exit_layers]
    architecture = (
        f"conv {'-'.join(map(str, filters))} ({'-'.join(f'{k}x{k}' for k in kernel_sizes)}, "
        f"{FLAGS.objective}), dense {'-'.join(map(str, dense))}"
    )
    print(
        f"{FLAGS.dataset}: images {tuple(image_shape)} in [0, 1], {num_classes} classes, "
        f"test x {test[0].shape}"
        + (
            f", train x {train[0].shape}"
            if isinstance(train, tuple)
            else f", train batches {tuple(train.element_spec[0].shape)} (tf.data)"
        )
    )
    print(f"SPELA CNN ({architecture}): {describe(model, image_shape)}")
    print(
        f"Adam {FLAGS.learning_rate:g}, {FLAGS.epochs} epochs, batch {FLAGS.batch_size}, "
        f"seed {FLAGS.seed}"
    )
    if isinstance(train, tuple):  # numpy arrays
        fit_data = dict(x=train[0], y=train[1], batch_size=FLAGS.batch_size, shuffle=True)
    else:  # a tf.data.Dataset, already batched and reshuffled every epoch
        fit_data = dict(x=train, shuffle=False)
    history = model.fit(
        **fit_data,
        epochs=FLAGS.epochs,
        validation_data=test,
        validation_batch_size=500,
        callbacks=[ExitAccuracyPrinter(exit_names)],
        verbose=0,
    )
    report(history.history, exit_names)
    if FLAGS.plot:
        title = f"SPELA CNN ({architecture}) on {FLAGS.dataset}"
        if FLAGS.dataset in TFDS_DATASETS and mock_tfds_examples() > 0:
            title += " (mock data)"
        plot(history.history, exit_names, FLAGS.plot.format(dataset=FLAGS.dataset), title)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
