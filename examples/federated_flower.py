"""
Title: Federated rounds with Flower: DeviceTrainer clients, FedAvg server
Author: keras_spela contributors
Date created: 2026/12/02
Last modified: 2026/12/02
Description: Clients train an exported SPELA model on their own non-IID shard
    of the digits with the device runtime (no TensorFlow), a Flower server
    averages their weights with FedAvg, and the global model is compared with
    the same model trained centrally on the union of the shards.
Accelerator: None
"""

"""
## Introduction

A SPELA model exported with `keras_spela.export_tflite` trains on a device
with its `train` signature and exchanges its weights through `get_weights` /
`set_weights`. That is all a federated client needs. This example runs a real
Flower federation on localhost, each part in its own process, with Flower's
current Deployment Runtime:

- a **SuperLink** (`flower-superlink`, the server), whose `ServerApp`
  (`export/flower_server.py`) runs Flower's own `FedAvg` strategy;
- one **SuperNode** per client (`flower-supernode`), whose `ClientApp`
  (`export/flower_client.py`) trains the client's copy of the exported model
  on the client's shard with `DeviceTrainer` (LiteRT);
- `flwr run`, which submits the app to the SuperLink and waits for the end.

Neither the server nor the clients import TensorFlow: Flower starts a
`flwr-clientapp` process for every message, which imports `flwr`, numpy, the
device trainer and LiteRT only (each client reports `"tensorflow" in
sys.modules`, and we print it). TensorFlow runs only here, to build and export
the model.

The data: the embedded 8x8 digits, split across `--clients` clients with a
label skew drawn from a Dirichlet distribution (`--alpha`, smaller = more
skewed; `--split iid` gives equal random shards). Every round each client
starts from the global weights, trains `--local_epochs` epochs on its shard,
and FedAvg averages the clients' weights weighted by their number of examples.
After `--rounds` rounds we compare the global model's test accuracy with the
same exported model trained centrally, with the same device runtime and
optimizer, on the union of the shards for as many epochs
(`rounds x local_epochs`). The goal: within 2 points.

**The optimizer state between rounds.** The model's Adam state (`<w>_m`,
`<w>_v`, `adam_beta_1_power`, `adam_beta_2_power`; SGD momentum's
`<w>_momentum`) is part of `get_weights` but never leaves a client: only the
learned kernels and biases are averaged. With `--optimizer_state keep`
(default) each client keeps its own state across rounds (Flower's
`context.state` carries it from one `flwr-clientapp` process to the next) and
continues from it on the new global weights, as a device that keeps its
optimizer between sessions does. With `--optimizer_state reset` every round
starts from the exported state (zero slots, step count 0), so a round's first
Adam step is a first step again.

**A client whose model does not match.** `--mismatched_client K` gives client
K a model with another hidden width. Its ClientApp compares the server's
weights (names and shapes) with its own model before anything changes and
fails with one `ModelMismatchError` naming the weights that differ; Flower
sends that error to the server, FedAvg leaves the client out of the average,
and the other clients' rounds go on.

```
python examples/federated_flower.py
python examples/federated_flower.py --clients 5 --rounds 20 --alpha 0.1
python examples/federated_flower.py --optimizer_state reset
python examples/federated_flower.py --mismatched_client 2
```
"""

