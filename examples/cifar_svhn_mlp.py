"""
Title: SPELA MLPs on CIFAR-10, CIFAR-100 and SVHN
Author: keras_spela contributors
Date created: 2026/11/25
Last modified: 2026/11/25
Description: The paper's colour-image MLPs (3072-1000-34 and 3072-800-234),
    trained layer-locally in one forward pass, with the accuracy of every exit.
Accelerator: None (CPU works; a GPU makes the 100 epochs faster)
"""

"""
## Introduction

SPELA (Somasundaram, Mishra and Borthakur, "Learning Using a Single Forward
Pass", TMLR 2025) trains every layer from its own local loss: the cosine between
the layer's output and a fixed unit vector of the true class. There is no
backward pass, and every layer is an exit that predicts on its own (the class
whose vector is closest to the layer's output).

The paper also trains plain MLPs on flattened colour images, where any MLP is
weak. It reports these test accuracies at the last exit:

| dataset | network | SPELA(O), paper | backprop, paper |
|---|---|---|---|
| CIFAR-10 | 3072-1000-34 | 50.24 % | 55.27 % |
| CIFAR-100 | 3072-800-234 | 32.66 % | 27.58 % |
| SVHN (cropped digits) | 3072-1000-34 | 63.11 % | - |

CIFAR-100 has 100 classes, so its last layer has 234 units: the 100 class
vectors of a layer form a regular simplex, which needs at least 99 dimensions,
and the extra room lets near-non-negative (LeakyReLU) outputs reach them.

`--recipe paper` is the authors' MLP code (from their MNIST notebook, applied
here unchanged): local loss `log(2 - cos)`, LeakyReLU(0.001), `he_uniform`
initialisation, SGD with learning rate 2.5 lowered by 0.1 every 10 epochs,
batches of 50. `--recipe default` uses `keras_spela`'s defaults (a softmax
cross-entropy over the cosines to all class vectors, Adam(1e-2)).

```
python examples/cifar_svhn_mlp.py --dataset cifar10
python examples/cifar_svhn_mlp.py --dataset cifar100 --epochs 50
python examples/cifar_svhn_mlp.py --dataset svhn_cropped --recipe default
```

The data comes from TensorFlow Datasets (downloaded on first use, or read from
`--data_dir`).
"""

"""
## Setup
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np

try:
    import keras_spela
except ImportError:  # Running from a source checkout without installing.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    import keras_spela

from keras_spela import SpelaDense
from keras_spela import SpelaModel

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "dataset", "cifar10", ["cifar10", "cifar100", "svhn_cropped"], "TFDS dataset."
)
flags.DEFINE_integer("epochs", 100, "Training epochs.")
flags.DEFINE_integer("batch_size", 50, "Batch size (the paper: 50).")
flags.DEFINE_integer(
    "hidden", None, "Units of the hidden SPELA layer (default: 800 for cifar100, else 1000)."
)
flags.DEFINE_integer(
    "last", None, "Units of the last SPELA layer (default: 234 for cifar100, else 34)."
)
flags.DEFINE_enum(
    "recipe", "paper", ["paper", "default"],
    "'paper': log(2 - cos), LeakyReLU(0.001), SGD(2.5) minus 0.1 every 10 "
    "epochs. 'default': keras_spela's defaults (softmax-cosine loss, Adam(1e-2)).",
)
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's own).")
flags.DEFINE_string(
    "plot", "spela_mlp_{dataset}.png",
    "Where to save the plot of per-exit test accuracy ('' for none); "
    "{dataset} is replaced by the dataset name.",
)
flags.DEFINE_integer("seed", 0, "Seed of the initial weights, class vectors and shuffling.")
flags.DEFINE_integer(
    "max_examples", 0,
    "Use only the first N training and N test examples (smoke runs); 0 = all.",
)

# The paper's layer widths and last-exit test accuracy.
PAPER = {
    "cifar10": dict(hidden=1000, last=34, accuracy=50.24),
    "cifar100": dict(hidden=800, last=234, accuracy=32.66),
    "svhn_cropped": dict(hidden=1000, last=34, accuracy=63.11),
}

"""
## Data

`keras_spela.datasets.load_tfds` gives batches of flattened float32 images in
`[0, 1]` (3072 features for 32x32x3) and int32 labels; CIFAR-100 uses its 100
fine labels. The test split is small enough to hold in memory as numpy arrays.
"""


def split(name, max_examples):
    """A TFDS split string, cut to the first `max_examples` when asked."""
    return f"{name}[:{max_examples}]" if max_examples > 0 else name


def load_data():
    spec = keras_spela.datasets.dataset_spec(FLAGS.dataset)
    train = keras_spela.datasets.load_tfds(
        FLAGS.dataset,
        split=split("train", FLAGS.max_examples),
        batch_size=FLAGS.batch_size,
        data_dir=FLAGS.data_dir,
        shuffle=True,
        seed=FLAGS.seed,
    )
    test = keras_spela.datasets.load_tfds_numpy(
        FLAGS.dataset, split=split("test", FLAGS.max_examples), data_dir=FLAGS.data_dir
    )
    return train, test, spec


"""
## Model

