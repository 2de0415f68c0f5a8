"""The primitives' two lowerings compute the same function: TensorFlow's
fused kernels (the host's default) and the TFLite builtins (every export),
on random inputs and on tie-laden ones (flat backgrounds, equal cells in a
window, the canvas digits and Fashion-MNIST images); the host steps run the
lowering that compile() names, and exports always trace the builtins."""

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
from keras_spela.lite import flatbuffer_ops

FUSED = [name for name, primitive in primitives.PRIMITIVES.items() if primitive.fused]


def both_lowerings(name, *args):
    """`(builtins, fused)` results of primitive `name`, each traced in a
    tf.function (as the steps run them)."""
    primitive = primitives.PRIMITIVES[name]
    results = []
    for function in (primitive.builtins, primitive.fused):
        results.append(tf.function(lambda *a, f=function: f(*a))(*args).numpy())
    return results


def real_images():
    """`{name: (batch, H, W, 1) float32}`: canvas digits and Fashion-MNIST."""
    (canvas, _), _ = keras_spela.datasets.load_canvas_digits()
    (fashion, _), _ = keras_spela.datasets.load_fashion_mnist()
    return {
        "canvas digits": np.asarray(canvas[:32], np.float32),
        "fashion-mnist": fashion[:32, ..., None].astype(np.float32) / 255.0,
    }


def tie_laden_maps(rng):
    """Maps whose pooling windows hold equal cells."""
    flat = np.zeros((4, 12, 12, 3), np.float32)
    flat[:, 3:7, 4:9] = rng.random((4, 4, 5, 3))
    return {
        "small integers": rng.integers(0, 3, (6, 13, 11, 5)).astype(np.float32),
        "flat background": flat,
        "constant": np.full((2, 8, 8, 4), 0.25, np.float32),
    }


def conv_activations(images, kernel_size=3, filters=8, seed=0):
    """What a SpelaConv2D pools: leaky_relu of a same-padded convolution of
    real images (zero backgrounds give many exactly equal cells)."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.5, (kernel_size, kernel_size, images.shape[-1], filters))
    z = tf.nn.conv2d(images, kernel.astype(np.float32), 1, "SAME")
    return tf.maximum(z, 0.01 * z).numpy()


def pooled(a, pool_size):
    return tf.nn.max_pool2d(a, pool_size, pool_size, "VALID").numpy()


@pytest.mark.parametrize("pool_size", [(2, 2), (3, 3), (1, 2), (2, 3)])
def test_max_pool_gradient_lowerings_route_identically(pool_size):
    rng = np.random.default_rng(0)
    maps = {"random": rng.normal(size=(5, 14, 13, 6)).astype(np.float32)}
    maps.update(tie_laden_maps(rng))
    maps.update({name: conv_activations(x) for name, x in real_images().items()})
    for name, a in maps.items():
        p = pooled(a, pool_size)
        grad_p = rng.normal(size=p.shape).astype(np.float32)
        builtins, fused = both_lowerings("max_pool_gradient", grad_p, a, p, pool_size)
        ties = int(np.sum(a[:, : p.shape[1] * pool_size[0]] == 0.0))
        # Routing copies values: the lowerings agree exactly, ties included.
        np.testing.assert_array_equal(builtins, fused, err_msg=f"{name}, {ties} zero cells")
        # Each window's gradient reaches one cell.
        assert np.count_nonzero(builtins) == np.count_nonzero(grad_p), name


@pytest.mark.parametrize(
    "kernel_size, strides", [((3, 3), (1, 1)), ((5, 3), (2, 1)), ((1, 5), (1, 2)), ((2, 2), (2, 2))]
)
def test_conv_filter_gradient_lowerings_agree(kernel_size, strides):
    rng = np.random.default_rng(2)
    inputs = {"random": rng.normal(size=(6, 15, 16, 3)).astype(np.float32)}
    inputs.update({name: x[:8] for name, x in real_images().items()})
    for name, h in inputs.items():
        out_h = (h.shape[1] - kernel_size[0]) // strides[0] + 1
        out_w = (h.shape[2] - kernel_size[1]) // strides[1] + 1
        grad_z = rng.normal(size=(h.shape[0], out_h, out_w, 4)).astype(np.float32)
        grad_z[:, ::2] = 0.0  # what an unpooling leaves
        builtins, fused = both_lowerings("conv_filter_gradient", h, grad_z, kernel_size, strides)
        assert builtins.shape == kernel_size + (h.shape[-1], 4)
        np.testing.assert_allclose(
            fused, builtins, rtol=1e-5, atol=1e-6 * np.abs(builtins).max(), err_msg=name
        )


def test_every_primitive_has_a_builtins_lowering_and_a_docstring():
    assert set(primitives.PRIMITIVES) == {
        "max_pool_gradient",
        "conv_filter_gradient",
        "dense_kernel_gradient",
    }
    for name, primitive in primitives.PRIMITIVES.items():
        assert callable(primitive.builtins), name
        assert getattr(primitives, name).__doc__, name
    assert FUSED == ["max_pool_gradient", "conv_filter_gradient"]


def test_lowering_context_nests_and_rejects_unknown_names():
    assert primitives.active_lowering() == "fused"
    with primitives.lowering("builtins"):
        assert primitives.active_lowering() == "builtins"
        with primitives.lowering("fused"):
            assert primitives.active_lowering() == "fused"
        assert primitives.active_lowering() == "builtins"
    assert primitives.active_lowering() == "fused"
    with pytest.raises(ValueError, match="lowering must be one of"):
        with primitives.lowering("xla"):
            pass


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return SpelaModel(
        [
            keras.Input((12, 12, 1)),
            SpelaConv2D(4, 3, padding="same", name="conv"),
            keras.layers.Flatten(),
            SpelaDense(16, name="dense"),
        ],
        num_classes=3,
    )


def _traced_op_types(model):
    """The op types of the model's traced train step."""
    x = tf.zeros((4, 12, 12, 1))
    y = tf.zeros((4,), tf.int32)
    function = tf.function(model.train_step).get_concrete_function((x, y))
    types = set()
    graphs = [function.graph] + [
        f.graph for f in function.graph._functions.values() if hasattr(f, "graph")
    ]
    for graph in graphs:
        types.update(op.type for op in graph.get_operations())
    return types


