"""SpelaConv2D: the closed-form conv rule against a GradientTape scoped to
the layer, every option; training on the canvas digits with fit; .keras
round trip; bad arguments; device training equal to fit on LiteRT and TFLite
Micro."""

import pathlib
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_spela
from keras_spela import SpelaConv2D
from keras_spela import SpelaDense
from keras_spela import SpelaModel
from keras_spela.core import primitives
from keras_spela.core import rules
from keras_spela.lite import flatbuffer_ops
from keras_spela.testing import assert_devices_train_like_fit
from keras_spela_device import DeviceTrainer

NUM_CLASSES = 10
CASES = {
    "3x3 valid pool 2": dict(objective="pooled", kernel_size=3),
    "3x3 same stride 2": dict(objective="pooled", kernel_size=3, strides=2, padding="same"),
    "1-D (1, 5) kernel": dict(objective="pooled", kernel_size=(1, 5), pool_size=(1, 2)),
    "pool 3 (map not divisible)": dict(
        objective="pooled", kernel_size=3, pool_size=3, padding="same"
    ),
    "no pool, tanh, cosine": dict(
        objective="pooled", kernel_size=2, pool_size=1, activation="tanh", local_loss="cosine"
    ),
    "stride 2 valid, log_cosine": dict(
        objective="pooled", kernel_size=3, strides=(2, 1), local_loss="log_cosine"
    ),
    "relu, euclidean, no bias": dict(
        objective="pooled", kernel_size=3, activation="relu", local_loss="euclidean", use_bias=False
    ),
    "projection (the paper's), squared_cosine": dict(
        kernel_size=3, objective="projection", projection_dim=7, padding="same"
    ),
    "projection, softmax_cosine, 3 groups": dict(
        kernel_size=3,
        objective="projection",
        projection_dim=5,
        groups=3,
        local_loss="softmax_cosine",
    ),
    "projection, 1-D, log_cosine, pool 1": dict(
        kernel_size=(1, 5),
        objective="projection",
        projection_dim=4,
        pool_size=1,
        local_loss="log_cosine",
    ),
    "pooled, squared_cosine": dict(objective="pooled", kernel_size=3, local_loss="squared_cosine"),
    "layer normalization, same, stride 2": dict(
        objective="pooled", kernel_size=3, padding="same", strides=2, normalization="layer"
    ),
    "instance normalization, projection": dict(
        kernel_size=3, normalization="instance", objective="projection", projection_dim=5
    ),
    "instance normalization, no bias, tanh": dict(
        objective="pooled",
        kernel_size=2,
        normalization="instance",
        use_bias=False,
        activation="tanh",
    ),
    "readout, 3x3 same": dict(kernel_size=3, padding="same", objective="readout"),
    "readout, grid 3 over a 4x5 map, stride 2": dict(
        kernel_size=3, strides=2, padding="same", objective="readout", readout_grid=3, pool_size=1
    ),
    "readout, grid (2, 3), pool 3, layer norm": dict(
        kernel_size=3,
        pool_size=3,
        padding="same",
        objective="readout",
        readout_grid=(2, 3),
        normalization="layer",
    ),
    "readout, 1-D, no bias": dict(
        kernel_size=(1, 5),
        pool_size=(1, 2),
        objective="readout",
        readout_grid=(1, 4),
        use_bias=False,
    ),
}
EXTRA_WEIGHTS = {"pooled": 0, "projection": 1, "readout": 2}


@pytest.fixture(params=["fused", "builtins"])
def lowering(request):
    """Runs the test under each lowering of the rule's primitives."""
    with primitives.lowering(request.param):
        yield request.param