"""
## Setup
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from example_flags import check_flags  # absl only: the flags are checked first
from example_flags import parse_flags
from keras_spela_device import DeviceTrainer  # noqa: E402  (numpy only)

from absl import app
from absl import flags
from absl import logging
import numpy as np


FLAGS = flags.FLAGS
flags.DEFINE_integer("clients", 3, "Number of Flower clients (SuperNodes).", lower_bound=1)
flags.DEFINE_integer("rounds", 10, "Federated rounds.", lower_bound=1)
flags.DEFINE_integer("local_epochs", 1, "Epochs each client trains per round.", lower_bound=1)
flags.DEFINE_enum("split", "dirichlet", ["dirichlet", "iid"], "How the training set is shared.")
flags.DEFINE_float(
    "alpha",
    0.5,
    "Dirichlet concentration of --split dirichlet (smaller: more skewed).",
    lower_bound=1e-3,
)
flags.DEFINE_integer("hidden", 256, "Units of the hidden SPELA layer.", lower_bound=1)
flags.DEFINE_integer("last", 34, "Units of the last SPELA layer.", lower_bound=1)
flags.DEFINE_integer(
    "batch_size", 16, "Static batch size of the exported train step.", lower_bound=1
)
flags.DEFINE_enum("device_optimizer", "adam", ["adam", "sgd"], "Optimizer inside the model.")
flags.DEFINE_float("device_learning_rate", 1e-2, "Learning rate inside the model.", lower_bound=0)
flags.DEFINE_enum(
    "optimizer_state",
    "keep",
    ["keep", "reset"],
    "Between rounds, each client keeps its optimizer state, or starts from the exported one.",
)
flags.DEFINE_integer(
    "mismatched_client",
    -1,
    "Give this client (0-based) a model with another hidden width, to show the error; -1: none.",
)
flags.DEFINE_integer("seed", 0, "Seed of the split, the weights and the shuffling.", lower_bound=0)
flags.DEFINE_integer(
    "timeout", 600, "Seconds the federated run may take before it is stopped.", lower_bound=1
)
flags.DEFINE_string(
    "output_dir",
    os.path.join(tempfile.gettempdir(), "spela_federated"),
    "Where the models, the shards, the Flower app, its logs and results go.",
)
flags.DEFINE_bool(
    "verbose",
    False,
    "Show TensorFlow's and the converter's own log lines (captured by default); "
    "Flower's logs are in <output_dir>/logs either way.",
)


check_flags(__name__)  # a bad flag ends here, before TensorFlow is imported

from example_setup import REPO  # TensorFlow, Keras and keras_spela, quietly
from example_setup import capture_native_stderr
from example_setup import keras
from example_setup import keras_spela

from keras_spela import SpelaDense
from keras_spela import SpelaModel

"""
## Data: non-IID shards

With `--split dirichlet`, the examples of every class are shared among the
clients in proportions drawn from `Dirichlet(alpha)`: with `alpha = 0.5` and
3 clients a client typically holds most of a few classes and little of the
others. Shards are redrawn (with the same seed stream) until every client has
at least one batch.
"""


def split_shards(y, clients, split, alpha, min_size, seed):
    """Indices of every client's shard of the training set."""
    rng = np.random.default_rng(seed)
    if split == "iid":
        return np.array_split(rng.permutation(len(y)), clients)
    for _ in range(100):
        shards = [[] for _ in range(clients)]
        for label in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == label))
            cuts = (np.cumsum(rng.dirichlet([alpha] * clients))[:-1] * len(members)).astype(int)
            for shard, part in zip(shards, np.split(members, cuts)):
                shard.extend(part.tolist())
        if min(len(s) for s in shards) >= min_size:
            return [np.array(sorted(s)) for s in shards]
    raise SystemExit(
        f"error: no Dirichlet split with alpha {alpha} gives each of {clients} clients "
        f"{min_size} examples; raise --alpha or lower --clients"
    )


def describe_shard(y, num_classes):
    counts = np.bincount(y, minlength=num_classes)
    return " ".join(f"{c:3d}" for c in counts)


"""
## The model: built and exported on the host

A fresh 64-256-34 SPELA MLP (`--hidden`, `--last`), exported once with its
optimizer (`--device_optimizer`, Adam 1e-2 by default) inside. The server,
every client and the central baseline start from this same file.
"""


