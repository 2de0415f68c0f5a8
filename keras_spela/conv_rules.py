"""The local rule of a convolutional SPELA layer, in closed form.

A `SpelaConv2D` layer computes `z = conv(h, K) + b`, `a = act(z)`,
`p = maxpool(a)` (its output) and compares the channel means
`g = mean_{y,x} p` with fixed class vectors in `R^filters` with one of the
dense losses (`rules.output_gradient`). Backwards, in closed form:

- `dL/dp = dL/dg / (H' W')` at every position;
- `dL/da`: `dL/dp` given to the first cell of each pooling window (row-major
  order) that equals the window's maximum, zero elsewhere (RESHAPE,
  CONCATENATION, EQUAL, CAST, MUL, REDUCE_MAX): ties,
  common where an image is flat, are broken as TensorFlow's MaxPoolGrad
  breaks them, on every runtime;
- `dL/dz = dL/da * act'(z)`, taken at the pooled resolution before the
  unpooling (where `dL/da` is not zero, `a` is the window's maximum);
- `dL/dK[i, j, c, o] = sum_{b,y,x} h[b, s y + i, s x + j, c] dL/dz[b, y, x, o]`:
  ONE forward CONV_2D with batch and channels swapped (input `h^T`
  `(C, H, W, B)`, filter `dL/dz^T` `(H', W', B, O)`, dilation = the stride),
  then TRANSPOSE; `dL/db = sum dL/dz`.

With `normalization`, `z = n + b` with `n = (c - mean c) / std` of the
convolution `c` per example (MEAN, SUB, SQRT, DIV), and the filter gradient
takes `dL/dc = (dL/dn - mean dL/dn - n mean(dL/dn n)) / std` instead of
`dL/dz`. The `"projection"` objective (the paper's) replaces the channel
means by each channel's own projection `u_c = p_c P_c` (BATCH_MATMUL) scored
against its class-group vectors, so `dL/dP_c = p_c^T dL/du_c` and
`dL/dp_c = dL/du_c P_c^T`.

Every op is a TFLite builtin that TFLite Micro also has. SAME padding is an
explicit PAD of the input, so every convolution here is VALID.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_spela import rules

PADDINGS = ("valid", "same")
# Per-example normalisation of the convolution's output, over these axes.
NORMALIZATIONS = {"layer": [1, 2, 3], "instance": [1, 2]}
NORMALIZATION_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class ConvRule:
    """The static settings of a convolutional SPELA layer's rule.

    Args:
        kernel_size: `(kh, kw)`.
        strides: `(sh, sw)`.
        padding: `"valid"` or `"same"`.
        pool_size: `(ph, pw)`; `(1, 1)` for no pooling.
        dense: the `rules.DenseRule` of the activation and the loss.
        normalization: None, `"layer"` or `"instance"` (`NORMALIZATIONS`).
    """

    kernel_size: tuple
    strides: tuple
    padding: str
    pool_size: tuple
    dense: rules.DenseRule
    normalization: str = None


def same_padding(size, kernel, stride):
    """`(before, after)` padding of one axis for Keras' "same"."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def padded_input(inputs, rule):
    """The input with "same" padding applied (VALID convolutions after it)."""
    if rule.padding == "valid":
        return inputs
    _, height, width, _ = inputs.shape
    pads = [
        same_padding(height, rule.kernel_size[0], rule.strides[0]),
        same_padding(width, rule.kernel_size[1], rule.strides[1]),
    ]
    return tf.pad(inputs, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])


def output_shapes(input_shape, rule):
    """`(conv (H, W), pooled (H', W'))` spatial sizes for an input shape
    `(batch, H, W, C)`; ValueError when a map shrinks below one pixel."""
    _, height, width, _ = input_shape
    sizes = []
    for axis, size in enumerate((height, width)):
        kernel, stride = rule.kernel_size[axis], rule.strides[axis]
        if rule.padding == "same":
            size = size + sum(same_padding(size, kernel, stride))
        conv = (size - kernel) // stride + 1
        pooled = conv // rule.pool_size[axis]
        if conv < 1 or pooled < 1:
            raise ValueError(
                f"The input of spatial size {(height, width)} is too small for "
                f"kernel_size={rule.kernel_size}, strides={rule.strides}, "
                f"padding={rule.padding!r} and pool_size={rule.pool_size}: the "
                "map would shrink below one pixel."
            )
        sizes.append((conv, pooled))
    return (sizes[0][0], sizes[1][0]), (sizes[0][1], sizes[1][1])


