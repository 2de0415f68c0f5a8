"""export_tflite_micro: the train step's inputs, outputs and description, its arena, its
predictions equal LiteRT's, bad labels change nothing."""

import json
import os
import sys

import keras
import numpy as np
import pytest

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela_device import DeviceTrainer

BATCH = 16
NUM_CLASSES = 10


def copy_weights(weights):
    return {k: np.array(v, copy=True) for k, v in weights.items()}


def assert_weights_identical(before, after):
    assert sorted(before) == sorted(after)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
        assert np.all(np.isfinite(after[name])), name


# ------------------------------------------------------------------ micro
def test_micro_export_inputs_outputs_and_description(dense_exports):
    micro = dense_exports["exports"]["micro"]
    assert set(micro.inputs) == {"x", "y"}
    assert len(micro.inputs) == 2
    assert {"accepted", "loss", "scores", "exit_0_loss", "exit_1_loss"} <= set(micro.outputs)
    assert micro.size_bytes == os.path.getsize(micro.path)
    description_path = os.path.splitext(micro.path)[0] + ".json"
    assert os.path.exists(description_path)
    with open(description_path) as f:
        description = json.load(f)
    assert description["arena_bytes"] > 0
    assert description["arena_bytes"] == micro.arena_bytes
    assert description["inputs"] == micro.inputs
    assert description["outputs"] == micro.outputs
    assert description["batch_size"] == BATCH
    assert description["input_shape"] == [64]
    assert description["num_classes"] == NUM_CLASSES
    assert description["exits"] == ["exit_0", "exit_1"]
    assert description["optimizer"]["kind"] == "adam"
    # One variable per kernel block and bias, times (weight, m, v), plus
    # Adam's two beta powers; TFLite Micro counts the same.
    from tflite_micro import runtime as micro_runtime

    with open(micro.path, "rb") as f:
        data = f.read()
    assert description["resource_variables"] == micro_runtime.count_resource_variables(data)
    # Each is assigned once by the initializer and once by the step.
    assert 2 * description["resource_variables"] == micro.operators["ASSIGN_VARIABLE"]
    # The arena is the smallest that runs: 1 KiB less does not.
    with pytest.raises(RuntimeError):
        micro_runtime.Interpreter.from_bytes(data, arena_size=micro.arena_bytes - 1024)
    micro_runtime.Interpreter.from_bytes(data, arena_size=micro.arena_bytes)


def test_micro_predict_equals_litert_predict(dense_exports, digits):
    _, (x_test, _) = digits
    micro = DeviceTrainer(dense_exports["paths"]["micro_train"], runtime="micro")
    litert = DeviceTrainer(dense_exports["paths"]["adam"], runtime="litert")
    for n in (1, 37):
        np.testing.assert_allclose(
            micro.predict(x_test[:n]), litert.predict(x_test[:n]), rtol=1e-5, atol=1e-5
        )
    # Only the last exit is available on TFLite Micro.
    assert set(micro.predict(x_test[:3], exit="all")) == {"exit_1"}


def test_micro_inference_model_runs_on_tflite_micro(dense_exports, digits):
    from tflite_micro import runtime as micro_runtime

    _, (x_test, _) = digits
    with open(dense_exports["paths"]["micro_infer"], "rb") as f:
        interpreter = micro_runtime.Interpreter.from_bytes(f.read(), arena_size=1 << 22)
    interpreter.set_input(x_test[:BATCH], 0)
    interpreter.invoke()
    expected = DeviceTrainer(dense_exports["paths"]["adam"], runtime="litert").predict(
        x_test[:BATCH], exit="all"
    )
    outputs = []
    index = 0
    while True:
        try:
            outputs.append(np.array(interpreter.get_output(index)))
        except Exception:  # no more outputs
            break
        index += 1
    assert outputs
    matched = set()
    for output in outputs:
        hits = [
            k
            for k, v in expected.items()
            if v.shape == output.shape and np.allclose(output, v, rtol=1e-5, atol=1e-5)
        ]
        assert hits, "an output of the inference model matches no exit"
        matched.update(hits)
    assert matched == set(expected)


@pytest.mark.slow
def test_micro_rejects_bad_labels_without_change(tmp_path, digits, spela_mlp):
    (x_train, y_train), _ = digits
    model = spela_mlp((32, 16), seed=4, names=None)
    micro = keras_spela.export_tflite_micro(
        model,
        str(tmp_path / "micro.tflite"),
        batch_size=BATCH,
        optimizer="adam",
        learning_rate=1e-2,
        expose_weights=True,
    )
    trainer = DeviceTrainer(micro.path, runtime="micro")
    trainer.train_batch(x_train[:BATCH], y_train[:BATCH])
    before = copy_weights(trainer.get_weights())
    backend = trainer._backend
    x = x_train[BATCH : 2 * BATCH]
    for label in (NUM_CLASSES, -2):
        y = y_train[BATCH : 2 * BATCH].astype(np.int32)
        y[0] = label
        assert int(backend.train(x, y)["accepted"]) == 0
        assert_weights_identical(before, trainer.get_weights())
    bad_x = x.copy()
    bad_x[0, 0] = np.nan
    assert int(backend.train(bad_x, y_train[BATCH : 2 * BATCH].astype(np.int32))["accepted"]) == 0
    assert_weights_identical(before, trainer.get_weights())
    # Finite but huge inputs: TFLite Micro saturates float overflow at
    # +-FLT_MAX, so the step may accept them; no weight becomes NaN or inf.
    huge = np.full_like(x, 3e38)
    backend.train(huge, y_train[BATCH : 2 * BATCH].astype(np.int32))
    assert all(np.isfinite(w).all() for w in trainer.get_weights().values())
    with pytest.raises(NotImplementedError):
        trainer.set_weights(before)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, budget", [("sgd", 1.25), ("adam", 1.25)])
def test_micro_arena_close_to_weights_state_and_activations(tmp_path, optimizer, budget):
    """The train step's arena stays within `budget` x (learned weights +
    optimizer state + the two largest activations) for a 784-256-34 net."""
    keras.utils.set_random_seed(0)
    model = SpelaModel(
        [keras.Input((784,)), SpelaDense(256), SpelaDense(34)], num_classes=NUM_CLASSES
    )
    micro = keras_spela.export_tflite_micro(
        model, str(tmp_path / "micro.tflite"), batch_size=8, optimizer=optimizer
    )
    weights = sum(int(np.prod(v.shape)) * 4 for v in model.trainable_variables)
    state = {"sgd": 0, "adam": 2 * weights + 8}[optimizer]
    activations = 8 * (784 + 256) * 4
    floor = weights + state + activations
    print(f"{optimizer}: arena {micro.arena_bytes} bytes, {micro.arena_bytes / floor:.3f}x floor")
    assert micro.arena_bytes <= budget * floor
    # Blocks only reorganise memory: the layer-1 kernel is in several blocks.
    assert micro.operators["ASSIGN_VARIABLE"] > 4


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
