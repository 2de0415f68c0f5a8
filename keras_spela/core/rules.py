"""The SPELA local rule, in closed form.

This module is the one place where a SPELA layer's forward pass and its local
update are written. `SpelaDense`, `SpelaModel.train_step` and every exporter
call these functions, so the host and every device runtime run the same code.

Everything here is a pure function of tensors, written with ops that TFLite
and TFLite Micro have as builtins (MATMUL, ADD, MUL, DIV, SQRT, MAXIMUM,
GREATER, EQUAL, CAST, EXP, LOG_SOFTMAX, TANH, LOGISTIC, ...): no
`tf.where`, no gather, no autodiff. With `a = act(z)`, `z = h W + b`,
`n = ||a||`, `u = a / n` and `s_c = u . v_c`:

- `"cosine"`:          `L = 1 - s_y`,               `dL/da = -(v_y - s_y u) / n`
- `"log_cosine"`:      `L = log(2 - s_y)`,          `dL/da = -(v_y - s_y u) / (n (2 - s_y))`
- `"squared_cosine"`:  `L = (1 - s_y)^2`,           `dL/da = -2 (1 - s_y) (v_y - s_y u) / n`
- `"euclidean"`:       `L = ||a - v_y||^2`,         `dL/da = 2 (a - v_y)`
- `"softmax_cosine"`:  `L = -log softmax(s / t)_y`, `dL/da = (e V - (e . s) u) / (t n)`
  with `e = softmax(s / t) - onehot(y)`.

then `dz = dL/da * act'(z)` (`local_error`), `dW = h^T dz` (`kernel_gradient`),
`db = sum(dz)` (`bias_gradient`), averaged over the batch. The input `h` is a constant: nothing flows back to earlier layers.
"""

import collections
import dataclasses
import math
import numbers

import numpy as np
import tensorflow as tf

from keras_spela.core import primitives

ACTIVATIONS = ("leaky_relu", "relu", "tanh", "sigmoid", "linear")
LOCAL_LOSSES = ("cosine", "log_cosine", "squared_cosine", "euclidean", "softmax_cosine")

# Rows whose norm is at or below this (float32's smallest normal number) are
# treated as zero: normalising them returns zeros and their cosine gradient is
# dropped (the cosine of a zero vector is undefined). Every other row, however
# small, is a direction: the cosine losses are scale-free, and so is the rule.
NORM_EPSILON = float(np.finfo(np.float32).tiny)

# A batch is learned from only when no parameter gradient can exceed this
# (`gradient_bound`): squared gradients (Adam's second moment) then stay
# finite in float32, whose largest value is about 3.4e38.
MAX_GRADIENT = 1e18

LocalError = collections.namedtuple(
    "LocalError",
    ["inputs", "outputs", "grad_z", "loss", "scores", "aux", "gradients", "check"],
    defaults=(None, None, None),
)
LocalError.__doc__ = """A layer's local loss and its gradient at the pre-activation.

Attributes:
    inputs: `h`, the input actually multiplied (normalised when the rule
        says so), `(batch, input_dim)`.
    outputs: the layer's (pre-update) outputs, passed on to the next layer.
    grad_z: `dL/dz`, `(batch, units)`; every parameter gradient of a dense
        layer follows from it and `inputs` (`kernel_gradient`,
        `bias_gradient`).
    loss: scalar, the layer's local loss averaged over the batch.
    scores: `(batch, num_classes)` class scores of the outputs.
    aux: None, or a dict of further tensors of the forward pass that a
        layer kind's parameter gradients need (a layer's gradients are
        functions of its `LocalError` alone).
    gradients, check: None, or (an ordered sweep, `keras_spela.training.sweep`)
        the layer's parameter gradients and its acceptance check
        (`acceptance.layer_check`), already computed.
"""