@pytest.mark.parametrize("case", list(CASES))
def test_closed_form_gradients_match_a_tape_scoped_to_the_layer(case, lowering):
    config = CASES[case]
    shape = (5, 1, 17, 3) if config["kernel_size"] == (1, 5) else (5, 9, 10, 3)
    expected_weights = 2 + EXTRA_WEIGHTS[config["objective"]]
    rng = np.random.default_rng(list(CASES).index(case))
    layer = SpelaConv2D(6, num_classes=4, seed=1, **config)
    x = tf.constant(rng.normal(size=shape).astype(np.float32))
    targets = rules.one_hot(tf.constant(rng.integers(0, 4, 5).astype(np.int32)), 4)
    weights = rng.random(5).astype(np.float32)
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        error = layer.local_error(x, targets, tf.constant(weights))
    expected = tape.gradient(error.loss, layer.trainable_variables)
    gradients = layer.parameter_gradients(error)
    assert len(gradients) == expected_weights - (not config.get("use_bias", True))
    for gradient, reference, variable in zip(gradients, expected, layer.trainable_variables):
        assert gradient.shape == variable.shape
        assert np.max(np.abs(reference.numpy())) > 1e-6
        np.testing.assert_allclose(gradient.numpy(), reference.numpy(), rtol=1e-4, atol=1e-7)
    assert tuple(error.outputs.shape) == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(error.outputs.numpy(), layer(x).numpy(), rtol=1e-6)
    bound = float(layer.gradient_bound(error))
    assert bound >= max(float(np.max(np.abs(g.numpy()))) for g in gradients)


@pytest.mark.parametrize("pool_size", [2, 3])
def test_pooling_ties_are_broken_like_the_tape(pool_size, lowering):
    # Flat regions (the canvas background) make every cell of a window equal:
    # the gradient goes to the first one, as TensorFlow's MaxPoolGrad does.
    layer = SpelaConv2D(3, 2, pool_size=pool_size, num_classes=3, seed=0)
    x = np.zeros((4, 9, 9, 1), np.float32)
    x[:, 2:5, 3:6] = np.random.default_rng(0).random((4, 3, 3, 1))
    targets = rules.one_hot(tf.constant([0, 1, 2, 0]), 3)
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        error = layer.local_error(tf.constant(x), targets)
    expected = tape.gradient(error.loss, layer.trainable_variables)
    for gradient, reference in zip(layer.parameter_gradients(error), expected):
        np.testing.assert_allclose(gradient.numpy(), reference.numpy(), rtol=1e-4, atol=1e-7)


def test_oracle_detects_a_wrong_conv_gradient():
    layer = SpelaConv2D(4, 3, num_classes=3, seed=0)
    x = tf.random.stateless_normal((4, 8, 8, 2), seed=(1, 2))
    targets = rules.one_hot(tf.constant([0, 1, 2, 0]), 3)
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        error = layer.local_error(x, targets)
    expected = tape.gradient(error.loss, layer.kernel)
    wrong = layer.parameter_gradient(error._replace(grad_z=error.grad_z * 1.01), "kernel")
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(wrong.numpy(), expected.numpy(), rtol=1e-4, atol=1e-7)


def _canvas_model(seed=0, filters=(16, 32), **conv_options):
    keras.utils.set_random_seed(seed)
    return SpelaModel(
        [
            keras.Input((20, 20, 1)),
            SpelaConv2D(filters[0], 3, padding="same", name="conv1", **conv_options),
            SpelaConv2D(filters[1], 3, padding="same", name="conv2", **conv_options),
            keras.layers.Flatten(),
            SpelaDense(34, name="dense"),
        ],
        num_classes=NUM_CLASSES,
    )


