"""The steps of SpelaModel: one forward sweep, each learning layer's local
rule and one optimizer update per batch (train), the same without the update
(test), and every exit's scores (predict)."""

import keras
import tensorflow as tf

from keras_spela.core import acceptance
from keras_spela.core import primitives
from keras_spela.core import rules
from keras_spela.training import data_checks
from keras_spela.training.sweep import sweep


class LocalStepsMixin:
    """`train_step`, `test_step` and `predict_step` of `SpelaModel`, and the
    local rule they share with every exporter (`compute_local_errors`,
    `compute_local_gradients`)."""

    def compute_local_errors(
        self,
        x,
        y,
        sample_weight=None,
        training=True,
        train_layers=None,
        weights=None,
        ordered=False,
    ):
        """Runs one forward sweep and every learning layer's local loss.

        Changes no variable (see `keras_spela.training.sweep.sweep`).

        Args:
            x: a batch of inputs.
            y: integer labels `(batch,)`.
            sample_weight: optional `(batch,)` example weights.
            training: passed to the non-SPELA layers (Dropout, BatchNorm).
            train_layers: names of the SPELA layers that learn; None uses
                the model's `learning_layers`.
            weights: optional `{layer name: {weight name: value}}` used
                instead of those layers' own weights (device programs).
            ordered: take each layer's gradients before the next layer runs
                (`keras_spela.training.sweep.sweep`; `train_step` does).

        Returns:
            `(errors, scores)`: `{layer name: rules.LocalError}` for the
            learning layers and `{layer name: (batch, num_classes) class
            scores}` for every exit.
        """
        if train_layers is None:
            train_layers = self.learning_layers
        targets = rules.one_hot(y, self.num_classes)
        errors, scores = sweep(
            self.stack, x, targets, sample_weight, train_layers, training, weights, ordered
        )
        return errors, self.masked_scores(scores)

    def compute_local_gradients(self, errors):
        """The closed-form parameter gradients of `compute_local_errors`'
        errors.

        Returns:
            `(gradients, variables, losses)`: lists of gradients and the
            variables they belong to (learning layers only, in layer order),
            and `{layer name: batch-mean local loss}`.
        """
        gradients, variables, losses = [], [], {}
        for layer in self.exit_layers:
            if layer.name in errors:
                error = errors[layer.name]
                gradients.extend(
                    error.gradients
                    if error.gradients is not None
                    else layer.parameter_gradients(error)
                )
                variables.extend(layer.trainable_variables)
                losses[layer.name] = error.loss
        return gradients, variables, losses

    def exit_scores(self, x, training=False):
        """Class scores at every exit: `{layer name: (batch, num_classes)}`
        (an inactive class of a `max_classes` model scores below -3)."""
        x = data_checks.model_inputs(self, x)
        return self.masked_scores(sweep(self.stack, x, training=training)[1])

    def call(self, inputs, training=False):
        return self.exit_scores(inputs, training=training)[self.exit_layers[-1].name]

    # ------------------------------------------------------------ keras steps
    def train_step(self, data):
        with primitives.lowering(self.lowering):
            return self._train_step(data)

    def _train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, y = self._checked_batch(x, y)
        if not all(layer.built for layer in self.stack):
            self.build(x.shape)  # a model without keras.Input, at its first batch
        self._build_optimizer()
        # Under tf.distribute (even one replica) the optimizer merges across
        # replicas, which XLA cannot compile.
        if self.xla_local_steps and self.learning_layers and not tf.distribute.has_strategy():
            if "step" not in self._xla_functions:
                self._xla_functions["step"] = tf.function(
                    self._gated_local_update, jit_compile=True, autograph=False
                )
            # The XLA function skips the update of a rejected batch; the
            # assertions (which XLA would drop) then raise. XLA compiles the
            # builtins lowering: it fuses those ops itself, while TensorFlow's
            # fused filter gradient compiles to far slower XLA code
            # (benchmarks/conv_speed.py times both).
            with primitives.lowering("builtins"):
                losses, counts, scores = self._xla_functions["step"](x, y, sample_weight)
            tf.group(acceptance.assert_accepted(counts, self.num_classes, list(losses)))
        else:
            errors, scores = self.compute_local_errors(
                x, y, sample_weight, ordered=self.ordered_steps
            )
            gradients, variables, losses = self.compute_local_gradients(errors)
            # Under tf.distribute the optimizer sums the replicas' gradients
            # (as for Keras' own losses, divided by the replica count).
            replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            if replicas > 1:
                gradients = [g / replicas for g in gradients]
            checks = acceptance.assert_accepted(
                acceptance.layer_rejections(self.exit_layers, errors),
                self.num_classes,
                list(errors),
            )
            # Every op of the update (iterations included) waits for them.
            with tf.control_dependencies(checks):
                if variables:
                    self.optimizer.apply_gradients(zip(gradients, variables))
        return self._exit_metrics.update(y, sample_weight, scores, losses)

    def _gated_local_update(self, x, y, sample_weight):
        """The local rules and the update, which runs only for an accepted
        batch (the step of `compile(jit_compile=True)`)."""
        errors, scores = self.compute_local_errors(x, y, sample_weight, ordered=self.ordered_steps)
        gradients, variables, losses = self.compute_local_gradients(errors)
        counts = acceptance.layer_rejections(self.exit_layers, errors)

        def update():
            self.optimizer.apply_gradients(zip(gradients, variables))
            return tf.constant(True)

        tf.cond(acceptance.accepted(counts), update, lambda: tf.constant(False))
        return losses, counts, scores

    def test_step(self, data):
        with primitives.lowering(self.lowering):
            return self._test_step(data)

    def _test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, y = self._checked_batch(x, y, training=False)
        loss_weight = sample_weight
        if self.class_mask is not None:
            # Evaluation covers the active classes: other rows weigh 0 in the
            # accuracies, and the losses are means over the active rows.
            mask = tf.cast(tf.greater_equal(self.class_mask, 0.5), tf.float32)
            active = tf.reduce_sum(rules.one_hot(y, self.num_classes) * mask, axis=-1)
            if sample_weight is not None:
                active = active * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
            rows = tf.cast(tf.shape(y)[0], tf.float32)
            count = tf.reduce_sum(tf.cast(tf.greater(active, 0.0), tf.float32))
            sample_weight = active
            loss_weight = active * (rows / tf.maximum(count, 1.0))
        every_exit = [layer.name for layer in self.exit_layers]
        errors, scores = self.compute_local_errors(
            x, y, loss_weight, training=False, train_layers=every_exit
        )
        losses = {name: error.loss for name, error in errors.items()}
        return self._exit_metrics.update(y, sample_weight, scores, losses)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        # Every exit costs one small product: `predict` picks one afterwards,
        # so choosing an exit never retraces.
        return self.exit_scores(x, training=False)

    def _checked_batch(self, x, y, training=True):
        """Checks a batch's types and shapes, and asserts the rejection counts
        that need no forward pass (`acceptance.input_rejections`; labels of
        inactive classes only when `training`)."""
        if y is None:
            raise ValueError("SpelaModel needs labels: call fit/evaluate with y.")
        if y.shape.rank == 0:
            raise ValueError(
                "The labels of a batch have shape (): single examples, not "
                "batches. Batch a tf.data.Dataset first, e.g. dataset.batch(32)."
            )
        x = data_checks.model_inputs(self, x)
        if not y.dtype.is_integer:
            raise ValueError(
                "Labels must be integer class ids in [0, num_classes), "
                f"received dtype {y.dtype.name}. Cast them, e.g. y.astype('int32')."
            )
        if y.shape.rank is not None and y.shape.rank != 1:
            if y.shape.rank == 2 and y.shape[-1] == 1:
                y = tf.reshape(y, [-1])
            else:
                raise ValueError(
                    "Labels must be integer class ids of shape (batch,), received "
                    f"shape {tuple(y.shape)}. One-hot labels are not accepted."
                )
        x_rows, y_rows = x.shape[0], y.shape[0]
        if x_rows is not None and y_rows is not None and x_rows != y_rows:
            raise ValueError(
                f"x and y must have the same number of rows, received {x_rows} and {y_rows}."
            )
        counts = {
            "rows": tf.cast(tf.not_equal(tf.shape(x)[0], tf.shape(y)[0]), tf.float32),
            **acceptance.input_rejections(
                x, y, self.num_classes, class_mask=self.class_mask if training else None
            ),
        }
        checks = acceptance.assert_accepted(counts, self.num_classes)
        with tf.control_dependencies(checks):
            # Cast after the check: int32 would wrap a label of 2**32 to 0.
            return tf.identity(x), tf.cast(y, tf.int32)