def conv_forward(inputs, kernel, bias, rule):
    """Forward pass: `(h, z, a, p, normalized)` with `h` the padded input,
    `z` the pre-activation, `a` the activation, `p` the pooled output and
    `normalized` None, or `(n, 1 / std)` of the normalisation
    `n = (c - mean c) / std`, `std = sqrt(var c + eps)` of the convolution
    `c` over `NORMALIZATIONS[rule.normalization]` (then `z = n + bias`)."""
    h = padded_input(inputs, rule)
    z = tf.nn.conv2d(h, kernel, strides=(1,) + rule.strides + (1,), padding="VALID")
    normalized = None
    if rule.normalization is not None:
        axes = NORMALIZATIONS[rule.normalization]
        centred = z - tf.reduce_mean(z, axis=axes, keepdims=True)
        variance = tf.reduce_mean(tf.square(centred), axis=axes, keepdims=True)
        inverse_std = 1.0 / tf.sqrt(variance + NORMALIZATION_EPSILON)
        z = centred * inverse_std
        normalized = (z, inverse_std)
    if bias is not None:
        z = z + bias
    a = rules.activate(z, rule.dense)
    p = a
    if rule.pool_size != (1, 1):
        p = tf.nn.max_pool2d(a, rule.pool_size, rule.pool_size, padding="VALID")
    return h, z, a, p, normalized


def _through_normalization(grad_n, normalized, rule):
    """`dL/dc` from `dL/dn` of `n = (c - mean c) / std`:
    `(dL/dn - mean dL/dn - n mean(dL/dn * n)) / std` over the same axes."""
    n, inverse_std = normalized
    axes = NORMALIZATIONS[rule.normalization]
    return inverse_std * (
        grad_n
        - tf.reduce_mean(grad_n, axis=axes, keepdims=True)
        - n * tf.reduce_mean(grad_n * n, axis=axes, keepdims=True)
    )


def pooled_features(outputs):
    """The channel means of a layer's outputs, `(batch, filters)`."""
    return tf.reduce_mean(outputs, axis=[1, 2])


def max_unpool(grad_p, a, p, rule):
    """`dL/da` from `dL/dp` through the max-pool: each window's gradient goes
    to its first maximal cell in row-major order (as TensorFlow's MaxPoolGrad
    does), so ties, common where an image is flat, are broken the same way
    on every runtime.

    `a` (cropped to whole windows) is RESHAPEd, without moving data, to
    `(B * H', ph, W', pw * C)`: window row `i` is index `i` of axis 1 and
    window column `j` the channel block `j`. `p` repeated for every block
    (CONCATENATION) then broadcasts over the rows, so one EQUAL marks every
    maximal cell; scoring those cells by `ph * pw` minus their row-major
    index, the first one is where the score equals the window's largest
    (REDUCE_MAX). Every tensor has at most 4 axes (TFLite Micro's broadcasts)."""
    if rule.pool_size == (1, 1):
        return grad_p
    pool_h, pool_w = rule.pool_size
    _, out_h, out_w, channels = p.shape
    height, width = a.shape[1], a.shape[2]
    windows = tf.reshape(
        a[:, : out_h * pool_h, : out_w * pool_w, :], [-1, pool_h, out_w, pool_w * channels]
    )

    def every_column(t):
        """`(B, H', W', C)` values as `(B H', 1, W', pw C)`, one per cell."""
        t = tf.reshape(t, [-1, 1, out_w, channels])
        return rules.concat([t] * pool_w, axis=-1) if pool_w > 1 else t

    cells = pool_h * pool_w
    rank = np.repeat(
        cells - np.arange(cells, dtype=np.float32).reshape(1, pool_h, 1, pool_w), channels, axis=-1
    )
    score = tf.cast(tf.equal(windows, every_column(p)), a.dtype) * rank
    best = tf.reduce_max(score, axis=1, keepdims=True)
    if pool_w > 1:
        best = every_column(
            tf.reduce_max(tf.reshape(best, [-1, out_w, pool_w, channels]), axis=2)
        )
    first = tf.cast(tf.equal(score, best), a.dtype)
    grad_a = tf.reshape(
        first * every_column(grad_p), [-1, out_h * pool_h, out_w * pool_w, channels]
    )
    rest_h, rest_w = height - out_h * pool_h, width - out_w * pool_w
    if rest_h or rest_w:
        grad_a = tf.pad(grad_a, [[0, 0], [0, rest_h], [0, rest_w], [0, 0]])
    return grad_a


def projected_channels(outputs, projection):
    """The paper's per-channel projections of a layer's outputs.

    Args:
        outputs: `p`, `(batch, H', W', C)`.
        projection: `(C, H' W', d)`, one matrix per channel.

    Returns:
        `(channels, projected)`: the flattened channels `(C, batch, H' W')`
        and their projections `(C, batch, d)` (RESHAPE, TRANSPOSE,
        BATCH_MATMUL).
    """
    _, height, width, filters = outputs.shape
    channels = tf.transpose(tf.reshape(outputs, [-1, height * width, filters]), [2, 0, 1])
    return channels, tf.matmul(channels, projection)


def grouped_scores(outputs, class_vectors, projection):
    """Class scores of the projection objective: the mean over channels of
    the cosine of each channel's projection to each class's group vector,
    `(batch, num_classes)`."""
    _, projected = projected_channels(outputs, projection)
    return tf.reduce_mean(rules.cosine_scores(projected, class_vectors), axis=0)