@dataclasses.dataclass(frozen=True)
class DenseRule:
    """The static settings of a dense SPELA layer's local rule.

    Args:
        activation: one of `ACTIVATIONS`.
        negative_slope: slope of `"leaky_relu"` for negative inputs.
        local_loss: one of `LOCAL_LOSSES`.
        temperature: the softmax temperature of `"softmax_cosine"`.
        normalize_inputs: whether each input row is scaled to unit norm
            before the matrix product (the paper's Algorithm 1).
        binary_weights: whether the forward pass uses `sign(kernel)` (+-1);
            the float kernel is then a shadow weight that receives the update.
    """

    activation: str = "leaky_relu"
    negative_slope: float = 0.01
    local_loss: str = "softmax_cosine"
    temperature: float = 0.1
    normalize_inputs: bool = False
    binary_weights: bool = False

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation={self.activation!r}. Expected one of {ACTIVATIONS}."
            )
        if self.local_loss not in LOCAL_LOSSES:
            raise ValueError(
                f"Unknown local_loss={self.local_loss!r}. Expected one of {LOCAL_LOSSES}."
            )
        if not (
            isinstance(self.temperature, numbers.Real)
            and not isinstance(self.temperature, bool)
            and math.isfinite(self.temperature)
            and self.temperature > 0
        ):
            raise ValueError(
                "temperature must be a finite number > 0, received "
                f"temperature={self.temperature!r}."
            )
        if not (isinstance(self.negative_slope, numbers.Real) and 0.0 <= self.negative_slope < 1.0):
            raise ValueError(
                "negative_slope must be in [0, 1), received "
                f"negative_slope={self.negative_slope!r}."
            )


def row_norm(t):
    """The L2 norm of every row, `(batch, 1)`, for rows of any float32
    magnitude: computed on the row divided by its largest magnitude, so that
    no square underflows (rows of 1e-20) or overflows."""
    largest = tf.maximum(
        tf.reduce_max(t, axis=-1, keepdims=True),
        -tf.reduce_min(t, axis=-1, keepdims=True),
    )
    scale = tf.maximum(largest, NORM_EPSILON)
    # A MUL by the (batch, 1) reciprocal: cheaper than a DIV of every entry.
    scaled = t * (1.0 / scale)
    return scale * tf.sqrt(tf.reduce_sum(tf.square(scaled), axis=-1, keepdims=True))


def normalize_rows(h):
    """Scales every row of `h` to unit L2 norm; all-zero rows stay zero."""
    return h * (1.0 / tf.maximum(row_norm(h), NORM_EPSILON))


def one_hot(labels, num_classes):
    """One-hot float32 rows from integer labels, as `max(1 - |y - c|, 0)`.

    Written with SUB, CAST, ABS and MAXIMUM: the converter fuses the usual
    EQUAL pattern into ONE_HOT, which TFLite Micro has no kernel for. A label
    outside `[0, num_classes)` gives an all-zero row.
    """
    classes = tf.range(num_classes, dtype=labels.dtype)
    distance = tf.cast(tf.expand_dims(labels, -1) - classes, tf.float32)
    return tf.maximum(1.0 - tf.abs(distance), 0.0)


def binarize(kernel):
    """`+1` where `kernel >= 0`, else `-1` (the ablation's binary weights)."""
    return 2.0 * tf.cast(tf.greater_equal(kernel, 0.0), kernel.dtype) - 1.0


def activate(z, rule):
    """The layer's activation `act(z)`."""
    if rule.activation == "leaky_relu":
        # LEAKY_RELU: one pass, and one int8 kernel in a quantised front
        # (MAXIMUM of a MUL keeps two map-sized tensors alive).
        return tf.nn.leaky_relu(z, alpha=rule.negative_slope)
    if rule.activation == "relu":
        return tf.maximum(z, 0.0)
    if rule.activation == "tanh":
        return tf.tanh(z)
    if rule.activation == "sigmoid":
        return tf.sigmoid(z)
    return z


def times_activation_derivative(grad_a, a, rule):
    """`dL/dz = dL/da * act'(z)`, given `a = act(z)`.

    Written with `a` only, so `z` need not be kept until the backward step;
    `grad_a` may be any shape that broadcasts against `a`. At exactly `z = 0`
    (a flat image region with a zero bias) `leaky_relu` takes its negative
    slope and `relu` 0, as TensorFlow's LeakyReluGrad and ReluGrad do (`a > 0`
    exactly when `z > 0`)."""
    if rule.activation == "leaky_relu":
        # max(1 or 0, slope): a MAXIMUM, not a MUL and an ADD. (A SELECT of
        # same-shaped tensors converts to SELECT, which TFLite Micro lacks.)
        positive = tf.cast(tf.greater(a, 0.0), a.dtype)
        return grad_a * tf.maximum(positive, rule.negative_slope)
    if rule.activation == "relu":
        return grad_a * tf.cast(tf.greater(a, 0.0), a.dtype)
    if rule.activation == "tanh":
        return grad_a * (1.0 - tf.square(a))
    if rule.activation == "sigmoid":
        return grad_a * (a * (1.0 - a))
    # linear: act' = 1, at a's shape (grad_a may broadcast, as a conv's
    # (batch, 1, 1, C) dL/dp does).
    return grad_a * tf.ones_like(a)


