"""Flower's ClientApp around DeviceTrainer (keras_spela_device.flower_client), in process:
the learned weights are told from the optimizer state, a client whose model does not
match the server's raises one ModelMismatchError naming the weights and changes nothing,
a client keeps its optimizer state in Flower's context between rounds (or resets it);
the client side imports no TensorFlow."""

import ast
import pathlib
import sys

import keras
import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.app import Context
from flwr.app import Message
from flwr.app import Metadata
from flwr.app import RecordDict

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela_device import DeviceTrainer
from keras_spela_device.flower_client import ModelMismatchError
from keras_spela_device.flower_client import client_app
from keras_spela_device.flower_client import from_array_record
from keras_spela_device.flower_client import split_weights
from keras_spela_device.flower_client import to_array_record
from keras_spela_device.flower_client import train_round

# Fixtures that export models: the tests that use them are `slow` (tests/conftest.py).
EXPORTING_FIXTURES = ("models",)

REPO = pathlib.Path(__file__).resolve().parents[2]
BATCH = 16
LEARNED = ["hidden_bias", "hidden_kernel", "last_bias", "last_kernel"]


def export(path, hidden=16, momentum=0.0, seed=0):
    """A fresh 64-hidden-12 model exported with Adam, or SGD with `momentum`."""
    keras.utils.set_random_seed(seed)
    model = SpelaModel(
        [keras.Input((64,)), SpelaDense(hidden, name="hidden"), SpelaDense(12, name="last")],
        num_classes=10,
    )
    return keras_spela.export_tflite(
        model,
        str(path),
        batch_size=BATCH,
        optimizer=keras_spela.DeviceOptimizer("sgd", 0.1, momentum=momentum)
        if momentum
        else keras_spela.DeviceOptimizer("adam", 1e-2),
    ).path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("federated")
    return {
        "adam": export(out / "adam.tflite"),
        "narrow": export(out / "narrow.tflite", hidden=8),
        "momentum": export(out / "momentum.tflite", momentum=0.9),
        "dir": out,
    }


def train_message(weights, config, node_id):
    """A train message as the server sends it (its metadata is set by hand:
    outside a ServerApp there is no run to take it from)."""
    metadata = Metadata(
        run_id=1,
        message_id="m1",
        src_node_id=0,
        dst_node_id=node_id,
        reply_to_message_id="",
        group_id="",
        created_at=0.0,
        ttl=600.0,
        message_type="train",
    )
    content = RecordDict({"arrays": to_array_record(weights), "config": ConfigRecord(config)})
    return Message(content, metadata=metadata)


def all_equal(a, b):
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_split_weights_keeps_the_optimizer_state_apart(models):
    for kind, state in [
        (
            "adam",
            [f"{w}_{s}" for s in "mv" for w in LEARNED]
            + ["adam_beta_1_power", "adam_beta_2_power"],
        ),
        ("momentum", [f"{w}_momentum" for w in LEARNED] + ["momentum_started"]),
    ]:
        learned, optimizer_state = split_weights(DeviceTrainer(models[kind]).get_weights())
        assert sorted(learned) == LEARNED, kind
        assert sorted(optimizer_state) == sorted(state), kind