@pytest.mark.parametrize(
    "lowering, jit_compile, present, absent",
    [
        ("fused", False, {"MaxPoolGrad", "Conv2DBackpropFilter"}, set()),
        ("builtins", False, set(), {"MaxPoolGrad", "Conv2DBackpropFilter"}),
        # XLA compiles the builtins lowering (TensorFlow's fused filter gradient
        # compiles to far slower XLA code).
        ("fused", True, {"Conv2D"}, {"MaxPoolGrad", "Conv2DBackpropFilter"}),
    ],
)
def test_host_step_runs_the_compiled_lowering(lowering, jit_compile, present, absent):
    model = _cnn()
    model.compile(lowering=lowering, jit_compile=jit_compile)
    types = _traced_op_types(model)
    assert present <= types
    assert not (absent & types)
    assert model.get_compile_config()["lowering"] == lowering


def test_default_lowering_is_fused_and_bad_names_are_one_error():
    model = _cnn()
    model.compile()
    assert model.lowering == "fused"
    with pytest.raises(ValueError, match=r"lowering must be one of \('fused', 'builtins'\)"):
        model.compile(lowering="fast")


@pytest.mark.slow
def test_exports_trace_the_builtins_lowering_whatever_the_model_compiled(tmp_path):
    model = _cnn()
    model.compile(lowering="fused")
    lite = keras_spela.export_tflite(model, str(tmp_path / "m.tflite"), batch_size=4)
    micro = keras_spela.export_tflite_micro(model, str(tmp_path / "mm.tflite"), batch_size=4)
    for path in (lite.path, micro.path):
        operators = flatbuffer_ops.check_builtin_only(pathlib.Path(path).read_bytes())
        assert operators["CONV_2D"] >= 2  # the forward pass and the filter gradient
    assert model.lowering == "fused"
    assert primitives.active_lowering() == "fused"


@pytest.mark.parametrize("objective", ["readout", "pooled"])
def test_host_lowerings_train_to_the_same_weights_on_real_images(objective):
    (x, y), _ = keras_spela.datasets.load_fashion_mnist()
    x = x[:160, 6:18, 6:18, None].astype(np.float32) / 255.0
    y = (y[:160] % 3).astype(np.int32)
    weights = []
    for lowering in ("fused", "builtins"):
        keras.utils.set_random_seed(0)
        model = SpelaModel(
            [
                keras.Input((12, 12, 1)),
                SpelaConv2D(4, 3, padding="same", objective=objective, name="conv"),
                keras.layers.Flatten(),
                SpelaDense(16, name="dense"),
            ],
            num_classes=3,
        )
        model.compile(keras.optimizers.SGD(0.1), lowering=lowering)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        weights.append([v.numpy() for v in model.trainable_variables])
    for fused, builtins in zip(*weights):
        assert np.max(np.abs(fused - builtins)) <= 1e-5 * np.max(np.abs(builtins))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