def dense_forward(inputs, kernel, bias, rule):
    """Forward pass of a dense SPELA layer.

    Args:
        inputs: `(batch, input_dim)` float32.
        kernel: `(input_dim, units)` float32 (the float shadow weights when
            `rule.binary_weights`), or a device layout of it: any object with
            a `left_product(h, transform)` method returning
            `h @ transform(kernel)` (TFLite Micro's row blocks,
            `keras_spela.lite.micro_program.RowBlockKernel`).
        bias: `(units,)` float32, or None.
        rule: a `DenseRule`.

    Returns:
        `(h, z, a)`: the (possibly normalised) input actually multiplied, the
        pre-activation and the activation (the layer's output).
    """
    h = normalize_rows(inputs) if rule.normalize_inputs else inputs
    weights = binarize if rule.binary_weights else (lambda w: w)
    if hasattr(kernel, "left_product"):
        z = kernel.left_product(h, weights)
    else:
        z = tf.matmul(h, weights(kernel))
    if bias is not None:
        z = z + bias
    return h, z, activate(z, rule)


def cosine_scores(outputs, class_vectors):
    """Cosine of every output row to every class vector: `(batch, classes)`
    (0 for a row of ~zero norm)."""
    return _scores_and_norm(outputs, class_vectors)[0]


def _scores_and_norm(outputs, class_vectors):
    """`(scores, norm, 1 / max(norm, NORM_EPSILON))`, row factors `(batch, 1)`."""
    norm = row_norm(outputs)
    inverse_norm = 1.0 / tf.maximum(norm, NORM_EPSILON)
    scores = tf.matmul(outputs, class_vectors, transpose_b=True) * inverse_norm
    return scores, norm, inverse_norm


def output_gradient(outputs, targets, class_vectors, rule, sample_weight=None):
    """Local loss and its closed-form gradient with respect to the outputs.

    Args:
        outputs: `a`, `(batch, units)`; or `(groups, batch, units)`, rows
            scored against a class-vector matrix of their own group.
        targets: one-hot labels `(batch, num_classes)` (see `one_hot`);
            `(groups, batch, num_classes)` for grouped outputs.
        class_vectors: `(num_classes, units)` unit rows; `(groups,
            num_classes, units)` for grouped outputs.
        rule: a `DenseRule`.
        sample_weight: optional `(batch,)` weights of the examples.

    Returns:
        `(loss, grad, scores)`: the loss averaged over all rows (scalar),
        `dL/da` of that mean (the shape of `outputs`), and the cosine scores
        (`outputs`' leading axes, then `num_classes`).
    """
    # Per-row factors are (batch, 1): every (batch, units) tensor is touched
    # as few times as possible (this is most of the rule's elementwise work).
    scores, norm, inverse_norm = _scores_and_norm(outputs, class_vectors)
    target_score = tf.reduce_sum(scores * targets, axis=-1, keepdims=True)

    if rule.local_loss == "euclidean":
        # dL/da = 2 (a - v_y)
        direction = outputs - tf.matmul(targets, class_vectors)
        losses = tf.reduce_sum(tf.square(direction), axis=-1)
        row_scale = 2.0
    else:
        # d(cosine)/d(a) carries 1/||a||; rows of ~zero norm get no update.
        valid_inverse_norm = tf.cast(tf.greater(norm, NORM_EPSILON), outputs.dtype) * inverse_norm
        if rule.local_loss == "softmax_cosine":
            # dL/da = (e V - (e . s) u) / (t ||a||), e = softmax(s / t) - y
            logits = scores / rule.temperature
            log_probabilities = tf.nn.log_softmax(logits)
            losses = -tf.reduce_sum(targets * log_probabilities, axis=-1)
            # exp(log_softmax), not softmax: oneDNN's softmax kernel is slow
            # on small batches (benchmarks/small_speed.py times the step).
            error = tf.exp(log_probabilities) - targets
            error_dot_scores = tf.reduce_sum(error * scores, axis=-1, keepdims=True)
            direction = (
                tf.matmul(error, class_vectors) - (error_dot_scores * inverse_norm) * outputs
            )
            row_scale = valid_inverse_norm / rule.temperature
        else:
            # cosine: dL/da = (s_y u - v_y) / ||a||; log_cosine: / (2 - s_y)
            direction = (target_score * inverse_norm) * outputs - tf.matmul(targets, class_vectors)
            row_scale = valid_inverse_norm
            # squared_cosine: dL/da = 2 (1 - s_y) (s_y u - v_y) / ||a||
            if rule.local_loss == "cosine":
                losses = 1.0 - target_score[..., 0]
            elif rule.local_loss == "squared_cosine":
                losses = tf.square(1.0 - target_score[..., 0])
                row_scale = row_scale * (2.0 * (1.0 - target_score))
            else:
                losses = tf.math.log(2.0 - target_score[..., 0])
                row_scale = row_scale / (2.0 - target_score)

    rows = tf.shape(outputs)[0]
    if outputs.shape.rank == 3:
        rows = rows * tf.shape(outputs)[1]
    batch_size = tf.cast(rows, outputs.dtype)
    if sample_weight is not None:
        sample_weight = tf.reshape(tf.cast(sample_weight, outputs.dtype), [-1])
        losses = losses * sample_weight
        row_scale = row_scale * tf.expand_dims(sample_weight, -1)
    loss = tf.reduce_sum(losses) / batch_size
    # The direction is of unit scale (u, v_y), and row_scale carries
    # 1 / ||a||: folding row_scale into the factor of `outputs` would make
    # it 1 / ||a||^2, which overflows for rows below ~1e-19.
    return loss, direction * (row_scale / batch_size), scores