@pytest.mark.slow
def test_canvas_digits_train_with_fit(canvas_digits, tmp_path):
    (x, y), (x_test, y_test) = canvas_digits
    model = _canvas_model(filters=(32, 64))
    model.compile(keras.optimizers.Adam(3e-3))
    history = model.fit(x, y, batch_size=50, epochs=10, verbose=0, validation_data=(x_test, y_test))
    assert {"conv1_loss", "conv2_accuracy", "val_dense_accuracy"} <= set(history.history)
    # The second conv exit learns the shifted digits (a dense MLP on the
    # canvas reaches about 49%, see the CNN issue's table).
    assert max(history.history["val_conv2_accuracy"]) >= 0.85, history.history
    path = str(tmp_path / "cnn.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict(x_test[:20], exit="conv2", verbose=0),
        model.predict(x_test[:20], exit="conv2", verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_two_phase_schedule_trains_the_conv_stack_then_the_head(canvas_digits):
    (x, y), _ = canvas_digits
    model = _canvas_model(seed=3, filters=(4, 8))
    model.compile()
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    conv_paths = {v.path for v in model.trainable_variables if v.path.startswith("conv")}
    histories = model.fit_layerwise(
        x[:200], y[:200], epochs=[2, 1], stages="by_kind", batch_size=50, verbose=0
    )
    assert [len(h.history["conv1_loss"]) for h in histories[:1]] == [2]
    assert "dense_loss" not in histories[0].history
    assert "conv1_loss" not in histories[1].history and "dense_loss" in histories[1].history
    after = {v.path: v.numpy() for v in model.trainable_variables}
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    assert changed == set(before) and conv_paths < changed
    assert model.train_layers == ["conv1", "conv2", "dense"]
    with pytest.raises(ValueError, match="one per stage"):
        model.fit_layerwise(x[:50], y[:50], epochs=[1, 2, 3], stages="by_kind", verbose=0)
    with pytest.raises(ValueError, match="train_layers"):
        model.fit_layerwise(x[:50], y[:50], stages=[["conv1"], ["nope"]], verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer, variant",
    # Every objective (readout, the default, also under layer and instance
    # normalisation), every normalisation and every optimizer on the conv
    # weights (kernels, read-out, projection): the optimizers' updates do not
    # depend on the objective (the dense parity tests cross them with every
    # local loss).
    [
        ("adam", "readout"),
        ("sgd", "pooled"),
        ("momentum", "projection"),
        ("adam", "layer"),
        ("momentum", "instance"),
        ("sgd", "readout layer"),
    ],
)
def test_conv_device_training_equals_host_fit(canvas_digits, tmp_path, optimizer, variant):
    (x, y), _ = canvas_digits
    batch, steps = 8, 20
    x, y = x[: batch * steps + 3], y[: batch * steps + 3]  # a short last batch too
    options = {
        "readout": dict(objective="readout"),
        "readout layer": dict(objective="readout", normalization="layer", readout_grid=2),
        "pooled": dict(objective="pooled"),
        "projection": dict(objective="projection", projection_dim=6),
        "layer": dict(normalization="layer"),
        "instance": dict(normalization="instance"),
    }[variant]
    # Max-pool windows whose two largest cells differ by float rounding only
    # (the runtimes' conv kernels round differently) send that window's
    # gradient to another cell on one runtime: a discrete, legitimate jump
    # of about 1e-6 of a kernel in one step, which momentum 0.9 then carries
    # (about 10x) into every later step. Seed 1 meets such windows at once;
    # seed 2 with momentum at 0.05 meets one after 6 steps on some CPUs.
    # Seed 2 with momentum 0.9 and the pooled objective meets one too (conv1's
    # bias 1.9e-5 off after 20 steps): pooled runs with SGD here.
    # The host runs its default (fused) lowering: TensorFlow's kernels.
    model = _canvas_model(seed=2, filters=(4, 8), **options)
    model.compile(
        {
            "sgd": keras.optimizers.SGD(0.1),
            "momentum": keras.optimizers.SGD(0.02, momentum=0.9),
            # Adam's first step is lr * g / (|g| + epsilon): float rounding of a
            # gradient entry near epsilon moves a weight by up to lr / epsilon
            # times that rounding (3e-5 of the kernel at Keras' 1e-7 here).
            "adam": keras.optimizers.Adam(3e-3, epsilon=1e-6),
        }[optimizer]
    )
    lite = keras_spela.export_tflite(model, str(tmp_path / "cnn.tflite"), batch_size=batch)
    micro = keras_spela.export_tflite_micro(
        model, str(tmp_path / "cnn_micro.tflite"), batch_size=batch, expose_weights=True
    )
    for path in (lite.path, micro.path):
        operators = flatbuffer_ops.check_builtin_only(pathlib.Path(path).read_bytes())
        assert operators["CONV_2D"] >= 4  # forward and filter gradient per layer
    assert_devices_train_like_fit(
        DeviceTrainer, {"litert": lite.path, "micro": micro.path}, model, x, y, batch
    )


@pytest.mark.slow
def test_conv_bad_batch_rejected_on_the_device_without_change(canvas_digits, tmp_path):
    (x, y), _ = canvas_digits
    model = _canvas_model(seed=2, filters=(4, 8))
    lite = keras_spela.export_tflite(model, str(tmp_path / "cnn.tflite"), batch_size=8)
    trainer = DeviceTrainer(lite.path)
    before = trainer.get_weights()
    bad = x[:8].copy()
    bad[0, 3, 3, 0] = np.nan
    outputs = trainer._backend.train(bad, y[:8].astype(np.int32))
    assert int(outputs["accepted"]) == 0
    for name, value in trainer.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(filters=0, kernel_size=3), "filters"),
        (dict(filters=4, kernel_size=0), "kernel_size"),
        (dict(filters=4, kernel_size=(3, 3, 3)), "kernel_size"),
        (dict(filters=4, kernel_size=3, strides=-1), "strides"),
        (dict(filters=4, kernel_size=3, pool_size=0), "pool_size"),
        (dict(filters=4, kernel_size=3, padding="full"), "padding"),
        (dict(filters=4, kernel_size=3, objective="nope"), "objective"),
        (dict(filters=4, kernel_size=3, normalization="batch"), "normalization"),
        (dict(filters=4, kernel_size=3, local_loss="nope"), "local_loss"),
        (dict(filters=4, kernel_size=3, objective="projection", groups=1), "groups"),
        (dict(filters=4, kernel_size=3, objective="projection", groups=(5, 3)), "groups"),
        (
            dict(filters=4, kernel_size=3, objective="projection", projection_dim=0),
            "projection_dim",
        ),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpelaConv2D(**kwargs)


def test_bad_input_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="height, width, channels"):
        SpelaModel([keras.Input((64,)), SpelaConv2D(4, 3)], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="below one pixel"):
        SpelaModel(
            [keras.Input((4, 4, 1)), SpelaConv2D(4, 3, pool_size=3)], num_classes=NUM_CLASSES
        )
    with pytest.raises(ValueError, match="simplex"):
        SpelaModel(
            [
                keras.Input((8, 8, 1)),
                SpelaConv2D(4, 3, objective="pooled", class_vectors="simplex"),
            ],
            num_classes=NUM_CLASSES,
        )
    with pytest.raises(ValueError, match="more than the 10 classes"):
        SpelaModel(
            [keras.Input((8, 8, 1)), SpelaConv2D(4, 3, objective="projection", groups=(2, 11))],
            num_classes=NUM_CLASSES,
        )
    with pytest.raises(ValueError, match="projection_dim=3 is too small"):
        SpelaModel(
            [
                keras.Input((8, 8, 1)),
                SpelaConv2D(4, 3, objective="projection", projection_dim=3, groups=6),
            ],
            num_classes=NUM_CLASSES,
        )
    model = SpelaModel([keras.Input((8, 8, 1)), SpelaConv2D(4, 3)], num_classes=NUM_CLASSES)
    model.compile()
    with pytest.raises(ValueError):
        model.fit(np.zeros((4, 8, 8, 2), np.float32), np.zeros(4, np.int32), verbose=0)


