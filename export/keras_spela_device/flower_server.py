"""A Flower `ServerApp` that federates DeviceTrainer clients with FedAvg.
Imports no TensorFlow.

The server holds the same exported model as its clients (`export_tflite`).
It reads the initial global weights from it, runs Flower's own `FedAvg`
strategy (`flwr.serverapp.strategy.FedAvg`: every round it sends the global
learned weights to every client, which trains with `keras_spela_device.flower_client`,
and averages the replies weighted by their number of examples), and evaluates
the global model after every round on its test set with DeviceTrainer.

The run config (`[tool.flwr.app.config]` of the app, or `flwr run
--run-config`) holds `model-path`, `test-data-path` (`.npz` with `x_test`,
`y_test`), `num-rounds`, `local-epochs`, `optimizer-state` (`keep` or `reset`,
see `flower_client.OPTIMIZER_STATE_POLICIES`), `seed`, `min-clients` and
`results-path`: a JSON file of the round-by-round accuracy, the clients'
replies and their failures, with the final global weights beside it
(`<results-path stem>.npz`).

A client that fails (for example one whose model does not match the
server's, `flower_client.ModelMismatchError`) is reported in the results
with its error and left out of that round's average; when every client of a
round fails, the global model stays as it was.
"""

import json
import os
import re

import numpy as np
from flwr.app import ConfigRecord
from flwr.app import Context
from flwr.app import MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import ServerApp
from flwr.serverapp.strategy import FedAvg

from keras_spela_device.flower_client import METRICS_KEY
from keras_spela_device.flower_client import from_array_record
from keras_spela_device.flower_client import split_weights
from keras_spela_device.flower_client import to_array_record
from keras_spela_device.npz import load_npz
from keras_spela_device.trainer import DeviceTrainer

# Flower's reason for an exception raised in a ClientApp:
# "<class 'module.ErrorType'>:<'the message'>".
_CLIENT_EXCEPTION = re.compile(r"^<class '(?:[\w.]*\.)?(\w+)'>:<'(.*)'>$", re.DOTALL)


def describe_client_error(reason):
    """`ErrorType: message` from the reason Flower gives for a failed reply."""
    match = _CLIENT_EXCEPTION.match(reason)
    return f"{match.group(1)}: {match.group(2)}" if match else reason


class RecordingFedAvg(FedAvg):
    """Flower's FedAvg, unchanged, that also keeps every round's replies.

    `rounds[r]` lists, for round `r`, one dict per client reply: its node id
    and metrics, or its node id and `error` (why it failed).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rounds = {}

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        self.rounds[server_round] = [
            {
                "node": int(msg.metadata.src_node_id),
                "error": describe_client_error(msg.error.reason),
            }
            if msg.has_error()
            else {
                "node": int(msg.metadata.src_node_id),
                **{k: float(v) for k, v in msg.content[METRICS_KEY].items()},
            }
            for msg in replies
        ]
        return super().aggregate_train(server_round, replies)


def global_evaluator(trainer, test_data):
    """FedAvg's `evaluate_fn`: the global weights' test accuracy at every exit."""
    x_test, y_test = test_data

    def evaluate(server_round, arrays):
        del server_round
        trainer.set_weights({**trainer.get_weights(), **from_array_record(arrays)})
        return MetricRecord(trainer.evaluate(x_test, y_test))

    return evaluate


def write_results(path, strategy, result, num_rounds, initial):
    """The results JSON and the final global weights (`initial` if no round
    had a reply to average)."""
    rounds = [
        {
            "round": r,
            "accuracy": dict(result.evaluate_metrics_serverapp.get(r, {})),
            "replies": strategy.rounds.get(r, []),
        }
        for r in range(num_rounds + 1)
    ]
    with open(path, "w") as f:
        json.dump({"rounds": rounds}, f, indent=1)
    np.savez(os.path.splitext(path)[0] + ".npz", **(from_array_record(result.arrays) or initial))


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Runs `num-rounds` FedAvg rounds over `min-clients` DeviceTrainer clients."""
    config = context.run_config
    trainer = DeviceTrainer(str(config["model-path"]))
    arrays = load_npz(str(config["test-data-path"]), "server test data file")
    learned, _ = split_weights(trainer.get_weights())
    clients = int(config["min-clients"])
    num_rounds = int(config["num-rounds"])
    strategy = RecordingFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,  # the server evaluates the global model itself
        min_train_nodes=clients,
        min_available_nodes=clients,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=to_array_record(learned),
        num_rounds=num_rounds,
        train_config=ConfigRecord(
            {
                "local-epochs": int(config["local-epochs"]),
                "seed": int(config["seed"]),
                "optimizer-state": str(config["optimizer-state"]),
            }
        ),
        evaluate_fn=global_evaluator(trainer, (arrays["x_test"], arrays["y_test"])),
    )
    write_results(str(config["results-path"]), strategy, result, num_rounds, learned)