def export_model(path, hidden, seed):
    keras.utils.set_random_seed(seed)
    model = SpelaModel(
        [
            keras.Input((64,)),
            SpelaDense(hidden, name="hidden"),
            SpelaDense(FLAGS.last, name="last"),
        ],
        num_classes=keras_spela.datasets.DIGITS_NUM_CLASSES,
    )
    optimizer = keras_spela.DeviceOptimizer(FLAGS.device_optimizer, FLAGS.device_learning_rate)
    with capture_native_stderr(not FLAGS.verbose):  # the converter's C++ lines
        return keras_spela.export_tflite(
            model, path, batch_size=FLAGS.batch_size, optimizer=optimizer
        )


"""
## The Flower app

`flwr run` takes a Flower App: a directory with a `pyproject.toml` naming its
`ServerApp` and `ClientApp`, built into a Flower App Bundle (FAB) and sent
to the SuperLink and the SuperNodes. Ours holds the two Flower entry points of
`export/` (the device package, keras_spela_device, is installed on every
node: `pip install ./export[flower]`) and, as its run config, the paths and
numbers of this run. The
client's own files (its model and shard) are given to its SuperNode with
`--node-config`: they never travel.
"""

APP_FILES = ("flower_server.py", "flower_client.py")


def toml_value(value):
    return json.dumps(value) if isinstance(value, str) else str(value)


def write_flower_app(directory, run_config):
    os.makedirs(directory, exist_ok=True)
    for name in APP_FILES:
        shutil.copy(REPO / "export" / name, os.path.join(directory, name))
    config = "\n".join(f"{key} = {toml_value(value)}" for key, value in run_config.items())
    with open(os.path.join(directory, "pyproject.toml"), "w") as f:
        f.write(
            '[project]\nname = "spela-federated"\nversion = "1.0.0"\n'
            'description = "keras_spela DeviceTrainer clients, FedAvg server"\n'
            'license = "Apache-2.0"\n'
            'dependencies = ["flwr", "numpy", "ai-edge-litert", "keras-spela-device"]\n\n'
            '[tool.flwr.app]\npublisher = "keras_spela"\n\n'
            '[tool.flwr.app.components]\nserverapp = "flower_server:server_app"\n'
            'clientapp = "flower_client:client_app"\n\n'
            f"[tool.flwr.app.config]\n{config}\n"
        )