def test_images_with_other_channels_than_the_model_one_clear_error():
    model = SpelaModel([keras.Input((8, 8, 1)), SpelaConv2D(4, 3)], num_classes=NUM_CLASSES)
    model.compile()
    rgb = np.zeros((4, 8, 8, 3), np.float32)
    labels = np.zeros(4, np.int32)
    for call in (
        lambda: model.fit(rgb, labels, verbose=0),
        lambda: model.evaluate(rgb, labels, verbose=0),
        lambda: model.predict(rgb, verbose=0),
    ):
        with pytest.raises(ValueError, match=r"shape \(8, 8, 1\) .*\(4, 8, 8, 3\)"):
            call()


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_unknown_height_and_width_refused_naming_the_fix(padding):
    with pytest.raises(ValueError, match=r"known height, width .*keras.Input\(\(height"):
        SpelaModel(
            [keras.Input((None, None, 1)), SpelaConv2D(4, 3, padding=padding)],
            num_classes=NUM_CLASSES,
        )


def test_one_d_signals_hint_at_kernel_and_pool_size():
    with pytest.raises(ValueError, match=r"kernel_size=\(1, k\) and pool_size=\(1, p\)"):
        SpelaModel([keras.Input((30, 2)), SpelaConv2D(4, (1, 3))], num_classes=NUM_CLASSES)
    for kwargs in ({"kernel_size": (1, 3)}, {"kernel_size": 3, "pool_size": (1, 2)}):
        with pytest.raises(ValueError, match=r"height 1 .*pool_size=\(1, p\)"):
            SpelaModel([keras.Input((1, 30, 2)), SpelaConv2D(4, **kwargs)], num_classes=NUM_CLASSES)
    SpelaModel(
        [keras.Input((1, 30, 2)), SpelaConv2D(4, (1, 3), pool_size=(1, 2))], num_classes=NUM_CLASSES
    )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
