"""
Title: SPELA training on several workers (MultiWorkerMirroredStrategy)
Author: keras_spela contributors
Date created: 2026/12/02
Last modified: 2026/12/02
Description: Worker processes on localhost (TF_CONFIG) train one SpelaModel
    with keras_spela.training.multi_worker.fit_multi_worker and end at the weights of
    one process trained on the same global batches.
Accelerator: None
"""

"""
## Introduction

`tf.distribute.MultiWorkerMirroredStrategy` keeps a copy of the model on every
worker and all-reduces the updates, so each step trains on one *global* batch
split over the workers. Keras 3's `fit` fails under this strategy for every
model (keras-team/keras issue 20585), so `keras_spela.training.multi_worker` has its
own entry point, `fit_multi_worker(model, dataset, epochs, callbacks=...)`:
it runs the model's own SPELA train step through `strategy.run` over a
distributed dataset and returns a `History`.

Run without `--workers`, this script is the launcher: it starts
`--num_workers` worker processes of itself on free localhost ports, trains
the same model in its own process with `SpelaModel.fit` on the same global
batches, and prints the workers' lines and how far their final weights are
from the single process's. With `--workers` and `--task_index` it is one
worker of a cluster (start it once per host, same flags, its own index).

```
python examples/multi_worker.py
python examples/multi_worker.py --num_workers 3 --batch_size 60 --epochs 3
python examples/multi_worker.py --workers host0:2222,host1:2222 --task_index 0
```
"""

"""
## Setup
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile

from example_flags import check_flags  # absl only: the flags are checked first
from example_flags import parse_flags

from absl import app
from absl import flags
from absl import logging
import numpy as np


PROG = os.path.basename(__file__)

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_workers", 2, "Workers the launcher starts on localhost.", lower_bound=1)
flags.DEFINE_string(
    "workers",
    None,
    "Every worker's host:port, comma-separated (with --task_index: run one worker).",
)
flags.DEFINE_integer("task_index", None, "This worker's index in --workers.", lower_bound=0)
flags.DEFINE_integer("epochs", 5, "Epochs.", lower_bound=1)
flags.DEFINE_integer(
    "batch_size", 50, "Global batch size (a multiple of the number of workers).", lower_bound=1
)
flags.DEFINE_integer(
    "hidden", 256, "Units of the hidden SPELA layer (64-hidden-34).", lower_bound=1
)
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Adam(1e-2) or SGD(1.0).")
flags.DEFINE_integer("seed", 0, "Seed of the weights, class vectors and shuffling.", lower_bound=0)
flags.DEFINE_integer("timeout", 600, "Seconds the launcher waits for the workers.", lower_bound=1)
flags.DEFINE_string(
    "weights_out", None, "Where a worker writes its final weights (.npz; launcher use)."
)
flags.DEFINE_bool("verbose", False, "Show TensorFlow's log lines.")


check_flags(__name__)  # a bad flag ends here, before TensorFlow is imported

from example_setup import keras  # TensorFlow, Keras and keras_spela, quietly
from example_setup import keras_spela
from example_setup import tf

from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela.training.multi_worker import fit_multi_worker


class UsageError(Exception):
    """A mistake of the user: reported as one line, exit code 1."""


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


"""
## The model and the global batches

