"""The named primitives of the local rules, each with its lowerings.

The local rules (`keras_spela.core.rules`, `keras_spela.core.conv_rules`) are written
once, in closed form, over these primitives. Every primitive has one
`"builtins"` lowering, written with TFLite builtin operators that TFLite
Micro also has: every export traces it. A primitive may also have a
`"fused"` lowering onto TensorFlow's fused gradient kernels (oneDNN or Eigen
on a CPU, cuDNN on a GPU), which the host uses by default for speed. Both
lowerings compute the same function, ties included
(`tests/core/primitives_test.py` holds them equal on random and tie-laden inputs).

Which lowering runs is chosen around the code that is traced, never by the
layers: `SpelaModel.compile(lowering=...)` for the host steps, and the
exporters always trace under `lowering("builtins")`:

```python
with primitives.lowering("builtins"):
    errors, scores = model.compute_local_errors(x, y)  # the device's code
```

The primitives:

- `max_pool_gradient(grad_p, a, p, pool_size)`: `dL/da` from `dL/dp` of
  `p = maxpool(a)` (windows = strides = `pool_size`, VALID): each window's
  gradient goes to its first maximal cell in row-major order, zero
  elsewhere.
- `conv_filter_gradient(h, grad_z, kernel_size, strides)`: `dL/dK[i, j, c,
  o] = sum_{b,y,x} h[b, s_h y + i, s_w x + j, c] dL/dz[b, y, x, o]` of a
  VALID convolution `z = conv(h, K)`.
- `dense_kernel_gradient(h, grad_z)`: `dL/dW = h^T dL/dz` of `z = h W`
  (one MATMUL in both: its builtins lowering is TensorFlow's kernel too).
"""

import collections
import contextlib

import numpy as np
import tensorflow as tf

LOWERINGS = ("fused", "builtins")
DEFAULT_LOWERING = "fused"

_active = [DEFAULT_LOWERING]


def check_lowering(name):
    """`name` if it is one of `LOWERINGS`, else a ValueError."""
    if name not in LOWERINGS:
        raise ValueError(f"lowering must be one of {LOWERINGS}, received lowering={name!r}.")
    return name


@contextlib.contextmanager
def lowering(name):
    """Runs (traces) the block with the primitives' `name` lowering.

    Process-wide while the block runs (replica threads of a tf.distribute
    strategy see it too); blocks nest.

    Args:
        name: `"fused"` (TensorFlow's fused kernels, the host's default) or
            `"builtins"` (TFLite builtins: what every export runs).
    """
    _active.append(check_lowering(name))
    try:
        yield
    finally:
        _active.pop()


def active_lowering():
    """The lowering that the primitives use now."""
    return _active[-1]


# ------------------------------------------------------------ max-pool gradient
def _max_pool_gradient_builtins(grad_p, a, p, pool_size):
    """RESHAPE, CONCATENATION, EQUAL, CAST, MUL and REDUCE_MAX.

    `a` (cropped to whole windows) is RESHAPEd, without moving data, to
    `(B * H', ph, W', pw * C)`: window row `i` is index `i` of axis 1 and
    window column `j` the channel block `j`. `p` repeated for every block
    (CONCATENATION) then broadcasts over the rows, so one EQUAL marks every
    maximal cell; scoring those cells by `ph * pw` minus their row-major
    index, the first one is where the score equals the window's largest
    (REDUCE_MAX). Every tensor has at most 4 axes (TFLite Micro's
    broadcasts)."""
    pool_h, pool_w = pool_size
    _, out_h, out_w, channels = p.shape
    height, width = a.shape[1], a.shape[2]
    windows = tf.reshape(
        a[:, : out_h * pool_h, : out_w * pool_w, :], [-1, pool_h, out_w, pool_w * channels]
    )

    def every_column(t):
        """`(B, H', W', C)` values as `(B H', 1, W', pw C)`, one per cell."""
        t = tf.reshape(t, [-1, 1, out_w, channels])
        return concat([t] * pool_w, axis=-1) if pool_w > 1 else t

    cells = pool_h * pool_w
    rank = np.repeat(
        cells - np.arange(cells, dtype=np.float32).reshape(1, pool_h, 1, pool_w), channels, axis=-1
    )
    score = tf.cast(tf.equal(windows, every_column(p)), a.dtype) * rank
    best = tf.reduce_max(score, axis=1, keepdims=True)
    if pool_w > 1:
        best = every_column(tf.reduce_max(tf.reshape(best, [-1, out_w, pool_w, channels]), axis=2))
    first = tf.cast(tf.equal(score, best), a.dtype)
    grad_a = tf.reshape(
        first * every_column(grad_p), [-1, out_h * pool_h, out_w * pool_w, channels]
    )
    rest_h, rest_w = height - out_h * pool_h, width - out_w * pool_w
    if rest_h or rest_w:
        grad_a = tf.pad(grad_a, [[0, 0], [0, rest_h], [0, rest_w], [0, 0]])
    return grad_a