"""
## The federation: one process per part

Every part gets its own Flower home directory (where it installs the FAB),
port and log file. Flower's telemetry and update check are switched off (no
network here). The SuperNodes keep connecting until the SuperLink is up, and
FedAvg waits until all `--clients` have joined before the first round.
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_command(name):
    """A Flower command of this Python environment."""
    return os.path.join(os.path.dirname(sys.executable), name)


class Federation:
    """A SuperLink and SuperNodes on localhost, stopped on exit."""

    def __init__(self, directory):
        self.directory = directory
        self.logs = os.path.join(directory, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.processes = []
        self.port = free_port()
        self.env = dict(
            os.environ,
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            # How often a SuperExec looks for a task to start (default 1 s).
            FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.2",
            TF_CPP_MIN_LOG_LEVEL="2",
            # Flower starts flower-superexec, flwr-serverapp, flwr-clientapp by name.
            PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        )

    def _start(self, name, command):
        home = os.path.join(self.directory, "home", name)
        os.makedirs(home, exist_ok=True)
        log = open(os.path.join(self.logs, f"{name}.log"), "w")
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(self.env, FLWR_HOME=home),
            start_new_session=True,  # its own process group: stopped with its children
        )
        self.processes.append((name, process, log))
        return process

    def start_superlink(self, timeout=60):
        """Starts the SuperLink and waits until it accepts connections."""
        process = self._start(
            "superlink",
            [
                flower_command("flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--port",
                str(self.port),
            ],
        )
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(
            f"error: the SuperLink did not start on port {self.port}; its log "
            f"({self.logs}/superlink.log) ends with:\n{self.log_tail('superlink')}"
        )

    def start_supernode(self, name, node_config):
        config = " ".join(f"{key}={toml_value(value)}" for key, value in node_config.items())
        self._start(
            name,
            [
                flower_command("flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--port",
                str(free_port()),
                "--node-config",
                config,
            ],
        )

    def run(self, app_directory, timeout):
        """`flwr run` of the app; True if it ended within `timeout` seconds."""
        home = os.path.join(self.directory, "home", "flwr_run")
        os.makedirs(home, exist_ok=True)
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write(
                '[superlink]\ndefault = "localhost"\n\n[superlink.localhost]\n'
                f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
            )
        process = self._start(
            "flwr_run",
            [
                flower_command("flwr"),
                "run",
                app_directory,
                "localhost",
                "--stream",
            ],
        )
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log_tail(self, name, lines=15):
        with open(os.path.join(self.logs, f"{name}.log"), errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def stop(self):
        for _, process, _ in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, 15)  # the part and the processes it started
        for _, process, log in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
            log.close()


def run_federation(model_paths, shard_paths, test_path, results_path):
    """Runs the rounds; returns the results the ServerApp wrote."""
    directory = os.path.join(FLAGS.output_dir, "flower")
    shutil.rmtree(directory, ignore_errors=True)
    app_directory = os.path.join(directory, "app")
    write_flower_app(
        app_directory,
        {
            "model-path": model_paths["server"],
            "test-data-path": test_path,
            "num-rounds": FLAGS.rounds,
            "local-epochs": FLAGS.local_epochs,
            "optimizer-state": FLAGS.optimizer_state,
            "seed": FLAGS.seed,
            "min-clients": FLAGS.clients,
            "results-path": results_path,
        },
    )
    if os.path.exists(results_path):
        os.remove(results_path)
    federation = Federation(directory)
    try:
        federation.start_superlink()
        for k, shard in enumerate(shard_paths):
            federation.start_supernode(
                f"client_{k}",
                {
                    "model-path": model_paths[k],
                    "data-path": shard,
                    "client-name": f"client_{k}",
                    "partition-id": k,
                },
            )
        finished = federation.run(app_directory, FLAGS.timeout)
        if not finished or not os.path.exists(results_path):
            what = f"did not end within --timeout {FLAGS.timeout} s" if not finished else "failed"
            raise SystemExit(
                f"error: the federated run {what}; its log ({federation.logs}/flwr_run.log) "
                f"ends with:\n{federation.log_tail('flwr_run')}"
            )
    finally:
        federation.stop()
    with open(results_path) as f:
        return json.load(f)


"""
## The central baseline

