"""Batch acceptance: the one definition of "may this batch change any weight".

A batch is learned from only when every count of `rejection_counts` is zero:

- `"inputs"`: NaN or infinite input values;
- `"labels"`: labels outside `[0, num_classes)`;
- `"layer <name>"`, per learning layer: a non-finite local loss, a
  non-finite layer input or `dL/dz`, or parameter gradients that could
  exceed `rules.MAX_GRADIENT` (so that squared gradients, Adam's second
  moment, stay finite in float32).

`SpelaModel.train_step` asserts every count (a clear error, before any
update), its XLA step and the exported LiteRT and TFLite Micro train steps
gate their updates on `accepted(counts)` with `select`. Everything here is
written with TFLite builtins (LESS_EQUAL, CAST, SUM, SELECT_V2, GATHER).
"""

import numpy as np
import tensorflow as tf

from keras_spela import rules

# Largest finite float32; |x| <= this is false for NaN and +-inf.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def count_nonfinite(tensor):
    """Number of NaN or infinite entries of `tensor` (float32 scalar)."""
    finite = tf.cast(tf.less_equal(tf.abs(tensor), _FLOAT32_MAX), tf.float32)
    return tf.reduce_sum(1.0 - finite)


def count_bad_labels(labels, num_classes):
    """Number of labels outside `[0, num_classes)` (float32 scalar)."""
    in_range = tf.cast(tf.greater_equal(labels, 0), tf.float32) * tf.cast(
        tf.less(labels, num_classes), tf.float32
    )
    return tf.reduce_sum(1.0 - in_range)


def input_rejections(x, y, num_classes):
    """The counts that need no forward pass: `{"inputs": ..., "labels": ...}`."""
    counts = {"labels": count_bad_labels(y, num_classes)}
    if x.dtype.is_floating:
        counts["inputs"] = count_nonfinite(x)
    return counts


def layer_rejections(errors):
    """Per learning layer `{"layer <name>": count}` from its `rules.LocalError`.

    A sum is NaN or infinite when any of its terms is, so each tensor costs
    one reduction and no temporary of its size (which would stay alive in a
    TFLite Micro arena)."""
    counts = {}
    for name, error in errors.items():
        bound = rules.gradient_bound(error)
        counts[f"layer {name}"] = (
            count_nonfinite(error.loss)
            + count_nonfinite(tf.reduce_sum(error.inputs))
            + count_nonfinite(tf.reduce_sum(error.grad_z))
            + (1.0 - tf.cast(tf.less_equal(bound, rules.MAX_GRADIENT), tf.float32))
        )
    return counts


def rejection_counts(x, y, errors, num_classes):
    """Every count of the module docstring, `{reason: float32 scalar}`."""
    return {**input_rejections(x, y, num_classes), **layer_rejections(errors)}


def accepted(counts):
    """True (a boolean scalar) when every count is zero."""
    return tf.equal(tf.add_n(list(counts.values())), 0.0)


def rejection_message(reason, num_classes):
    """What a non-zero count of `reason` means, for an error message."""
    if reason == "inputs":
        return "the inputs contain NaN or infinite values"
    if reason == "labels":
        return f"found a label outside [0, num_classes={num_classes})"
    return (
        f"the local loss of {reason} is not finite, or its gradients could "
        f"exceed {rules.MAX_GRADIENT:g} (inputs too large, or training diverged)"
    )


def assert_accepted(counts, num_classes):
    """Assertions that fail, naming the reason, when a count is not zero."""
    return [
        tf.debugging.assert_equal(
            count,
            tf.constant(0.0, count.dtype),
            message=f"Rejected batch: {rejection_message(reason, num_classes)}; "
            "no weight was changed",
        )
        for reason, count in counts.items()
    ]


def select(accept, new, old):
    """`new` if `accept` else `old`, NaN-safe: SELECT_V2 on one boolean, or a
    GATHER for scalars (the converter would make those a SELECT, which TFLite
    Micro lacks)."""
    if new.shape.rank == 0:
        return tf.gather(tf.stack([old, new]), tf.cast(accept, tf.int32))
    return tf.where(accept, new, old)
