"""Tests for keras_spela.core.rules: the closed-form local rule against autodiff.

The oracle below writes ONE dense SPELA layer with plain TensorFlow ops
(`tf.math.l2_normalize`, `tf.nn.leaky_relu`, softmax cross-entropy, a
straight-through estimator for binary weights) and lets a `GradientTape`
watching only that layer's kernel and bias differentiate the local loss.
The closed form (`rules.dense_forward`, `local_error`, `kernel_gradient`,
`bias_gradient`: what `SpelaDense` calls) must give the same loss and gradients.
"""

import collections
import itertools
import math
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_spela.core import class_vectors as class_vectors_lib
from keras_spela.core import rules

BATCH = 9
INPUT_DIM = 5
UNITS = 6
NUM_CLASSES = 4
NEGATIVE_SLOPE = 0.05
TEMPERATURE = 0.3

Step = collections.namedtuple("Step", ["outputs", "gradients", "loss", "scores"])


def _closed_form_step(inputs, targets, kernel, bias, vectors, rule, sample_weight=None):
    """The dense layer's closed-form rule, composed as `SpelaDense` does."""
    error = rules.local_error(
        *rules.dense_forward(inputs, kernel, bias, rule),
        targets,
        vectors,
        rule,
        sample_weight,
    )
    gradients = [rules.kernel_gradient(error.inputs, error.grad_z)]
    if bias is not None:
        gradients.append(rules.bias_gradient(error.grad_z))
    return Step(error.outputs, gradients, error.loss, error.scores)


# --------------------------------------------------------------------- oracle
def _oracle_activation(z, activation, negative_slope):
    if activation == "leaky_relu":
        return tf.nn.leaky_relu(z, alpha=negative_slope)
    if activation == "relu":
        return tf.nn.relu(z)
    if activation == "tanh":
        return tf.math.tanh(z)
    if activation == "sigmoid":
        return tf.math.sigmoid(z)
    assert activation == "linear"
    return tf.identity(z)


def _oracle_sign(kernel):
    # sign with sign(0) = +1.
    return tf.where(kernel >= 0.0, tf.ones_like(kernel), -tf.ones_like(kernel))


def _oracle_loss(x, labels, kernel, bias, vectors, rule, sample_weight):
    """The batch-mean local loss of one dense layer, written independently."""
    h = tf.math.l2_normalize(x, axis=-1) if rule.normalize_inputs else x
    if rule.binary_weights:
        # Straight-through estimator: forward sign(k), backward identity.
        w = kernel + tf.stop_gradient(_oracle_sign(kernel) - kernel)
    else:
        w = kernel
    z = tf.linalg.matmul(h, w)
    if bias is not None:
        z = z + bias
    a = _oracle_activation(z, rule.activation, rule.negative_slope)
    v_y = tf.gather(vectors, labels)
    if rule.local_loss == "euclidean":
        per_example = tf.reduce_sum((a - v_y) ** 2, axis=1)
    else:
        unit = tf.math.l2_normalize(a, axis=-1)
        cos_y = tf.reduce_sum(unit * v_y, axis=1)
        if rule.local_loss == "cosine":
            per_example = 1.0 - cos_y
        elif rule.local_loss == "log_cosine":
            per_example = tf.math.log(2.0 - cos_y)
        elif rule.local_loss == "squared_cosine":
            per_example = (1.0 - cos_y) ** 2
        else:
            assert rule.local_loss == "softmax_cosine"
            cos_all = tf.linalg.matmul(unit, vectors, transpose_b=True)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=cos_all / rule.temperature
            )
    if sample_weight is not None:
        # Keras' "sum over batch size" reduction: weighted sum / batch size.
        per_example = per_example * sample_weight
    loss = tf.reduce_sum(per_example) / tf.cast(tf.shape(x)[0], tf.float32)
    return loss, a


def _oracle_step(x, labels, kernel, bias, vectors, rule, sample_weight):
    """Loss, outputs and d loss / d (kernel[, bias]) by GradientTape."""
    kernel_var = tf.Variable(kernel)
    variables = [kernel_var]
    bias_var = None
    if bias is not None:
        bias_var = tf.Variable(bias)
        variables.append(bias_var)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(variables)
        loss, a = _oracle_loss(
            tf.constant(x),
            tf.constant(labels),
            kernel_var,
            bias_var,
            tf.constant(vectors),
            rule,
            sample_weight,
        )
    gradients = tape.gradient(loss, variables)
    return loss.numpy(), a.numpy(), [g.numpy() for g in gradients]


