"""Room for classes the host never had: `SpelaModel(max_classes=...)`.

SPELA's class vectors are fixed, so a model can own vectors for more classes
than it has seen. With `max_classes`, every SPELA layer gets class vectors for
`max_classes` classes, the first `num_classes` are active, and which classes
are active is model state (the non-trainable weight `active_classes`, saved
with the weights and exported into LiteRT models as device state). A class is
started with `activate_class(k)`, on the host or on a device
(`DeviceTrainer.activate_class`); labels of inactive classes reject a batch,
and prediction and evaluation cover the active classes only (an inactive
class's score is pushed below every cosine). While training, the
`softmax_cosine` loss still compares with every class vector, inactive ones
included: they act as negatives, which keeps the features away from the
vectors of classes still to come.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_spela.core import arguments

# Added to an inactive class's cosine: it ends at or below -3, under any
# active class's score (cosines are in [-1, 1]).
INACTIVE_SCORE_SHIFT = 4.0


def class_capacity(num_classes, max_classes):
    """`max_classes` checked against `num_classes` (the number of slots)."""
    max_classes = arguments.integer(max_classes, "max_classes", minimum=2)
    if max_classes < num_classes:
        raise ValueError(
            f"max_classes={max_classes} must be >= num_classes={num_classes} (the "
            "classes active from the start)."
        )
    return max_classes


def mask_scores(scores, class_mask):
    """`scores` `(batch, classes)` with the inactive classes (mask < 0.5)
    pushed below -3."""
    active = tf.cast(tf.greater_equal(class_mask, 0.5), scores.dtype)
    return scores + (active - 1.0) * INACTIVE_SCORE_SHIFT


class ClassSlotsMixin:
    """`active_classes` and `activate_class` for `SpelaModel`."""

    def _add_class_mask(self, active):
        """The `active_classes` weight (1 for the first `active` classes), or
        None for a model without `max_classes`."""
        self.class_mask = None
        if self.max_classes is None:
            return
        mask = np.zeros(self.num_classes, np.float32)
        mask[:active] = 1.0
        self.class_mask = self.add_weight(
            name="active_classes",
            shape=(self.num_classes,),
            initializer=keras.initializers.Constant(mask),
            trainable=False,
        )

    @property
    def active_classes(self):
        """The ids of the active classes (all of them without `max_classes`)."""
        if self.class_mask is None:
            return list(range(self.num_classes))
        return [int(k) for k in np.flatnonzero(self.class_mask.numpy() > 0.5)]

    def activate_class(self, class_id):
        """Starts class `class_id`: its labels are learned from and its score
        counts in prediction and evaluation from now on.

        Raises:
            ValueError: the model has no `max_classes`, `class_id` is not in
                `[0, max_classes)`, or the class is already active.
        """
        check_activation(
            class_id, self.active_classes, self.class_mask is not None, self.num_classes
        )
        mask = self.class_mask.numpy()
        mask[class_id] = 1.0
        self.class_mask.assign(mask)

    def masked_scores(self, scores):
        """`{exit: scores}` with the inactive classes pushed below -3."""
        if self.class_mask is None:
            return scores
        mask = tf.convert_to_tensor(self.class_mask)
        return {name: mask_scores(value, mask) for name, value in scores.items()}


def check_activation(class_id, active, has_slots, capacity):
    """The errors of `activate_class`."""
    if not has_slots:
        raise ValueError(
            "This model has no room for new classes: build it with "
            "SpelaModel(..., max_classes=N) (and export that model)."
        )
    if not arguments.is_integer(class_id) or not 0 <= class_id < capacity:
        raise ValueError(
            f"class_id must be an integer in [0, max_classes={capacity}), received {class_id!r}."
        )
    if class_id in active:
        raise ValueError(f"Class {class_id} is already active (active: {active}).")