Two `SpelaDense` layers. The class vectors of each layer default to the
minimum-Coulomb-energy configuration, which for `num_classes <= units + 1` is
the regular simplex under a random rotation (built in closed form, so even the
100 vectors of CIFAR-100 cost nothing).
"""


def make_model(spec, hidden, last):
    layer_args = {}
    if FLAGS.recipe == "paper":
        layer_args = dict(local_loss="log_cosine", negative_slope=0.001)
    model = SpelaModel(
        [
            keras.Input((spec.flat_dim,)),
            SpelaDense(hidden, name="hidden", **layer_args),
            SpelaDense(last, name="last", **layer_args),
        ],
        num_classes=spec.num_classes,
    )
    if FLAGS.recipe == "paper":
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=2.5))
    else:
        model.compile()  # Adam(1e-2)
    return model


def paper_schedule(epoch, learning_rate):
    """The authors' schedule: 2.5, minus 0.1 every 10 epochs (kept >= 0.1)."""
    del learning_rate
    return max(2.5 - 0.1 * (epoch // 10), 0.1)


"""
## Accuracy at every exit, every epoch

With `validation_data`, `fit` logs `val_<layer>_accuracy` for every SPELA
layer; a callback prints them.
"""


class ExitAccuracyPrinter(keras.callbacks.Callback):
    def __init__(self, exit_names):
        super().__init__()
        self.exit_names = exit_names

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        exits = " | ".join(
            f"{name} {100 * logs[f'val_{name}_accuracy']:.2f}%" for name in self.exit_names
        )
        print(
            f"epoch {epoch + 1:3d}/{self.params['epochs']} - lr {rate:.3g} - "
            f"train loss {logs['loss']:.4f} - test accuracy: {exits}",
            flush=True,
        )


def plot(history, exit_names, path, architecture):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history[f"val_{exit_names[0]}_accuracy"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, name in enumerate(exit_names):
        accuracy = 100 * np.asarray(history[f"val_{name}_accuracy"])
        ax.plot(epochs, accuracy, marker="." if len(epochs) < 30 else None,
                label=f"exit {k} ({name})")
    if FLAGS.recipe == "paper":
        paper = PAPER[FLAGS.dataset]["accuracy"]
        ax.axhline(paper, color="grey", linestyle="--", label=f"paper, last exit ({paper}%)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"SPELA {architecture} on {FLAGS.dataset} (recipe: {FLAGS.recipe})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved the plot to {path}")


"""
## Train and report
"""


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO logs are noise here
    keras.utils.set_random_seed(FLAGS.seed)
    train, test, spec = load_data()
    hidden = FLAGS.hidden or PAPER[FLAGS.dataset]["hidden"]
    last = FLAGS.last or PAPER[FLAGS.dataset]["last"]
    architecture = f"{spec.flat_dim}-{hidden}-{last}"
    model = make_model(spec, hidden, last)
    exit_names = [layer.name for layer in model.exit_layers]
    print(
        f"{FLAGS.dataset}: {architecture} SPELA MLP, {spec.num_classes} classes, "
        f"recipe {FLAGS.recipe}, {FLAGS.epochs} epochs, batch {FLAGS.batch_size}"
    )
    callbacks = [ExitAccuracyPrinter(exit_names)]
    if FLAGS.recipe == "paper":
        callbacks.append(keras.callbacks.LearningRateScheduler(paper_schedule))
    history = model.fit(
        train,  # batched, reshuffled every epoch by load_tfds
        epochs=FLAGS.epochs,
        shuffle=False,
        validation_data=test,
        validation_batch_size=1000,
        callbacks=callbacks,
        verbose=0,
    )
    final = model.evaluate(*test, batch_size=1000, verbose=0, return_dict=True)
    for k, name in enumerate(exit_names):
        accuracy = 100 * final[f"{name}_accuracy"]
        print(f"final test accuracy, exit {k} ({name}): {accuracy:.2f}%")
    if FLAGS.recipe == "paper":
        print(f"paper, last exit: {PAPER[FLAGS.dataset]['accuracy']:.2f}%")
    if FLAGS.plot:
        plot(history.history, exit_names, FLAGS.plot.format(dataset=FLAGS.dataset), architecture)


if __name__ == "__main__":
    app.run(main)