# ----------------------------------------------------------------------- data
def _problem(seed, use_bias, with_sample_weight):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, INPUT_DIM)).astype(np.float32)
    x[0] *= 7.0  # rows of very different norms
    labels = np.array([i % NUM_CLASSES for i in range(BATCH)], np.int32)
    rng.shuffle(labels)
    kernel = (0.5 * rng.standard_normal((INPUT_DIM, UNITS))).astype(np.float32)
    kernel[0, 0] = 0.0  # sign(0) must be +1 with binary weights
    bias = (0.1 * rng.standard_normal(UNITS)).astype(np.float32) if use_bias else None
    vectors = class_vectors_lib.simplex_vectors(NUM_CLASSES, UNITS, seed=seed)
    sample_weight = None
    if with_sample_weight:
        sample_weight = rng.uniform(0.0, 2.0, BATCH).astype(np.float32)
        sample_weight[1] = 0.0
    return x, labels, kernel, bias, vectors, sample_weight


def _assert_close(actual, expected, rtol=1e-5):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    scale = max(float(np.max(np.abs(expected))), 1e-3)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


CASES = list(
    itertools.product(
        rules.LOCAL_LOSSES,
        rules.ACTIVATIONS,
        (False, True),  # normalize_inputs
        (False, True),  # binary_weights
        (True, False),  # use_bias
        (False, True),  # sample_weight
    )
)


@pytest.mark.parametrize(
    "local_loss,activation,normalize_inputs,binary_weights,use_bias,weighted",
    CASES,
)
def test_closed_form_step_matches_autodiff_oracle(
    local_loss, activation, normalize_inputs, binary_weights, use_bias, weighted
):
    rule = rules.DenseRule(
        activation=activation,
        negative_slope=NEGATIVE_SLOPE,
        local_loss=local_loss,
        temperature=TEMPERATURE,
        normalize_inputs=normalize_inputs,
        binary_weights=binary_weights,
    )
    seed = CASES.index(
        (local_loss, activation, normalize_inputs, binary_weights, use_bias, weighted)
    )
    x, labels, kernel, bias, vectors, sample_weight = _problem(seed, use_bias, weighted)

    expected_loss, expected_outputs, expected_grads = _oracle_step(
        x, labels, kernel, bias, vectors, rule, sample_weight
    )
    step = _closed_form_step(
        tf.constant(x),
        rules.one_hot(tf.constant(labels), NUM_CLASSES),
        tf.constant(kernel),
        None if bias is None else tf.constant(bias),
        tf.constant(vectors),
        rule,
        None if sample_weight is None else tf.constant(sample_weight),
    )

    assert len(step.gradients) == (2 if use_bias else 1)
    assert step.gradients[0].shape == (INPUT_DIM, UNITS)
    if use_bias:
        assert step.gradients[1].shape == (UNITS,)
    _assert_close(step.loss.numpy(), expected_loss)
    _assert_close(step.outputs.numpy(), expected_outputs)
    for actual, expected in zip(step.gradients, expected_grads):
        assert np.all(np.isfinite(actual.numpy()))
        _assert_close(actual.numpy(), expected)
    # The scores are the cosines to every class vector.
    expected_scores = tf.linalg.matmul(
        tf.math.l2_normalize(expected_outputs, axis=-1), vectors, transpose_b=True
    ).numpy()
    _assert_close(step.scores.numpy(), expected_scores)
    # The gradient is not trivially zero (the comparison means something).
    assert np.max(np.abs(expected_grads[0])) > 1e-4


def test_oracle_detects_a_wrong_gradient():
    # Sanity check of the comparison: a different loss gives other gradients.
    rule = rules.DenseRule(activation="tanh", local_loss="cosine")
    other = rules.DenseRule(activation="tanh", local_loss="log_cosine")
    x, labels, kernel, bias, vectors, _ = _problem(0, True, False)
    step = _closed_form_step(
        tf.constant(x),
        rules.one_hot(tf.constant(labels), NUM_CLASSES),
        tf.constant(kernel),
        tf.constant(bias),
        tf.constant(vectors),
        other,
    )
    _, _, expected = _oracle_step(x, labels, kernel, bias, vectors, rule, None)
    with pytest.raises(AssertionError):
        _assert_close(step.gradients[0].numpy(), expected[0])


@pytest.mark.parametrize("binary_weights", [False, True])
def test_dense_forward_matches_plain_ops(binary_weights):
    rule = rules.DenseRule(
        activation="leaky_relu",
        negative_slope=NEGATIVE_SLOPE,
        normalize_inputs=True,
        binary_weights=binary_weights,
    )
    x, _, kernel, bias, _, _ = _problem(3, True, False)
    h, z, a = rules.dense_forward(tf.constant(x), tf.constant(kernel), tf.constant(bias), rule)
    expected_h = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = np.where(kernel >= 0, 1.0, -1.0) if binary_weights else kernel
    expected_z = expected_h @ w + bias
    expected_a = np.where(expected_z > 0, expected_z, NEGATIVE_SLOPE * expected_z)
    _assert_close(h.numpy(), expected_h)
    _assert_close(z.numpy(), expected_z)
    _assert_close(a.numpy(), expected_a)