def _max_pool_gradient_fused(grad_p, a, p, pool_size):
    """TensorFlow's MaxPoolGrad (which also gives each window's gradient to
    its first maximal cell)."""
    window = [1, pool_size[0], pool_size[1], 1]
    return tf.raw_ops.MaxPoolGrad(
        orig_input=a,
        orig_output=p,
        grad=grad_p,
        ksize=window,
        strides=window,
        padding="VALID",
    )


def max_pool_gradient(grad_p, a, p, pool_size):
    """`dL/da` from `dL/dp` through `p = maxpool(a)`.

    Args:
        grad_p: `dL/dp`, `(B, H', W', C)`.
        a: the pooled map `(B, H, W, C)`.
        p: `maxpool(a)` with windows and strides `pool_size`, VALID.
        pool_size: `(ph, pw)`.

    Returns:
        `(B, H, W, C)`: each window's gradient at its first maximal cell
        (row-major), zero elsewhere (rows and columns past the last whole
        window included); `grad_p` itself for a `(1, 1)` pool.
    """
    if tuple(pool_size) == (1, 1):
        return grad_p
    return _dispatch("max_pool_gradient", grad_p, a, p, tuple(pool_size))


# --------------------------------------------------------- conv filter gradient
def _conv_filter_gradient_builtins(h, grad_z, kernel_size, strides):
    """ONE forward CONV_2D with batch and channels swapped: input `h^T`
    `(C, H, W, B)`, filter `dL/dz^T` `(H', W', B, O)`, dilation = the
    stride; then TRANSPOSE."""
    kh, kw = kernel_size
    inputs = tf.transpose(h, [3, 1, 2, 0])  # (C, H, W, B)
    filters = tf.transpose(grad_z, [1, 2, 0, 3])  # (H', W', B, O)
    product = tf.nn.conv2d(
        inputs, filters, strides=1, padding="VALID", dilations=(1,) + tuple(strides) + (1,)
    )  # (C, >= kh, >= kw, O)
    return tf.transpose(product[:, :kh, :kw, :], [1, 2, 0, 3])


def _conv_filter_gradient_fused(h, grad_z, kernel_size, strides):
    """TensorFlow's Conv2DBackpropFilter."""
    return tf.raw_ops.Conv2DBackpropFilter(
        input=h,
        filter_sizes=tuple(kernel_size) + (h.shape[-1], grad_z.shape[-1]),
        out_backprop=grad_z,
        strides=(1,) + tuple(strides) + (1,),
        padding="VALID",
    )


def conv_filter_gradient(h, grad_z, kernel_size, strides):
    """`dL/dK` of a VALID convolution `z = conv(h, K)`.

    Args:
        h: the (already padded) input `(B, H, W, C)`.
        grad_z: `dL/dz`, `(B, H', W', O)`.
        kernel_size: `(kh, kw)`.
        strides: `(sh, sw)`.

    Returns:
        `(kh, kw, C, O)`.
    """
    return _dispatch("conv_filter_gradient", h, grad_z, tuple(kernel_size), tuple(strides))


# -------------------------------------------------------- dense kernel gradient
def _dense_kernel_gradient(h, grad_z):
    return tf.matmul(h, grad_z, transpose_a=True)


def dense_kernel_gradient(h, grad_z):
    """`dL/dW = h^T dL/dz`, `(input_dim, units)`, for `h` `(B, input_dim)`
    and `dL/dz` `(B, units)`."""
    return _dispatch("dense_kernel_gradient", h, grad_z)


# ----------------------------------------------------------------------- shared
# TFLite Micro's CONCATENATION takes at most 10 inputs.
_MAX_CONCAT_INPUTS = 8


def concat(tensors, axis):
    """`tf.concat` as a tree of CONCATENATIONs of at most 8 inputs each."""
    while len(tensors) > 1:
        tensors = [
            tf.concat(tensors[i : i + _MAX_CONCAT_INPUTS], axis)
            if len(tensors[i : i + _MAX_CONCAT_INPUTS]) > 1
            else tensors[i]
            for i in range(0, len(tensors), _MAX_CONCAT_INPUTS)
        ]
    return tensors[0]


Primitive = collections.namedtuple("Primitive", ["builtins", "fused"])

# Every primitive's lowerings. `fused` is None where TensorFlow has no faster
# kernel than the builtins lowering (which then runs everywhere).
PRIMITIVES = {
    "max_pool_gradient": Primitive(_max_pool_gradient_builtins, _max_pool_gradient_fused),
    "conv_filter_gradient": Primitive(_conv_filter_gradient_builtins, _conv_filter_gradient_fused),
    "dense_kernel_gradient": Primitive(_dense_kernel_gradient, None),
}


def _dispatch(name, *args):
    primitive = PRIMITIVES[name]
    if active_lowering() == "fused" and primitive.fused is not None:
        return primitive.fused(*args)
    return primitive.builtins(*args)
