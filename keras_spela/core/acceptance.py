"""Batch acceptance: the one definition of "may this batch change any weight".

A batch is learned from only when every count of `rejection_counts` is zero:

- `"inputs"`: NaN or infinite input values, or values beyond
  `MAX_ACTIVATION` (exported steps first flush subnormal inputs to zero, as
  the host's kernels treat them: `flush_subnormals`);
- `"labels"`: labels outside `[0, num_classes)` (in exported train steps,
  `PADDING_LABEL` marks a padding row instead, and a batch of padding only
  is rejected);
- `"inactive"` (models with `max_classes`): labels of classes that are not
  active yet;
- `"layers"`, one count per learning layer: a non-finite local loss,
  parameter gradients that could exceed `rules.MAX_GRADIENT`
  (`SpelaLayer.gradient_bound`; a NaN or infinite `dL/dz` or layer input
  makes the bound or the loss non-finite) (so that squared gradients, Adam's second
  moment, stay finite in float32), or a layer input (or the last learning
  layer's output) beyond `MAX_ACTIVATION`, where float32 overflow starts to
  differ between runtimes.

`SpelaModel.train_step` asserts every count (a clear error, before any
update), its XLA step and the exported LiteRT and TFLite Micro train steps
gate their updates on `accepted(counts)` with `select`. Everything here is
written with TFLite builtins (LESS_EQUAL, CAST, SUM, SELECT_V2, GATHER).
"""

import numpy as np
import tensorflow as tf

from keras_spela.core import rules
from keras_spela_device import contract


class BatchRejectedError(ValueError):
    """A batch that must not change any weight (host: raised by `fit`,
    `evaluate`, `train_on_batch`, `test_on_batch`)."""


# The label of a padding row in an exported train step: the row is ignored
# (weight 0), so a device can learn from fewer examples than the static batch.
PADDING_LABEL = contract.PADDING_LABEL

# Every learning layer's input, and the last one's output, must stay within
# +-MAX_ACTIVATION. Float32 overflow is inf on TensorFlow and LiteRT but
# +-FLT_MAX on TFLite Micro, whose kernels clamp every result: past it the
# rule computes NaN on the ones and finite values on the other. Below this
# bound the rule stays finite on every runtime: squares (variances, squared
# distances) stay below FLT_MAX, reciprocals of row norms stay normal numbers
# (TensorFlow flushes subnormal ones to zero).
MAX_ACTIVATION = contract.MAX_ACTIVATION

# Largest finite float32; |x| <= this is false for NaN and +-inf.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def count_nonfinite(tensor, bound=_FLOAT32_MAX):
    """Number of NaN or infinite entries of `tensor`, or of entries beyond
    `+-bound` (float32 scalar)."""
    finite = tf.cast(tf.less_equal(tf.abs(tensor), bound), tf.float32)
    return tf.reduce_sum(1.0 - finite)


def flush_subnormals(x):
    """`x` with its subnormal values (below float32's smallest normal
    number) set to zero, as TensorFlow's and LiteRT's CPU kernels treat them:
    an exported step then computes as the host does on TFLite Micro too,
    whose kernels keep them."""
    return x * tf.cast(tf.greater_equal(tf.abs(x), rules.NORM_EPSILON), x.dtype)


def count_bad_labels(labels, num_classes):
    """Number of labels outside `[0, num_classes)` (float32 scalar)."""
    in_range = tf.cast(tf.greater_equal(labels, 0), tf.float32) * tf.cast(
        tf.less(labels, num_classes), tf.float32
    )
    return tf.reduce_sum(1.0 - in_range)


def padding_weights(y):
    """Example weights of a device batch whose rows labelled `PADDING_LABEL`
    are padding: `real * batch / count(real)`, so that the batch's local
    losses and gradients are the means over its real examples (as for a
    short last batch of `fit`). Exactly 1 for a batch without padding.

    Returns:
        `(weights, count)`: `(batch,)` float32 weights and the number of real
        examples.
    """
    real = tf.cast(tf.greater_equal(y, 0), tf.float32)
    count = tf.reduce_sum(real)
    batch = tf.cast(tf.shape(y)[0], tf.float32)
    return real * (batch / tf.maximum(count, 1.0)), count


def input_rejections(x, y, num_classes, padding=False, class_mask=None):
    """The counts that need no forward pass: `{"inputs": ..., "labels": ...}`
    (and `"inactive"` with a `class_mask`).

    With `padding` (the exported train steps), labels equal to
    `PADDING_LABEL` mark padding rows and are not counted, but a batch with
    no real example is. `class_mask`: `(num_classes,)`, 1 for the active
    classes."""
    if padding:
        # Labels in [-1, num_classes) are allowed; a batch needs a real one.
        real = tf.reduce_sum(tf.cast(tf.greater_equal(y, 0), tf.float32))
        counts = {
            "labels": count_bad_labels(y - PADDING_LABEL, num_classes - PADDING_LABEL)
            + tf.cast(tf.equal(real, 0.0), tf.float32)
        }
    else:
        counts = {"labels": count_bad_labels(y, num_classes)}
    if class_mask is not None:
        # A label in range has a one-hot row; padding and bad labels do not.
        # A 0/1 test: a count never goes negative, whatever the mask holds.
        inactive = tf.cast(tf.less(class_mask, 0.5), tf.float32)
        counts["inactive"] = tf.reduce_sum(rules.one_hot(y, num_classes) * inactive)
    if x.dtype.is_floating:
        counts["inputs"] = count_nonfinite(x, MAX_ACTIVATION)
    return counts


