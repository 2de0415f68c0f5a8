"""export_tflite / export_tflite_micro: builtin operators only, and the exported
train step learns exactly like SpelaModel.fit on LiteRT and TFLite Micro."""

import os
import sys

import keras
import numpy as np
import pytest

import keras_spela
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela_device import DeviceTrainer
from keras_spela_device import DeviceTrainingError

BATCH = 16
STEPS = 24
NUM_CLASSES = 10

OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(learning_rate=0.5),
    "momentum": lambda: keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
    "nesterov": lambda: keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(learning_rate=1e-2),
}


def relative_error(actual, expected):
    """max|a - b| / max|b|."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def host_weights(model, layers=None):
    """The trainable weights of a model's SPELA layers, named as on the device."""
    weights = {}
    for layer in model.exit_layers:
        if layers is not None and layer.name not in layers:
            continue
        for variable in layer.trainable_variables:
            weights[f"{layer.name}_{variable.path.split('/')[-1]}"] = variable.numpy()
    return weights


def moved(new, old):
    """Whether an array changed by more than 0.1% of its size."""
    new, old = np.asarray(new), np.asarray(old)
    return float(np.max(np.abs(new - old))) > 1e-3 * float(np.max(np.abs(new)))


def copy_weights(weights):
    return {k: np.array(v, copy=True) for k, v in weights.items()}


def assert_weights_identical(before, after):
    assert sorted(before) == sorted(after)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
        assert np.all(np.isfinite(after[name])), name