# ------------------------------------------------------------- zero rows
@pytest.mark.parametrize("local_loss", rules.LOCAL_LOSSES)
def test_zero_input_row_with_normalize_inputs_is_finite(local_loss):
    rule = rules.DenseRule(local_loss=local_loss, normalize_inputs=True)
    x, labels, kernel, bias, vectors, _ = _problem(1, True, False)
    x[2] = 0.0
    normalized = rules.normalize_rows(tf.constant(x)).numpy()
    assert np.all(np.isfinite(normalized))
    np.testing.assert_array_equal(normalized[2], np.zeros(INPUT_DIM))
    step = _closed_form_step(
        tf.constant(x),
        rules.one_hot(tf.constant(labels), NUM_CLASSES),
        tf.constant(kernel),
        tf.constant(bias),
        tf.constant(vectors),
        rule,
    )
    for value in [step.outputs, step.loss, step.scores] + list(step.gradients):
        assert np.all(np.isfinite(value.numpy())), local_loss
    # The zero row contributes only through the bias: z = b.
    _assert_close(step.outputs.numpy()[2], rules.activate(tf.constant(bias), rule).numpy())


@pytest.mark.parametrize("local_loss", ["cosine", "log_cosine", "softmax_cosine"])
def test_zero_output_row_gets_zero_gradient(local_loss):
    # Linear activation, no bias, a zero input row: that output row is exactly 0,
    # its cosine is undefined, and the rule drops its gradient (NORM_EPSILON).
    rule = rules.DenseRule(activation="linear", local_loss=local_loss)
    x, labels, kernel, _, vectors, _ = _problem(2, False, False)
    x_with_zero = np.concatenate([x, np.zeros((1, INPUT_DIM), np.float32)])
    labels_with_zero = np.concatenate([labels, [1]]).astype(np.int32)
    targets = rules.one_hot(tf.constant(labels_with_zero), NUM_CLASSES)

    loss, grad_a, scores = rules.output_gradient(
        tf.constant(x_with_zero @ kernel), targets, tf.constant(vectors), rule
    )
    assert np.all(np.isfinite(grad_a.numpy()))
    np.testing.assert_array_equal(grad_a.numpy()[-1], np.zeros(UNITS))
    np.testing.assert_array_equal(scores.numpy()[-1], np.zeros(NUM_CLASSES))
    assert np.isfinite(loss.numpy())

    step = _closed_form_step(
        tf.constant(x_with_zero),
        targets,
        tf.constant(kernel),
        None,
        tf.constant(vectors),
        rule,
    )
    reference = _closed_form_step(
        tf.constant(x),
        rules.one_hot(tf.constant(labels), NUM_CLASSES),
        tf.constant(kernel),
        None,
        tf.constant(vectors),
        rule,
    )
    # Only the batch size changed: the gradient is rescaled by B / (B + 1).
    _assert_close(
        step.gradients[0].numpy(),
        reference.gradients[0].numpy() * BATCH / (BATCH + 1),
    )


def test_zero_output_row_loss_is_the_zero_cosine_loss():
    rule = rules.DenseRule(activation="linear", local_loss="cosine")
    vectors = class_vectors_lib.simplex_vectors(NUM_CLASSES, UNITS)
    outputs = tf.zeros((1, UNITS))
    loss, _, _ = rules.output_gradient(
        outputs, rules.one_hot(tf.constant([0]), NUM_CLASSES), tf.constant(vectors), rule
    )
    # cos(0, v) is taken as 0, so 1 - cos = 1.
    assert float(loss) == pytest.approx(1.0)


# ---------------------------------------------------------------- one_hot
@pytest.mark.parametrize("dtype", [tf.int32, tf.int64])
def test_one_hot_out_of_range_labels_give_zero_rows(dtype):
    labels = tf.constant([-3, -1, 0, 1, 3, 4, 10], dtype)
    actual = rules.one_hot(labels, 4).numpy()
    expected = tf.one_hot(tf.cast(labels, tf.int64), 4).numpy()  # zeros when out of range
    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(actual.sum(axis=1), [0, 0, 1, 1, 1, 0, 0])


# ------------------------------------------------------- DenseRule checks
def test_dense_rule_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        rules.DenseRule(activation="gelu")


def test_dense_rule_rejects_unknown_local_loss():
    with pytest.raises(ValueError, match="local_loss"):
        rules.DenseRule(local_loss="hinge")


@pytest.mark.parametrize("temperature", [0, 0.0, -0.1, math.nan, math.inf, -math.inf, "0.1", None])
def test_dense_rule_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        rules.DenseRule(temperature=temperature)


@pytest.mark.parametrize("negative_slope", [-0.01, 1.0, 1.5, math.nan])
def test_dense_rule_rejects_negative_slope_out_of_range(negative_slope):
    with pytest.raises(ValueError, match="negative_slope"):
        rules.DenseRule(negative_slope=negative_slope)


@pytest.mark.parametrize("negative_slope", [0.0, 0.001, 0.99])
def test_dense_rule_accepts_negative_slope_in_range(negative_slope):
    assert rules.DenseRule(negative_slope=negative_slope).negative_slope == negative_slope


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