Every worker and the single process build the same model from the same seed
and the same dataset of global batches: shuffled with a fixed seed, and only
full batches, so that every global batch splits evenly over the workers.
"""


def make_model():
    keras.utils.set_random_seed(FLAGS.seed)
    model = SpelaModel(
        [keras.Input((64,)), SpelaDense(FLAGS.hidden, name="hidden"), SpelaDense(34, name="last")],
        num_classes=keras_spela.datasets.DIGITS_NUM_CLASSES,
    )
    optimizer = (
        keras.optimizers.Adam(1e-2) if FLAGS.optimizer == "adam" else keras.optimizers.SGD(1.0)
    )
    model.compile(optimizer=optimizer)
    return model


def global_batches():
    """`(dataset, steps_per_epoch)`: the training digits reshuffled every
    epoch (seeded), in full global batches, repeated.

    Repeated, with `steps_per_epoch`: `fit` and `fit_multi_worker` then both
    read one iterator across epochs, so their epochs see the same batches
    (without it Keras' `fit` makes an extra iterator between epochs, which
    advances the reshuffling).
    """
    (x, y), _ = keras_spela.datasets.load_digits()
    dataset = tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))
    dataset = dataset.shuffle(len(x), seed=FLAGS.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(FLAGS.batch_size, drop_remainder=True)
    return dataset.repeat(), len(x) // FLAGS.batch_size


def weights_digest(weights):
    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


class EpochPrinter(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print(
            f"epoch {epoch + 1}/{self.params['epochs']} - train loss {logs['loss']:.4f}"
            f" - train accuracy {100 * logs['accuracy']:.2f}%",
            flush=True,
        )


"""
## One worker
"""


def cluster_hosts():
    hosts = [host.strip() for host in FLAGS.workers.split(",")]
    for host in hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise UsageError(f"--workers: {host!r} is not host:port")
    if FLAGS.task_index is None or not 0 <= FLAGS.task_index < len(hosts):
        raise UsageError(
            f"--task_index must be in [0, {len(hosts)}) for {len(hosts)} --workers, "
            f"received {FLAGS.task_index}"
        )
    if FLAGS.batch_size % len(hosts):
        raise UsageError(
            f"--batch_size {FLAGS.batch_size} does not split evenly over {len(hosts)} workers"
        )
    return hosts


def run_worker():
    hosts = cluster_hosts()
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": hosts},
            "task": {"type": "worker", "index": FLAGS.task_index},
        }
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    chief = FLAGS.task_index == 0
    with strategy.scope():
        model = make_model()
    if chief:
        print(
            f"{strategy.num_replicas_in_sync} replicas on {len(hosts)} workers; "
            f"64-{FLAGS.hidden}-34 SPELA MLP, {FLAGS.optimizer}, global batch "
            f"{FLAGS.batch_size} ({FLAGS.batch_size // len(hosts)} per worker)",
            flush=True,
        )
    dataset, steps_per_epoch = global_batches()
    history = fit_multi_worker(
        model,
        dataset,
        epochs=FLAGS.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=[EpochPrinter()] if chief else [],
        verbose=0,
    )
    weights = [v.numpy() for v in model.weights]
    if FLAGS.weights_out:
        np.savez(FLAGS.weights_out, *weights)
    if chief:
        _, (x_test, y_test) = keras_spela.datasets.load_digits()
        scores = model.exit_scores(x_test)
        exits = " | ".join(
            f"{name} {100 * np.mean(np.argmax(s, axis=1) == y_test):.2f}%"
            for name, s in scores.items()
        )
        print(f"test accuracy: {exits}")
    print(
        f"worker {FLAGS.task_index}: {len(history.history['loss'])} epochs, "
        f"{int(model.optimizer.iterations.numpy())} steps, weights sha256 "
        f"{weights_digest(weights)}",
        flush=True,
    )


"""
## The launcher

It starts the workers, trains the single-process reference while they run,
and compares the final weights.
"""


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_command(hosts, index, weights_out):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        f"--workers={','.join(hosts)}",
        f"--task_index={index}",
        f"--weights_out={weights_out}",
    ]
    for name in ("epochs", "batch_size", "hidden", "optimizer", "seed", "verbose"):
        command.append(f"--{name}={FLAGS[name].value}")
    return command


def run_launcher():
    if FLAGS.num_workers < 1:
        raise UsageError(f"--num_workers must be >= 1, received {FLAGS.num_workers}")
    if FLAGS.task_index is not None:
        raise UsageError("--task_index needs --workers (every worker's host:port)")
    if FLAGS.batch_size % FLAGS.num_workers:
        raise UsageError(
            f"--batch_size {FLAGS.batch_size} does not split evenly over "
            f"{FLAGS.num_workers} workers"
        )
    hosts = [f"localhost:{port}" for port in free_ports(FLAGS.num_workers)]
    with tempfile.TemporaryDirectory() as directory:
        outputs = [os.path.join(directory, f"worker{i}.npz") for i in range(len(hosts))]
        logs = [open(os.path.join(directory, f"worker{i}.log"), "w+") for i in range(len(hosts))]
        processes = [
            subprocess.Popen(
                worker_command(hosts, i, outputs[i]),
                stdout=logs[i],
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(len(hosts))
        ]
        try:
            reference = make_model()
            dataset, steps_per_epoch = global_batches()
            reference.fit(
                dataset,
                epochs=FLAGS.epochs,
                steps_per_epoch=steps_per_epoch,
                shuffle=False,
                verbose=0,
            )
            for process in processes:
                process.wait(timeout=FLAGS.timeout)
        except subprocess.TimeoutExpired:
            raise UsageError(
                f"the workers did not finish within --timeout {FLAGS.timeout} s"
            ) from None
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        for i, log in enumerate(logs):
            log.seek(0)
            for line in log.read().splitlines():
                print(f"[worker {i}] {line}")
        failed = [i for i, p in enumerate(processes) if p.returncode != 0]
        if failed:
            raise UsageError(f"worker {failed[0]} failed (its lines are above)")
        expected = [v.numpy() for v in reference.weights]
        difference = 0.0
        for path in outputs:
            with np.load(path) as saved:
                for i, array in enumerate(expected):
                    actual = saved[f"arr_{i}"]
                    difference = max(
                        difference,
                        float(np.max(np.abs(actual - array)) / max(np.max(np.abs(array)), 1e-30)),
                    )
    print(
        f"one process (SpelaModel.fit, same global batches): weights sha256 "
        f"{weights_digest(expected)}; largest relative difference of a worker's "
        f"weights {difference:.2g}"
    )


def main(argv):
    try:
        if len(argv) > 1:
            raise UsageError(f"unexpected arguments {argv[1:]}; every setting is a --flag")
        if not FLAGS.verbose:
            logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO logs
        if FLAGS.workers:
            run_worker()
        else:
            run_launcher()
    except (UsageError, ValueError) as error:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: error: {_one_line(error)}\n")
        return 1
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
