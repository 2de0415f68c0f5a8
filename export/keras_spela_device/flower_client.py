"""A Flower `ClientApp` around DeviceTrainer. Imports no TensorFlow.

Each Flower client (a SuperNode) holds an exported keras_spela model
(`export_tflite`) and its own data; in every round it receives the global
weights, checks that they belong to its model, trains on its data with the
device runtime (LiteRT, else tflite-runtime) and sends its new weights back.
Only the learned weights travel (`<layer>_kernel`, `<layer>_bias`); the
optimizer state (`contract.optimizer_state_names`: Adam's moments and
`beta^t`, SGD's momentum) stays on the client (see
`OPTIMIZER_STATE_POLICIES`). Install with `pip install ./export[flower]`.

A SuperNode describes its client with `--node-config`:

    flower-supernode --insecure --superlink 127.0.0.1:8000 --node-config \\
        'model-path="/data/spela.tflite" data-path="/data/shard.npz" client-name="phone-0"'

(8000: the `flower-superlink --port`, its default; `examples/federated_flower.py`
starts the whole federation on localhost.)

`data-path` is an `.npz` with `x_train` and `y_train`. The server's train
messages carry `local-epochs`, `seed`, `optimizer-state` and `server-round`
in their config record (`keras_spela_device.flower_server` sends them).

Flower runs a fresh `flwr-clientapp` process for every message, so the model
is loaded again each round and whatever the client keeps between rounds lives
in Flower's `context.state`.
"""

import sys

import numpy as np
from flwr.app import Array
from flwr.app import ArrayRecord
from flwr.app import Context
from flwr.app import Message
from flwr.app import MetricRecord
from flwr.app import RecordDict
from flwr.clientapp import ClientApp

from keras_spela_device import contract
from keras_spela_device.errors import DeviceTrainingError
from keras_spela_device.npz import load_npz
from keras_spela_device.trainer import DeviceTrainer

# What happens to a client's optimizer state between rounds:
#   "keep":  its slots and step count stay as its last round left them (kept in
#            Flower's context.state) and continue from there on the new global
#            weights;
#   "reset": every round starts from the freshly exported state (slots zero,
#            Adam's beta^t at 1: the first step of a round is a first step).
OPTIMIZER_STATE_POLICIES = ("keep", "reset")
STATE_KEY = "optimizer-state"
ARRAYS_KEY = "arrays"
METRICS_KEY = "metrics"
CONFIG_KEY = "config"


class ModelMismatchError(DeviceTrainingError):
    """The server's weights do not belong to the client's model (other
    names or shapes). Raised before anything changed."""


def split_weights(weights):
    """Splits `DeviceTrainer.get_weights()` into learned weights and optimizer state.

    Which names are optimizer state is the contract's
    (`contract.optimizer_state_names`, the names the exporter writes).

    Args:
        weights: a dict name -> array, as `get_weights` returns it.

    Returns:
        `(learned, optimizer_state)`, two dicts.

    Example:

    ```python
    learned, state = split_weights(trainer.get_weights())
    sorted(learned)  # ['hidden_bias', 'hidden_kernel', 'last_bias', 'last_kernel']
    ```
    """
    state_names = contract.optimizer_state_names(weights)
    learned = {k: v for k, v in weights.items() if k not in state_names}
    state = {k: v for k, v in weights.items() if k in state_names}
    return learned, state


def check_matching_weights(received, own, where="this client's model"):
    """Raises ModelMismatchError unless `received` has exactly the names and
    shapes of `own` (both dicts name -> array).

    Args:
        received: the weights sent by the server.
        own: the client's learned weights.
        where: how the message names the client's model.

    Raises:
        ModelMismatchError: with every missing, unknown and reshaped weight.
    """
    missing = sorted(set(own) - set(received))
    unknown = sorted(set(received) - set(own))
    problems = []
    if missing:
        problems.append(f"the server sent no {', '.join(missing)}")
    if unknown:
        problems.append(f"it has no {', '.join(unknown)}")
    problems += [
        f"{name} is {tuple(np.shape(received[name]))} on the server, "
        f"{tuple(np.shape(own[name]))} here"
        for name in sorted(set(own) & set(received))
        if tuple(np.shape(received[name])) != tuple(np.shape(own[name]))
    ]
    if problems:
        raise ModelMismatchError(
            f"The server's model does not match {where}: {'; '.join(problems)}. "
            f"Nothing was trained or changed."
        )