def conv_local_error(
    h, z, a, p, normalized, targets, class_vectors, rule, sample_weight=None,
    projection=None,
):
    """The local loss and `dL/dz` from a forward pass (`conv_forward`).

    Without `projection` (the `"pooled"` objective) the loss compares the
    channel means of `p` with `class_vectors` `(num_classes, C)`. With it
    (the paper's `"projection"` objective) every channel `c` is projected by
    `projection[c]` and compared with `class_vectors[c]` `(num_classes, d)`
    (its classes' group vectors); the loss is the mean over channels and
    examples, and `dL/dp[c] = dL/du[c] projection[c]^T` (BATCH_MATMUL).

    Returns:
        A `rules.LocalError` with `inputs = h` (padded), `outputs = p`; its
        `aux` holds, for the projection objective, `"channels"` `(C, batch,
        H'W')` and `"grad_projected"` `(C, batch, d)` (the factors of
        `dL/dprojection`), and with a normalisation `"grad_conv"`, `dL/dc`
        at the convolution's output (the kernel's factor).
    """
    aux = {}
    if projection is None:
        features = pooled_features(p)
        loss, grad_g, scores = rules.output_gradient(
            features, targets, class_vectors, rule.dense, sample_weight
        )
        positions = float(p.shape[1] * p.shape[2])
        # The same dL/dp at every position: `(batch, 1, 1, C)`, broadcast by
        # the act' product below.
        grad_p = tf.reshape(grad_g / positions, [-1, 1, 1, p.shape[3]])
    else:
        channels, projected = projected_channels(p, projection)
        filters = p.shape[3]
        # The labels of every channel's rows (MUL broadcasts; no TILE).
        grouped_targets = tf.expand_dims(targets, 0) * tf.ones([filters, 1, 1])
        loss, grad_projected, scores = rules.output_gradient(
            projected, grouped_targets, class_vectors, rule.dense, sample_weight
        )
        scores = tf.reduce_mean(scores, axis=0)
        grad_channels = tf.matmul(grad_projected, projection, transpose_b=True)
        grad_p = tf.reshape(tf.transpose(grad_channels, [1, 2, 0]), [-1] + p.shape[1:].as_list())
        aux.update(channels=channels, grad_projected=grad_projected)
    # act' at the pooled resolution: the gradient reaches only the cell of a
    # window where a equals the window's maximum p, so act'(a) = act'(p)
    # there (and 0 * act' elsewhere).
    grad_z = max_unpool(rules.times_activation_derivative(grad_p, p, rule.dense), a, p, rule)
    if normalized is not None:
        aux["grad_conv"] = _through_normalization(grad_z, normalized, rule)
    return rules.LocalError(h, p, grad_z, loss, scores, aux or None)


def conv_gradient(error):
    """`dL/dc` at the convolution's output: `dL/dz`, or with a
    normalisation its gradient through it."""
    return error.grad_z if not error.aux else error.aux.get("grad_conv", error.grad_z)


def projection_gradient(error):
    """`dL/dprojection`, `(C, H'W', d)`: `channels^T dL/du` per channel."""
    return tf.matmul(error.aux["channels"], error.aux["grad_projected"], transpose_a=True)


def conv_kernel_gradient(h, grad_z, rule):
    """`dL/dK`, `(kh, kw, C, O)`: one CONV_2D of `h^T` by `dL/dz^T`."""
    kh, kw = rule.kernel_size
    inputs = tf.transpose(h, [3, 1, 2, 0])  # (C, H, W, B)
    filters = tf.transpose(grad_z, [1, 2, 0, 3])  # (H', W', B, O)
    product = tf.nn.conv2d(
        inputs, filters, strides=1, padding="VALID", dilations=(1,) + rule.strides + (1,)
    )  # (C, >= kh, >= kw, O)
    return tf.transpose(product[:, :kh, :kw, :], [1, 2, 0, 3])


def conv_bias_gradient(grad_z):
    """`dL/db = sum over batch and positions of dL/dz`, `(O,)`."""
    return tf.reduce_sum(grad_z, axis=[0, 1, 2])


def conv_gradient_bound(error):
    """A bound of every entry of `dL/dK` and `dL/db`:
    `batch * H' * W' * max(max|dL/dz|, max|dL/dc|) * max(max|h|, 1)`, from
    activations; with a
    projection also of `dL/dprojection`: `batch * max|dL/du| * max|p|`."""
    grad_z = error.grad_z
    terms = tf.cast(tf.reduce_prod(tf.shape(grad_z)[:3]), grad_z.dtype)
    largest = rules.largest_magnitude(
        [grad_z] + ([error.aux["grad_conv"]] if error.aux and "grad_conv" in error.aux else [])
    )
    bound = terms * largest * tf.maximum(rules.largest_magnitude([error.inputs]), 1.0)
    if error.aux is not None and "grad_projected" in error.aux:
        grad_projected = error.aux["grad_projected"]
        batch = tf.cast(tf.shape(grad_projected)[1], grad_z.dtype)
        bound = tf.maximum(
            bound,
            batch
            * rules.largest_magnitude([grad_projected])
            * rules.largest_magnitude([error.aux["channels"]]),
        )
    return bound