def tensor_types(model_bytes):
    """{tensor name: TFLite type name} over every subgraph of a model."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.TensorType).items() if k.isupper()}
    model = schema.Model.GetRootAsModel(bytearray(model_bytes), 0)
    types = {}
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            types[tensor.Name().decode()] = names[tensor.Type()]
    return types


# ------------------------------------------------------------------ parity
# Each model has two SPELA layers with different local losses: every
# optimizer once, every local loss twice, once in each position.
PARITY_CASES = [
    ("sgd", ("softmax_cosine", "cosine")),
    ("momentum", ("log_cosine", "euclidean")),
    ("nesterov", ("euclidean", "softmax_cosine")),
    ("adam", ("cosine", "log_cosine")),
]


@pytest.mark.parametrize(
    "optimizer_name, local_loss",
    # The first case is the quick run's (`-m "not slow"`).
    [PARITY_CASES[0], *(pytest.param(*case, marks=pytest.mark.slow) for case in PARITY_CASES[1:])],
    ids=[f"{o}-{a}-{b}" for o, (a, b) in PARITY_CASES],
)
def test_device_training_equals_host_fit(tmp_path, digits, optimizer_name, local_loss, spela_mlp):
    """SpelaModel.fit, LiteRT and TFLite Micro from the same initial weights on
    the same batches (no shuffling) end with the same weights."""
    (x_train, y_train), _ = digits
    x, y = x_train[: BATCH * STEPS], y_train[: BATCH * STEPS]
    model = spela_mlp((32, 16), local_loss=list(local_loss), names=None)
    assert [layer.rule.local_loss for layer in model.exit_layers] == list(local_loss)
    model.compile(optimizer=OPTIMIZERS[optimizer_name]())
    initial = copy_weights(host_weights(model))
    lite = keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=BATCH)
    # Small blocks: every kernel is updated in several blocks on the device.
    micro = keras_spela.export_tflite_micro(
        model,
        str(tmp_path / "micro.tflite"),
        batch_size=BATCH,
        expose_weights=True,
        block_bytes=1024,
    )
    # Export changes no host weight.
    assert_weights_identical(initial, host_weights(model))

    history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    expected = host_weights(model)

    litert = DeviceTrainer(lite.path, runtime="litert")
    assert litert.runtime == "litert"
    micro_trainer = DeviceTrainer(micro.path, runtime="micro")
    assert micro_trainer.runtime == "micro"
    # Both start from the host's initial weights.
    for trainer in (litert, micro_trainer):
        start = trainer.get_weights()
        for name in initial:
            np.testing.assert_array_equal(start[name], initial[name])

    litert_history = litert.fit(x, y, epochs=1, shuffle=False, verbose=0)
    micro_history = micro_trainer.fit(x, y, epochs=1, shuffle=False, verbose=0)

    litert_weights = litert.get_weights()
    micro_weights = micro_trainer.get_weights()
    errors = {}
    for name, reference in expected.items():
        # The weights moved: the comparison is not trivially true.
        assert moved(reference, initial[name]), name
        errors[name] = (
            relative_error(litert_weights[name], reference),
            relative_error(micro_weights[name], reference),
        )
    worst = max(max(e) for e in errors.values())
    print(f"max relative error (LiteRT, micro): {errors}")
    assert worst <= 1e-5, errors
    # The mean loss of the epoch agrees too.
    host_loss = history.history["loss"][-1]
    assert litert_history["loss"][-1] == pytest.approx(host_loss, rel=1e-4)
    assert micro_history["loss"][-1] == pytest.approx(host_loss, rel=1e-4)


# ----------------------------------------------------------------- infer
@pytest.mark.parametrize("num_examples", [1, 16, 37, 360])
def test_infer_equals_predict_at_every_exit(dense_exports, digits, num_examples):
    model = dense_exports["model"]
    _, (x_test, _) = digits
    x = x_test[:num_examples]
    trainer = DeviceTrainer(dense_exports["paths"]["adam"], runtime="litert")
    assert trainer.exits == ["exit_0", "exit_1"]
    device = trainer.predict(x, exit="all")
    host = model.predict(x, exit="all", verbose=0)
    assert sorted(device) == trainer.exits
    for k, layer in enumerate(model.exit_layers):
        assert device[f"exit_{k}"].shape == (num_examples, NUM_CLASSES)
        np.testing.assert_allclose(device[f"exit_{k}"], host[layer.name], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(trainer.predict(x), device["exit_1"])


def test_infer_signature_scores_is_last_exit(dense_exports, digits):
    from ai_edge_litert.interpreter import Interpreter

    _, (x_test, _) = digits
    interpreter = Interpreter(model_path=dense_exports["paths"]["sgd"])
    infer = interpreter.get_signature_runner("infer")
    outputs = infer(x=x_test[:5])
    assert sorted(outputs) == ["exit_0_scores", "exit_1_scores", "scores"]
    np.testing.assert_array_equal(outputs["scores"], outputs["exit_1_scores"])
    host = dense_exports["model"].predict(x_test[:5], exit=0, verbose=0)
    np.testing.assert_allclose(outputs["exit_0_scores"], host, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------- weights
def test_get_set_weights_round_trip(dense_exports, digits):
    (x_train, y_train), (x_test, _) = digits
    first = DeviceTrainer(dense_exports["paths"]["adam"], runtime="litert")
    first.fit(x_train[: 5 * BATCH], y_train[: 5 * BATCH], shuffle=False, verbose=0)
    weights = copy_weights(first.get_weights())
    assert float(weights["adam_beta_1_power"]) == pytest.approx(0.9**5, rel=1e-5)

    second = DeviceTrainer(dense_exports["paths"]["adam"], runtime="litert")
    untrained = second.get_weights()
    assert any(not np.array_equal(untrained[k], weights[k]) for k in weights)
    second.set_weights(weights)
    assert_weights_identical(weights, second.get_weights())
    np.testing.assert_array_equal(
        second.predict(x_test, exit="all")["exit_0"], first.predict(x_test, exit="all")["exit_0"]
    )
    np.testing.assert_array_equal(second.predict(x_test), first.predict(x_test))


def test_restored_trainer_continues_like_original(dense_exports, digits, tmp_path):
    (x_train, y_train), _ = digits
    path = dense_exports["paths"]["adam"]
    original = DeviceTrainer(path, runtime="litert")
    original.fit(x_train[: 6 * BATCH], y_train[: 6 * BATCH], shuffle=False, verbose=0)
    saved = str(tmp_path / "weights.npz")
    original.save_weights(saved)
    with np.load(saved) as data:
        assert sorted(data.files) == sorted(original.get_weights())

    restored = DeviceTrainer(path, runtime="litert")
    restored.load_weights(saved)
    fresh = DeviceTrainer(path, runtime="litert")  # control: not restored

    x_next = x_train[6 * BATCH : 12 * BATCH]
    y_next = y_train[6 * BATCH : 12 * BATCH]
    for trainer in (original, restored, fresh):
        trainer.fit(x_next, y_next, shuffle=False, verbose=0)
    assert_weights_identical(original.get_weights(), restored.get_weights())
    control = fresh.get_weights()
    assert any(not np.array_equal(control[k], v) for k, v in original.get_weights().items())


# ---------------------------------------------------------- train_layers
@pytest.mark.slow
@pytest.mark.parametrize("which", ["last_by_count", "first_by_name"])
def test_train_layers_frozen_layer_unchanged_and_trainable_layer_learns(
    tmp_path, digits, which, spela_mlp
):
    (x_train, y_train), (x_test, _) = digits
    x, y = x_train[: BATCH * STEPS], y_train[: BATCH * STEPS]
    model = spela_mlp((32, 16), seed=3, names=None)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    first, last = [layer.name for layer in model.exit_layers]
    train_layers, learner, frozen = {
        "last_by_count": (1, last, first),
        "first_by_name": ([first], first, last),
    }[which]
    export = keras_spela.export_tflite(
        model, str(tmp_path / "m.tflite"), batch_size=BATCH, train_layers=train_layers
    )
    trainer = DeviceTrainer(export.path, runtime="litert")
    before = copy_weights(trainer.get_weights())
    # Only the learning layer's weights are variables of the device model.
    assert sorted(k for k in before if not k.endswith(("_m", "_v", "_power"))) == sorted(
        host_weights(model, [learner])
    )
    frozen_host = copy_weights(host_weights(model, [frozen]))
    exit_0_before = trainer.predict(x_test, exit=0)

    history = trainer.fit(x, y, shuffle=False, verbose=0)
    exit_index = [layer.name for layer in model.exit_layers].index(learner)
    assert set(history) == {f"exit_{exit_index}_loss", "loss"}
    after = trainer.get_weights()
    for name in host_weights(model, [learner]):
        assert moved(after[name], before[name]), name

    # The host trains the same layer only: same weights, and the frozen layer
    # keeps its weights on both.
    model.train_layers = [learner]
    model.train_function = None
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert_weights_identical(frozen_host, host_weights(model, [frozen]))
    for name, reference in host_weights(model, [learner]).items():
        assert relative_error(after[name], reference) <= 1e-5, name
    device_scores = trainer.predict(x_test, exit="all")
    host_scores = model.predict(x_test, exit="all", verbose=0)
    for k, layer in enumerate(model.exit_layers):
        np.testing.assert_allclose(
            device_scores[f"exit_{k}"], host_scores[layer.name], rtol=1e-5, atol=1e-5
        )
    if which == "last_by_count":
        # The frozen first layer gives bit-identical scores after training.
        np.testing.assert_array_equal(trainer.predict(x_test, exit=0), exit_0_before)


def test_quantize_frozen_is_smaller_and_still_trains(dense_exports, digits):
    (x_train, y_train), (x_test, y_test) = digits
    float_export = dense_exports["exports"]["big_float"]
    quantized_export = dense_exports["exports"]["quantized"]
    assert quantized_export.size_bytes < 0.75 * float_export.size_bytes, (
        quantized_export.size_bytes,
        float_export.size_bytes,
    )
    assert os.path.getsize(quantized_export.path) == quantized_export.size_bytes

    with open(quantized_export.path, "rb") as f:
        types = tensor_types(f.read())
    # The learning layer is float32 resource variables; some frozen constant is int8.
    assert "INT8" in types.values()
    big = dense_exports["big_model"]
    frozen_kernel = big.exit_layers[0].kernel
    assert frozen_kernel.shape == (64, 512)

    quantized = DeviceTrainer(quantized_export.path, runtime="litert")
    floating = DeviceTrainer(float_export.path, runtime="litert")
    weights = quantized.get_weights()
    assert sorted(weights) == sorted(floating.get_weights())
    for value in weights.values():
        assert value.dtype == np.float32

    # int8 frozen features give scores close to the float ones.
    host = big.predict(x_test, exit="all", verbose=0)
    for k, layer in enumerate(big.exit_layers):
        np.testing.assert_allclose(
            quantized.predict(x_test, exit=k), host[layer.name], rtol=0, atol=0.02
        )
        np.testing.assert_allclose(
            floating.predict(x_test, exit=k), host[layer.name], rtol=1e-5, atol=1e-5
        )

    # The float32 learning layer trains behind the int8 frozen one, about as
    # the all-float model does.
    q_loss = quantized.train_batch(x_train[:BATCH], y_train[:BATCH])["loss"]
    f_loss = floating.train_batch(x_train[:BATCH], y_train[:BATCH])["loss"]
    assert q_loss == pytest.approx(f_loss, rel=1e-2)
    before = quantized.evaluate(x_test, y_test)
    exit_0 = quantized.predict(x_test, exit=0)
    start = copy_weights(quantized.get_weights())
    quantized.fit(x_train, y_train, epochs=2, shuffle=False, verbose=0)
    floating.fit(x_train, y_train, epochs=2, shuffle=False, verbose=0)
    after = quantized.evaluate(x_test, y_test)
    float_after = floating.evaluate(x_test, y_test)
    print(f"quantize_frozen accuracy {before} -> {after}; float model {float_after}")
    trained = quantized.get_weights()
    for name in host_weights(big, [big.exit_layers[1].name]):
        assert moved(trained[name], start[name]), name
    assert after["exit_1_accuracy"] > before["exit_1_accuracy"]
    assert after["exit_1_accuracy"] > 0.8, after
    assert abs(after["exit_1_accuracy"] - float_after["exit_1_accuracy"]) < 0.05
    # The int8 frozen layer did not change.
    np.testing.assert_array_equal(quantized.predict(x_test, exit=0), exit_0)


# ----------------------------------------------------------- bad inputs
def _raw_runners(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    return (
        interpreter,
        interpreter.get_signature_runner("train"),
        interpreter.get_signature_runner("get_weights"),
        interpreter.get_signature_runner("set_weights"),
    )


def _read(get_weights):
    return {k: np.array(v, copy=True) for k, v in get_weights(request=np.int32(0)).items()}


@pytest.mark.parametrize("optimizer_name", ["momentum", "adam"])
def test_train_signature_rejects_bad_batch_without_change(dense_exports, digits, optimizer_name):
    (x_train, y_train), _ = digits
    _, train, get_weights, _ = _raw_runners(dense_exports["paths"][optimizer_name])
    for step in range(2):  # non-zero optimizer state first
        out = train(
            x=x_train[step * BATCH : (step + 1) * BATCH],
            y=y_train[step * BATCH : (step + 1) * BATCH].astype(np.int32),
        )
        assert int(out["accepted"]) == 1
    x = x_train[2 * BATCH : 3 * BATCH].copy()
    y = y_train[2 * BATCH : 3 * BATCH].astype(np.int32)

    def with_x(value):
        bad = x.copy()
        bad[3, 5] = value
        return bad, y

    def with_label(value):
        bad = y.copy()
        bad[7] = value
        return x, bad

    cases = {
        "nan in x": with_x(np.nan),
        "inf in x": with_x(np.inf),
        "-inf in x": with_x(-np.inf),
        "label 10": with_label(NUM_CLASSES),
        "label -2": with_label(-2),
        "finite x that overflows in the layer": (np.full_like(x, 3e38), y),
    }
    before = _read(get_weights)
    for case, (bad_x, bad_y) in cases.items():
        out = train(x=bad_x, y=bad_y)
        assert int(out["accepted"]) == 0, case
        assert_weights_identical(before, _read(get_weights))
    # A good batch is still learned from afterwards.
    out = train(x=x, y=y)
    assert int(out["accepted"]) == 1
    after = _read(get_weights)
    assert all(np.all(np.isfinite(v)) for v in after.values())
    assert any(not np.array_equal(after[k], before[k]) for k in before)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_padding_rows_make_a_short_batch_learn_like_fit(
    tmp_path, digits, optimizer_name, spela_mlp
):
    """Rows labelled -1 are padding: 2 full batches and a short one of 5
    (padded to the static batch) end at the weights of `fit` with a short
    last batch, on LiteRT and TFLite Micro; a batch of padding only changes
    nothing."""
    (x_train, y_train), _ = digits
    n = 2 * BATCH + 5
    x, y = x_train[:n], y_train[:n].astype(np.int32)
    model = spela_mlp((32, 16), seed=6, names=None)
    model.compile(OPTIMIZERS[optimizer_name]())
    lite = keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=BATCH)
    micro = keras_spela.export_tflite_micro(
        model, str(tmp_path / "micro.tflite"), batch_size=BATCH, expose_weights=True
    )
    initial = copy_weights(host_weights(model))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    expected = host_weights(model)

    batches = []
    for start in range(0, n, BATCH):
        xb = np.zeros((BATCH, 64), np.float32)
        yb = np.full((BATCH,), -1, np.int32)
        xb[: len(x[start : start + BATCH])] = x[start : start + BATCH]
        yb[: len(y[start : start + BATCH])] = y[start : start + BATCH]
        batches.append((xb, yb))
    _, train, get_weights, _ = _raw_runners(lite.path)
    micro_trainer = DeviceTrainer(micro.path, runtime="micro")
    runners = {
        "litert": (train, lambda: _read(get_weights)),
        "micro": (lambda x, y: micro_trainer._backend.train(x, y), micro_trainer.get_weights),
    }
    for runtime, (step, read) in runners.items():
        for xb, yb in batches:
            assert int(step(x=xb, y=yb)["accepted"]) == 1, runtime
        weights = read()
        for name, reference in expected.items():
            assert moved(reference, initial[name]), name
            assert relative_error(weights[name], reference) <= 1e-5, (runtime, name)
        before = copy_weights(read())
        padding_only = (np.zeros((BATCH, 64), np.float32), np.full((BATCH,), -1, np.int32))
        assert int(step(x=padding_only[0], y=padding_only[1])["accepted"]) == 0, runtime
        assert_weights_identical(before, read())


@pytest.mark.slow
def test_optimizer_state_does_not_store_the_weights_twice(tmp_path, spela_mlp):
    """Adam's moments start as copies of their weights (read as zero by the
    first step), so the file holds the kernel values once, not as extra
    kernel-sized zero constants."""
    model = spela_mlp((512, 16), seed=7, names=None)
    sizes = {
        name: keras_spela.export_tflite(
            model,
            str(tmp_path / f"{name}.tflite"),
            batch_size=8,
            optimizer=name,
            learning_rate=1e-2,
        ).size_bytes
        for name in ("sgd", "adam")
    }
    kernel_bytes = 64 * 512 * 4
    assert sizes["adam"] - sizes["sgd"] < kernel_bytes / 4, sizes
    # A fresh model reports zero moments.
    state = DeviceTrainer(str(tmp_path / "adam.tflite")).get_weights()
    moments = [k for k in state if k.endswith(("_kernel_m", "_kernel_v"))]
    assert len(moments) == 4 and not any(np.any(state[k]) for k in moments)


def test_set_weights_signature_refuses_nan(dense_exports):
    _, _, get_weights, set_weights = _raw_runners(dense_exports["paths"]["adam"])
    before = _read(get_weights)
    bad = copy_weights(before)
    name = sorted(k for k in bad if k.endswith("_kernel"))[0]
    bad[name][0, 0] = np.nan
    assert int(set_weights(**bad)["accepted"]) == 0
    assert_weights_identical(before, _read(get_weights))
    good = {k: v + 0.5 for k, v in before.items()}
    # Adam has started (beta^t < 1): its moments are read as they are set.
    good["adam_beta_1_power"] = np.float32(0.5)
    good["adam_beta_2_power"] = np.float32(0.5)
    assert int(set_weights(**good)["accepted"]) == 1
    assert_weights_identical(good, _read(get_weights))


@pytest.fixture()
def adam_trainer(dense_exports, digits):
    (x_train, y_train), _ = digits
    trainer = DeviceTrainer(dense_exports["paths"]["adam"], runtime="litert")
    trainer.train_batch(x_train[:BATCH], y_train[:BATCH])
    return trainer


def _bad_batches(x, y):
    nan_x = x.copy()
    nan_x[0, 0] = np.nan
    inf_x = x.copy()
    inf_x[1, 2] = np.inf
    high = y.copy()
    high[0] = NUM_CLASSES
    low = y.copy()
    low[0] = -1
    return {
        "batch too large": (np.concatenate([x, x[:1]]), np.concatenate([y, y[:1]]), "at most"),
        "integer x": (np.round(x * 16).astype(np.int64), y, "floating"),
        "float labels": (x, y.astype(np.float32), "integer"),
        "label too high": (x, high, r"\[0, 10\)"),
        "negative label": (x, low, r"\[0, 10\)"),
        "nan in x": (nan_x, y, "NaN"),
        "inf in x": (inf_x, y, "infinite"),
        "wrong feature shape": (x[:, :63], y, "shape"),
        "image-shaped x": (x.reshape(-1, 8, 8), y, "shape"),
        "labels of wrong shape": (x, np.stack([y, y], axis=1), "shape"),
        "labels of wrong length": (x, y[:-1], "shape"),
    }


@pytest.mark.parametrize(
    "case", list(_bad_batches(np.zeros((BATCH, 64), np.float32), np.zeros(BATCH, np.int64)))
)
def test_device_trainer_raises_on_bad_batch_without_change(adam_trainer, digits, case):
    (x_train, y_train), _ = digits
    x, y = x_train[BATCH : 2 * BATCH], y_train[BATCH : 2 * BATCH]
    bad_x, bad_y, message = _bad_batches(x, y)[case]
    before = copy_weights(adam_trainer.get_weights())
    with pytest.raises(DeviceTrainingError, match=message):
        adam_trainer.train_batch(bad_x, bad_y)
    assert_weights_identical(before, adam_trainer.get_weights())


def test_device_trainer_accepts_float64_inputs(adam_trainer, digits):
    (x_train, y_train), _ = digits
    x, y = x_train[BATCH : 2 * BATCH], y_train[BATCH : 2 * BATCH]
    before = copy_weights(adam_trainer.get_weights())
    losses = adam_trainer.train_batch(x.astype(np.float64), y.astype(np.int64))
    assert np.isfinite(losses["loss"])
    after = adam_trainer.get_weights()
    assert any(not np.array_equal(after[k], before[k]) for k in before)
    np.testing.assert_allclose(
        adam_trainer.predict(x.astype(np.float64)), adam_trainer.predict(x), rtol=0, atol=0
    )


def test_device_trainer_fit_rejects_bad_data_without_change(adam_trainer, digits):
    (x_train, y_train), _ = digits
    before = copy_weights(adam_trainer.get_weights())
    x, y = x_train[: 4 * BATCH].copy(), y_train[: 4 * BATCH].copy()
    x[-1, -1] = np.nan
    with pytest.raises(DeviceTrainingError, match="NaN"):
        adam_trainer.fit(x, y, verbose=0)
    with pytest.raises(DeviceTrainingError, match="at least one example"):
        adam_trainer.fit(x_train[:0], y_train[:0], verbose=0)
    assert_weights_identical(before, adam_trainer.get_weights())


def test_device_trainer_set_weights_refuses_bad_values(adam_trainer):
    before = copy_weights(adam_trainer.get_weights())
    kernel = sorted(k for k in before if k.endswith("_kernel"))[0]
    for value, message in ((np.nan, "NaN"), (np.inf, "inf")):
        bad = copy_weights(before)
        bad[kernel][1, 1] = value
        with pytest.raises(DeviceTrainingError, match=message):
            adam_trainer.set_weights(bad)
        assert_weights_identical(before, adam_trainer.get_weights())
    missing = copy_weights(before)
    del missing[kernel]
    with pytest.raises(DeviceTrainingError, match="missing"):
        adam_trainer.set_weights(missing)
    wrong_shape = copy_weights(before)
    wrong_shape[kernel] = wrong_shape[kernel][:-1]
    with pytest.raises(DeviceTrainingError, match="shape"):
        adam_trainer.set_weights(wrong_shape)
    assert_weights_identical(before, adam_trainer.get_weights())


# ------------------------------------------------------- exporter errors
def test_export_rejects_plain_keras_model(tmp_path):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="SpelaModel"):
        keras_spela.export_tflite(model, str(path))
    with pytest.raises(ValueError, match="SpelaModel"):
        keras_spela.export_tflite_micro(model, str(path))
    assert not path.exists()


def test_export_rejects_model_without_input(tmp_path, digits):
    keras.utils.set_random_seed(0)
    model = SpelaModel([SpelaDense(32), SpelaDense(16)], num_classes=NUM_CLASSES)
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="keras.Input"):
        keras_spela.export_tflite(model, str(path))
    # Built by a call, the input shape is still not declared.
    (x_train, _), _ = digits
    model(x_train[:2])
    with pytest.raises(ValueError, match="keras.Input"):
        keras_spela.export_tflite(model, str(path))
    with pytest.raises(ValueError, match="keras.Input"):
        keras_spela.export_tflite_micro(model, str(path))
    assert not path.exists()


def test_export_rejects_unsupported_optimizer(tmp_path, spela_mlp):
    model = spela_mlp((32, 16), names=None)
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="RMSprop"):
        keras_spela.export_tflite(model, str(path), optimizer=keras.optimizers.RMSprop(1e-3))
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3))
    with pytest.raises(ValueError, match="RMSprop"):
        keras_spela.export_tflite(model, str(path))
    with pytest.raises(ValueError, match="RMSprop"):
        keras_spela.export_tflite_micro(model, str(path))
    with pytest.raises(ValueError, match="weight_decay"):
        keras_spela.export_tflite(
            model, str(path), optimizer=keras.optimizers.Adam(1e-3, weight_decay=0.1)
        )
    assert not path.exists()


@pytest.mark.parametrize("train_layers", ["no_such_layer", ["no_such_layer"], 0, 3, -1, []])
def test_export_rejects_bad_train_layers(tmp_path, train_layers, spela_mlp):
    model = spela_mlp((32, 16), names=None)
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="train_layers"):
        keras_spela.export_tflite(model, str(path), train_layers=train_layers)
    with pytest.raises(ValueError, match="train_layers"):
        keras_spela.export_tflite_micro(model, str(path), train_layers=train_layers)
    assert not path.exists()


@pytest.mark.parametrize("batch_size", [0, -4, 2.5])
def test_export_rejects_bad_batch_size(tmp_path, batch_size, spela_mlp):
    model = spela_mlp((32, 16), names=None)
    with pytest.raises(ValueError, match="batch_size"):
        keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=batch_size)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["litert", "micro"])
def test_gradient_overflow_rejected_on_the_device(tmp_path, digits, runtime, spela_mlp):
    """Finite inputs and losses whose gradients' squares would overflow
    (Adam's second moment would turn inf, then every weight NaN): rejected,
    and later batches train to finite weights."""
    (x_train, y_train), _ = digits
    model = spela_mlp((32, 16), seed=5, local_loss="euclidean", names=None)
    if runtime == "litert":
        path = keras_spela.export_tflite(
            model, str(tmp_path / "m.tflite"), batch_size=BATCH, optimizer="adam"
        ).path
    else:
        path = keras_spela.export_tflite_micro(
            model,
            str(tmp_path / "m.tflite"),
            batch_size=BATCH,
            optimizer="adam",
            expose_weights=True,
        ).path
    trainer = DeviceTrainer(path, runtime=runtime)
    trainer.train_batch(x_train[:BATCH], y_train[:BATCH])
    before = copy_weights(trainer.get_weights())
    x, y = x_train[BATCH : 2 * BATCH], y_train[BATCH : 2 * BATCH].astype(np.int32)
    assert int(trainer._backend.train(x * 1e10, y)["accepted"]) == 0
    assert_weights_identical(before, trainer.get_weights())
    trainer.fit(x_train[: 4 * BATCH], y_train[: 4 * BATCH], epochs=1, verbose=0)
    assert all(np.isfinite(w).all() for w in trainer.get_weights().values())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