def test_mismatched_server_weights_raise_and_change_nothing(models, digits):
    (x, y), _ = digits
    trainer = DeviceTrainer(models["adam"])
    trainer.fit(x[:64], y[:64], epochs=1, verbose=0)  # a client with a history
    before = trainer.get_weights()
    server, _ = split_weights(DeviceTrainer(models["narrow"]).get_weights())
    with pytest.raises(ModelMismatchError) as error:
        train_round(trainer, server, (x, y), epochs=1, seed=0, where="client_1's model")
    message = str(error.value)
    assert message.startswith("The server's model does not match client_1's model: ")
    assert "hidden_kernel is (64, 8) on the server, (64, 16) here" in message
    assert "hidden_bias is (8,) on the server, (16,) here" in message
    assert "last_kernel is (8, 12) on the server, (16, 12) here" in message
    assert "Nothing was trained or changed" in message
    assert all_equal(trainer.get_weights(), before)

    # Other names: named too, also through Flower's ClientApp.
    renamed = {
        ("dense_" + k if k == "last_bias" else k): v for k, v in before.items() if k in LEARNED
    }
    with pytest.raises(
        ModelMismatchError,
        match=r"the server sent no last_bias; it has no dense_last_bias\. Nothing",
    ):
        train_round(trainer, renamed, (x, y), epochs=1, seed=0)
    assert all_equal(trainer.get_weights(), before)

    data = models["dir"] / "shard.npz"
    np.savez(data, x_train=x[:64], y_train=y[:64])
    context = Context(
        run_id=1,
        node_id=7,
        state=RecordDict(),
        run_config={},
        node_config={"model-path": models["adam"], "data-path": str(data), "client-name": "phone"},
    )
    message = train_message(server, {"server-round": 1}, node_id=7)
    model_bytes = pathlib.Path(models["adam"]).read_bytes()
    with pytest.raises(
        ModelMismatchError, match=r"the model of client phone .*hidden_kernel is \(64, 8\)"
    ):
        client_app(message, context)
    assert "optimizer-state" not in context.state  # nothing kept from a failed round
    assert pathlib.Path(models["adam"]).read_bytes() == model_bytes


@pytest.mark.parametrize("policy", ["keep", "reset"])
def test_client_app_keeps_or_resets_the_optimizer_state(models, digits, policy):
    (x, y), _ = digits
    x, y = x[:100], y[:100]
    data = models["dir"] / f"shard_{policy}.npz"
    np.savez(data, x_train=x, y_train=y)
    context = Context(
        run_id=1,
        node_id=3,
        state=RecordDict(),
        run_config={},
        node_config={"model-path": models["adam"], "data-path": str(data), "partition-id": 0},
    )
    fresh_weights, fresh_state = split_weights(DeviceTrainer(models["adam"]).get_weights())
    weights, replies, states = fresh_weights, [], []
    for server_round in (1, 2):
        config = {
            "server-round": server_round,
            "local-epochs": 1,
            "seed": 4,
            "optimizer-state": policy,
        }
        reply = client_app(train_message(weights, config, node_id=3), context)
        weights = from_array_record(reply.content["arrays"])  # FedAvg of one client
        assert sorted(weights) == LEARNED  # only the learned weights travel
        assert reply.content["metrics"]["num-examples"] == 100
        assert reply.content["metrics"]["tensorflow-imported"] == 1.0  # this test imported it
        replies.append(weights)
        states.append(from_array_record(context.state["optimizer-state"]))

    # 100 examples in batches of 16: 7 Adam steps per round, counted on or restarted.
    assert states[0]["adam_beta_1_power"] == pytest.approx(0.9**7, rel=1e-5)
    steps = 14 if policy == "keep" else 7
    assert states[1]["adam_beta_1_power"] == pytest.approx(0.9**steps, rel=1e-5)

    # Each round is DeviceTrainer.fit from the global weights and the policy's state
    # (shuffle seed: seed * 1000 + round * 10 + partition id).
    reference = DeviceTrainer(models["adam"])
    round_1, state_1, _ = train_round(reference, fresh_weights, (x, y), epochs=1, seed=4010)
    assert all_equal(replies[0], round_1)
    reference.set_weights({**round_1, **(state_1 if policy == "keep" else fresh_state)})
    reference.fit(x, y, epochs=1, seed=4020, verbose=0)
    assert all_equal(replies[1], split_weights(reference.get_weights())[0])


def test_client_side_modules_import_no_tensorflow():
    package = REPO / "export" / "keras_spela_device"
    for path in sorted(package.rglob("*.py")) + [
        REPO / "export" / "flower_client.py",
        REPO / "export" / "flower_server.py",
    ]:
        name = path.relative_to(REPO)
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not imported & {"tensorflow", "keras", "keras_spela"}, (name, imported)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
