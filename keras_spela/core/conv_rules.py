"""The local rule of a convolutional SPELA layer, in closed form.

A `SpelaConv2D` layer computes `z = conv(h, K) + b`, `a = act(z)`,
`p = maxpool(a)` (its output) and scores `p` with its objective: `"readout"`
(the default, `readout_objective`: grid-pooled features, a trainable linear
read-out and its softmax cross-entropy), `"pooled"` (the channel means
`g = mean_{y,x} p` against fixed class vectors in `R^filters` with one of the
dense losses, `rules.output_gradient`) or `"projection"` (below). Backwards,
in closed form (`dL/dp` as for `"pooled"`):

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

from keras_spela.core import primitives
from keras_spela.core import rules

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


def pooled_objective(p, targets, class_vectors, rule, sample_weight=None):
    """The `"pooled"` objective: the channel means `g` of `p` against
    `class_vectors` `(num_classes, C)` with `rule.dense.local_loss`;
    `dL/dp = dL/dg / (H' W')` at every position.

    Returns:
        `(loss, dL/dp, scores, aux)`; `dL/dp` is `(batch, 1, 1, C)` (the
        same at every position, broadcast by its users), `aux` is `{}`.
    """
    loss, grad_g, scores = rules.output_gradient(
        pooled_features(p), targets, class_vectors, rule.dense, sample_weight
    )
    positions = float(p.shape[1] * p.shape[2])
    return loss, tf.reshape(grad_g / positions, [-1, 1, 1, p.shape[3]]), scores, {}


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


def projection_objective(p, targets, class_vectors, projection, rule, sample_weight=None):
    """The paper's `"projection"` objective: every channel `c` of `p`
    projected by `projection[c]` and compared with `class_vectors[c]`
    `(num_classes, d)` (its classes' group vectors); the loss is the mean
    over channels and examples, `dL/dp[c] = dL/du[c] projection[c]^T`.

    Returns:
        `(loss, dL/dp, scores, aux)` with `aux` `{"channels": (C, batch,
        H'W'), "grad_projected": (C, batch, d)}`, the factors of
        `dL/dprojection`.
    """
    channels, projected = projected_channels(p, projection)
    # The labels of every channel's rows (MUL broadcasts; no TILE).
    grouped_targets = tf.expand_dims(targets, 0) * tf.ones([p.shape[3], 1, 1])
    loss, grad_projected, scores = rules.output_gradient(
        projected, grouped_targets, class_vectors, rule.dense, sample_weight
    )
    grad_channels = tf.matmul(grad_projected, projection, transpose_b=True)
    grad_p = tf.reshape(tf.transpose(grad_channels, [1, 2, 0]), [-1] + p.shape[1:].as_list())
    aux = {"channels": channels, "grad_projected": grad_projected}
    return loss, grad_p, tf.reduce_mean(scores, axis=0), aux


def grid_cells(size, cells):
    """`[(start, stop), ...]`: `cells` windows covering `range(size)`, cell
    `i` from `floor(i size / cells)` to `ceil((i + 1) size / cells)`
    (adaptive average pooling; neighbours overlap when `cells` does not
    divide `size`). At most `size` cells."""
    cells = min(cells, size)
    return [(i * size // cells, -(-(i + 1) * size // cells)) for i in range(cells)]


def grid_pooling_matrix(height, width, grid):
    """`(H W, gh gw)` float32: column `k` averages the positions (row-major)
    of grid cell `k` (`grid_cells` along each axis)."""
    rows, columns = grid_cells(height, grid[0]), grid_cells(width, grid[1])
    matrix = np.zeros((height, width, len(rows), len(columns)), np.float32)
    for i, (top, bottom) in enumerate(rows):
        for j, (left, right) in enumerate(columns):
            matrix[top:bottom, left:right, i, j] = 1.0 / ((bottom - top) * (right - left))
    return matrix.reshape(height * width, len(rows) * len(columns))


def grid_features(outputs, grid):
    """`p` average-pooled to a `grid` of cells, `(batch, C * cells)`
    (channel-major): TRANSPOSE, RESHAPE and one product with the constant
    `grid_pooling_matrix`."""
    _, height, width, channels = outputs.shape
    matrix = grid_pooling_matrix(height, width, grid)
    positions = tf.reshape(tf.transpose(outputs, [0, 3, 1, 2]), [-1, height * width])
    return tf.reshape(tf.matmul(positions, matrix), [-1, channels * matrix.shape[1]])


def readout_logits(outputs, readout_kernel, readout_bias, grid):
    """`(features, logits)` of the read-out: `grid_features(p) R + r`."""
    features = grid_features(outputs, grid)
    return features, tf.matmul(features, readout_kernel) + readout_bias


def readout_scores(outputs, readout_kernel, readout_bias, grid):
    """Class scores of the `"readout"` objective: the read-out's softmax
    probabilities, `(batch, num_classes)`."""
    _, logits = readout_logits(outputs, readout_kernel, readout_bias, grid)
    return tf.exp(tf.nn.log_softmax(logits))


def readout_objective(p, targets, readout_kernel, readout_bias, grid, sample_weight=None):
    """The `"readout"` objective: `p` average-pooled to a `grid`
    (`grid_features`, `f`), a trainable linear read-out `l = f R + r` and
    the softmax cross-entropy `L = -log softmax(l)_y` (the "pred" loss of
    Nokland & Eidnes, 2019). In closed form, with `e = softmax(l) - y`
    (weighted, over the batch): `dL/dR = f^T e`, `dL/dr = sum e`,
    `dL/df = e R^T` and `dL/dp` that spread evenly over each grid cell.

    Returns:
        `(loss, dL/dp, scores, aux)` with `aux` `{"features": f,
        "grad_logits": e}` (the factors of `dL/dR`).
    """
    _, height, width, channels = p.shape
    features, logits = readout_logits(p, readout_kernel, readout_bias, grid)
    log_probabilities = tf.nn.log_softmax(logits)
    probabilities = tf.exp(log_probabilities)
    losses = -tf.reduce_sum(targets * log_probabilities, axis=-1)
    batch = tf.cast(tf.shape(p)[0], p.dtype)
    row_scale = 1.0 / batch
    if sample_weight is not None:
        sample_weight = tf.reshape(tf.cast(sample_weight, p.dtype), [-1])
        losses = losses * sample_weight
        row_scale = tf.expand_dims(sample_weight, -1) / batch
    grad_logits = (probabilities - targets) * row_scale
    matrix = grid_pooling_matrix(height, width, grid)
    grad_features = tf.matmul(grad_logits, readout_kernel, transpose_b=True)
    grad_positions = tf.matmul(
        tf.reshape(grad_features, [-1, matrix.shape[1]]), matrix, transpose_b=True
    )
    grad_p = tf.transpose(tf.reshape(grad_positions, [-1, channels, height, width]), [0, 2, 3, 1])
    aux = {"features": features, "grad_logits": grad_logits}
    return tf.reduce_sum(losses) / batch, grad_p, probabilities, aux


def readout_gradients(error):
    """`(dL/dR, dL/dr)` of the read-out from a `LocalError`'s `aux`."""
    grad_logits = error.aux["grad_logits"]
    return (
        primitives.dense_kernel_gradient(error.aux["features"], grad_logits),
        tf.reduce_sum(grad_logits, axis=0),
    )


def conv_local_error(h, z, a, p, normalized, rule, objective):
    """The local loss and `dL/dz` from a forward pass (`conv_forward`).

    Args:
        h, z, a, p, normalized: the forward pass (`conv_forward`).
        rule: a `ConvRule`.
        objective: a function of `p` returning `(loss, dL/dp, scores, aux)`
            (`pooled_objective`, `projection_objective` or
            `readout_objective` with their other arguments bound).

    Returns:
        A `rules.LocalError` with `inputs = h` (padded), `outputs = p`; its
        `aux` holds the objective's factors of its own parameters'
        gradients and, with a normalisation, `"grad_conv"`: `dL/dc` at the
        convolution's output (the kernel's factor).
    """
    loss, grad_p, scores, aux = objective(p)
    # act' at the pooled resolution: the gradient reaches only the cell of a
    # window where a equals the window's maximum p, so act'(a) = act'(p)
    # there (and 0 * act' elsewhere).
    grad_z = primitives.max_pool_gradient(
        rules.times_activation_derivative(grad_p, p, rule.dense), a, p, rule.pool_size
    )
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
    """`dL/dK`, `(kh, kw, C, O)` (`primitives.conv_filter_gradient`)."""
    return primitives.conv_filter_gradient(h, grad_z, rule.kernel_size, rule.strides)


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
    if error.aux is not None and "grad_logits" in error.aux:
        grad_logits = error.aux["grad_logits"]
        batch = tf.cast(tf.shape(grad_logits)[0], grad_z.dtype)
        bound = tf.maximum(
            bound,
            batch
            * rules.largest_magnitude([grad_logits])
            * tf.maximum(rules.largest_magnitude([error.aux["features"]]), 1.0),
        )
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