def local_error(h, z, a, targets, class_vectors, rule, sample_weight=None):
    """The local loss and `dL/dz` from a forward pass (`dense_forward`).

    Args:
        h, z, a: the input, pre-activation and output of `dense_forward`.
        targets: one-hot labels `(batch, num_classes)`.
        class_vectors: `(num_classes, units)`.
        rule: a `DenseRule`.
        sample_weight: optional `(batch,)` example weights.

    Returns:
        A `LocalError`.
    """
    loss, grad_a, scores = output_gradient(a, targets, class_vectors, rule, sample_weight)
    grad_z = times_activation_derivative(grad_a, a, rule)
    return LocalError(h, a, grad_z, loss, scores)


def kernel_gradient(h, grad_z):
    """`dL/dkernel = h^T dL/dz`, `(input_dim, units)`
    (`primitives.dense_kernel_gradient`)."""
    return primitives.dense_kernel_gradient(h, grad_z)


def transposed_kernel_gradient(grad_z_t, h_t):
    """The transpose of `kernel_gradient`, `(units, input_dim)`, from the
    transposes of `dL/dz` and `h`: a product with its right side transposed,
    which TFLite runs as FULLY_CONNECTED. For a row block of a transposed
    kernel, pass the matching rows of `grad_z_t`."""
    return tf.matmul(grad_z_t, h_t, transpose_b=True)


def gradient_bound(error, has_bias=True):
    """An upper bound of every entry of a dense layer's `dL/dkernel` (and
    `dL/dbias`): `batch * max|dL/dz| * max|h|` (with a bias: `max(max|h|,
    1)`), a scalar. Cheap: it reads activations, not gradients."""
    h, grad_z = error.inputs, error.grad_z
    batch = tf.cast(tf.shape(grad_z)[0], grad_z.dtype)
    largest_input = _largest_magnitude(h)
    if has_bias:
        largest_input = tf.maximum(largest_input, 1.0)
    return batch * _largest_magnitude(grad_z) * largest_input


def largest_magnitude(tensors):
    """`max |t|` over a list of tensors (scalar)."""
    return tf.reduce_max(tf.stack([_largest_magnitude(t) for t in tensors]))


def _largest_magnitude(t):
    """`max |t|` from two reductions: no `(batch, units)` temporary for the
    converter to share with other users of `abs(t)` or `t^2` (which would
    keep it alive in a TFLite Micro arena)."""
    return tf.maximum(tf.reduce_max(t), -tf.reduce_min(t))


def bias_gradient(grad_z):
    """`dL/dbias = sum over the batch of dL/dz`, `(units,)`."""
    return tf.reduce_sum(grad_z, axis=0)