def beyond_activation_range(tensor):
    """1.0 (float32) when `tensor` holds NaN or a value beyond
    `+-MAX_ACTIVATION`, else 0.0."""
    largest = rules.largest_magnitude([tensor])
    return 1.0 - tf.cast(tf.less_equal(largest, MAX_ACTIVATION), tf.float32)


def layer_check(layer, error):
    """The scalar that `layer_rejections` compares with `rules.MAX_GRADIENT`:
    the layer's gradient bound, `+ 0 * sum(dL/dz)` (NaN when dL/dz holds a
    NaN, which a max need not see), `+ 2 * MAX_GRADIENT` when the layer's
    input is beyond `MAX_ACTIVATION`."""
    return (
        layer.gradient_bound(error)
        + 0.0 * tf.reduce_sum(error.grad_z)
        + beyond_activation_range(error.inputs) * (2.0 * rules.MAX_GRADIENT)
    )


def layer_rejections(layers, errors):
    """`{"layers": (num_layers,) counts}`, one per learning layer in the
    order of `errors` (`{layer name: rules.LocalError}`, from the SPELA
    layers `layers`), or `{}` without learning layers."""
    if not errors:
        return {}
    by_name = {layer.name: layer for layer in layers}
    bounds = tf.stack(
        [
            e.check if e.check is not None else layer_check(by_name[name], e)
            for name, e in errors.items()
        ]
    )
    errors = list(errors.values())
    losses = tf.stack([error.loss for error in errors])
    nonfinite_losses = 1.0 - tf.cast(tf.less_equal(tf.abs(losses), _FLOAT32_MAX), tf.float32)
    unbounded = 1.0 - tf.cast(tf.less_equal(bounds, rules.MAX_GRADIENT), tf.float32)
    # The inputs of the later layers bound the earlier layers' outputs; the
    # last learning layer's output is checked here. (Only that one: a check of
    # every output would keep each conv layer's output alive until the
    # acceptance, 5 % more TFLite Micro arena for a small CNN.)
    last_output = [0.0] * (len(errors) - 1) + [beyond_activation_range(errors[-1].outputs)]
    return {"layers": nonfinite_losses + unbounded + tf.stack(last_output)}


def rejection_counts(x, y, layers, errors, num_classes, padding=False, class_mask=None):
    """Every count of the module docstring, `{reason: float32 counts}`."""
    return {
        **input_rejections(x, y, num_classes, padding, class_mask),
        **layer_rejections(layers, errors),
    }


def accepted(counts):
    """True (a boolean scalar) when every count is zero."""
    return tf.equal(tf.add_n([tf.reduce_sum(c) for c in counts.values()]), 0.0)


def _message(reason, num_classes):
    if reason == "rows":
        return "x and y must have the same number of rows"
    if reason == "inputs":
        return f"the inputs contain NaN, infinite or values beyond {MAX_ACTIVATION:g}"
    if reason == "labels":
        return f"found a label outside [0, num_classes={num_classes})"
    if reason == "inactive":
        return "found a label of a class that is not active (activate_class it first)"
    return (
        f"the local loss of {reason} is not finite, or its gradients could "
        f"exceed {rules.MAX_GRADIENT:g}: its inputs are too large, or far below "
        "the scale of its bias (give it normalize_inputs=True or use_bias=False), "
        "or training diverged (lower the learning rate)"
    )


def assert_accepted(counts, num_classes, layer_names=()):
    """One assertion that fails, naming the first reason, when a count is
    not zero.

    Args:
        counts: from `input_rejections`, `layer_rejections` or
            `rejection_counts`.
        num_classes: for the message about labels.
        layer_names: the learning layers, in the order of `counts["layers"]`.

    Returns:
        A list of assertion ops (empty without counts).
    """
    reasons = [reason for reason in counts if reason != "layers"]
    values = [tf.reshape(counts[reason], [1]) for reason in reasons]
    if "layers" in counts:
        reasons += [f"layer {name!r}" for name in layer_names]
        values.append(tf.reshape(counts["layers"], [-1]))
    if not reasons:
        return []
    messages = tf.constant(
        [
            f"Rejected batch: {_message(reason, num_classes)}; no weight was changed"
            for reason in reasons
        ]
    )
    # NaN != 0: a count that is not a number rejects the batch too.
    rejected = tf.not_equal(tf.concat(values, axis=0), 0.0)
    first = tf.argmax(tf.cast(rejected, tf.int32), output_type=tf.int32)
    # String data only: the assertion needs no tf.cond (cheap at small sizes).
    return [
        tf.debugging.Assert(tf.logical_not(tf.reduce_any(rejected)), [tf.gather(messages, first)])
    ]


def select(accept, new, old):
    """`new` if `accept` else `old`, NaN-safe: SELECT_V2 on one boolean, or a
    GATHER for scalars (the converter would make those a SELECT, which TFLite
    Micro lacks)."""
    if new.shape.rank == 0:
        return tf.gather(tf.stack([old, new]), tf.cast(accept, tf.int32))
    return tf.where(accept, new, old)