The same exported model, the same runtime, optimizer and batch size, trained
on the union of the clients' shards for `rounds x local_epochs` epochs.
"""


def central_accuracy(model_path, train, test):
    trainer = DeviceTrainer(model_path, quiet=not FLAGS.verbose)
    trainer.fit(*train, epochs=FLAGS.rounds * FLAGS.local_epochs, seed=FLAGS.seed, verbose=0)
    return trainer.evaluate(*test)


"""
## Run
"""


def percent(accuracies):
    return " | ".join(
        f"{key[: -len('_accuracy')]} {100 * value:5.2f}%"
        for key, value in sorted(accuracies.items())
    )


def print_rounds(results):
    for entry in results["rounds"]:
        line = f"round {entry['round']:2d}: global test accuracy {percent(entry['accuracy'])}"
        replies = entry["replies"]
        if replies:
            failed = sum("error" in reply for reply in replies)
            line += f" ({len(replies) - failed} of {len(replies)} clients averaged)"
        print(line)
        for reply in replies:
            if "error" in reply:
                print(f"  node {reply['node']} failed: {reply['error']}")
    trained = [r for e in results["rounds"] for r in e["replies"] if "error" not in r]
    imported = sum(r["tensorflow-imported"] > 0 for r in trained)
    print(f"client rounds whose process had imported TensorFlow: {imported} of {len(trained)}")


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if FLAGS.mismatched_client >= FLAGS.clients:
        raise SystemExit(
            f"error: --mismatched_client {FLAGS.mismatched_client} is not a client "
            f"(there are {FLAGS.clients}: 0 to {FLAGS.clients - 1})"
        )
    commands = ("flower-superlink", "flower-supernode", "flwr")
    missing = [c for c in commands if not os.path.exists(flower_command(c))]
    if missing:
        raise SystemExit(
            f"error: Flower's commands {missing} are not in {os.path.dirname(sys.executable)}; "
            f"install Flower into this environment (pip install flwr, or bash tools/install.sh)"
        )
    start = time.perf_counter()
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = keras_spela.datasets.load_digits()
    num_classes = keras_spela.datasets.DIGITS_NUM_CLASSES
    shards = split_shards(
        y_train, FLAGS.clients, FLAGS.split, FLAGS.alpha, FLAGS.batch_size, FLAGS.seed
    )
    print(
        f"digits: {len(y_train)} training examples in {FLAGS.clients} {FLAGS.split} shards "
        f"(alpha {FLAGS.alpha}), {len(y_test)} test examples; examples per class:"
    )
    names = [f"client_{k}" for k in range(FLAGS.clients)]
    shard_paths = []
    for name, shard in zip(names, shards):
        print(f"  {name}: {describe_shard(y_train[shard], num_classes)}  ({len(shard)})")
        path = os.path.join(FLAGS.output_dir, f"{name}_data.npz")
        np.savez(path, x_train=x_train[shard], y_train=y_train[shard])
        shard_paths.append(path)
    test_path = os.path.join(FLAGS.output_dir, "test_data.npz")
    np.savez(test_path, x_test=x_test, y_test=y_test)

    model = export_model(os.path.join(FLAGS.output_dir, "spela.tflite"), FLAGS.hidden, FLAGS.seed)
    print(
        f"exported {model.path}: {FLAGS.hidden}-{FLAGS.last} SPELA MLP, "
        f"{FLAGS.device_optimizer} {FLAGS.device_learning_rate:g}, batch {FLAGS.batch_size}"
    )
    model_paths = {"server": model.path, **{k: model.path for k in range(FLAGS.clients)}}
    if FLAGS.mismatched_client >= 0:
        other = export_model(
            os.path.join(FLAGS.output_dir, "spela_mismatched.tflite"),
            FLAGS.hidden // 2 or 1,
            FLAGS.seed,
        )
        model_paths[FLAGS.mismatched_client] = other.path
        print(
            f"client_{FLAGS.mismatched_client} gets {other.path} "
            f"(hidden {FLAGS.hidden // 2 or 1}): it does not match the server's model"
        )

    print(
        f"\nFlower: 1 SuperLink (FedAvg) + {FLAGS.clients} SuperNodes on localhost, "
        f"{FLAGS.rounds} rounds x {FLAGS.local_epochs} local epochs, "
        f"optimizer state: {FLAGS.optimizer_state}"
    )
    federated_start = time.perf_counter()
    results = run_federation(
        model_paths, shard_paths, test_path, os.path.join(FLAGS.output_dir, "results.json")
    )
    print_rounds(results)
    print(f"federated run: {time.perf_counter() - federated_start:.1f} s")

    epochs = FLAGS.rounds * FLAGS.local_epochs
    central = central_accuracy(model.path, (x_train, y_train), (x_test, y_test))
    print(f"central (union of the shards, {epochs} epochs): {percent(central)}")
    last = f"exit_{len(central) - 1}_accuracy"
    federated = results["rounds"][-1]["accuracy"][last]
    gap = 100 * (central[last] - federated)
    verdict = "met" if gap <= 2.0 else "NOT met"
    print(
        f"goal (federated within 2 points of central, last exit): {100 * federated:.2f}% vs "
        f"{100 * central[last]:.2f}%, gap {gap:+.2f} points: {verdict}"
    )
    print(f"done in {time.perf_counter() - start:.1f} s; files in {FLAGS.output_dir}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