def to_array_record(arrays):
    """A Flower ArrayRecord of a dict name -> numpy array (sorted by name)."""
    return ArrayRecord({name: Array(np.asarray(arrays[name])) for name in sorted(arrays)})


def from_array_record(record):
    """The dict name -> numpy array of a Flower ArrayRecord."""
    return {name: array.numpy() for name, array in record.items()}


def train_round(trainer, global_weights, data, epochs, seed, saved_state=None, where=None):
    """One client round: global weights in, local training, new weights out.

    Args:
        trainer: a `DeviceTrainer` on the client's freshly loaded model.
        global_weights: the server's learned weights (dict name -> array).
        data: `(x, y)`, the client's training examples.
        epochs: local epochs.
        seed: seed of the local shuffling.
        saved_state: the optimizer state this client kept from its last round
            (dict), or None to start from the model's exported state.
        where: how an error names the client's model (default: its path).

    Returns:
        `(learned weights, optimizer state, history)` after training.

    Raises:
        ModelMismatchError: `global_weights` (or `saved_state`) does not belong
            to the model; nothing was trained.
        DeviceTrainingError: bad data or a rejected batch (the model's
            weights are then as before that batch).
    """
    where = where or f"this client's model {trainer.model_path}"
    learned, state = split_weights(trainer.get_weights())
    check_matching_weights(global_weights, learned, where)
    if saved_state is not None:
        try:
            check_matching_weights(saved_state, state, where)
        except ModelMismatchError:
            raise ModelMismatchError(
                f"The optimizer state this client kept does not match {where} (was the "
                f"model file replaced during the run?). Nothing was trained or changed."
            ) from None
        state = saved_state
    trainer.set_weights({**global_weights, **state})
    history = trainer.fit(*data, epochs=epochs, seed=seed, verbose=0)
    learned, state = split_weights(trainer.get_weights())
    return learned, state, history


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Flower's train handler: `train_round` on this node's model and data."""
    node = context.node_config
    name = node.get("client-name", f"node {context.node_id}")
    model_path = str(node["model-path"])
    config = msg.content[CONFIG_KEY]
    policy = str(config.get("optimizer-state", "keep"))
    if policy not in OPTIMIZER_STATE_POLICIES:
        raise ValueError(
            f"optimizer-state must be one of {OPTIMIZER_STATE_POLICIES}, received {policy!r}"
        )
    trainer = DeviceTrainer(model_path)
    arrays = load_npz(str(node["data-path"]), "client data file")
    if not {"x_train", "y_train"} <= set(arrays):
        raise DeviceTrainingError(
            f"{node['data-path']}: the client data file holds {sorted(arrays)}, not x_train and y_train"
        )
    data = (arrays["x_train"], arrays["y_train"])
    saved = context.state[STATE_KEY] if policy == "keep" and STATE_KEY in context.state else None
    round_number = int(config.get("server-round", 0))
    seed = int(config.get("seed", 0)) * 1000 + round_number * 10 + int(node.get("partition-id", 0))
    learned, state, history = train_round(
        trainer,
        from_array_record(msg.content[ARRAYS_KEY]),
        data,
        epochs=int(config.get("local-epochs", 1)),
        seed=seed,
        saved_state=None if saved is None else from_array_record(saved),
        where=f"the model of client {name} ({model_path})",
    )
    if state:
        context.state[STATE_KEY] = to_array_record(state)
    metrics = MetricRecord(
        {
            "num-examples": len(data[0]),
            "train-loss": float(history["loss"][-1]),
            # 1.0 if TensorFlow was imported in this client process (it must not be).
            "tensorflow-imported": float("tensorflow" in sys.modules),
        }
    )
    return Message(
        RecordDict({ARRAYS_KEY: to_array_record(learned), METRICS_KEY: metrics}),
        reply_to=msg,
    )
