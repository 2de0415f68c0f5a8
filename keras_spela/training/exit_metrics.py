"""ExitMetrics: a SpelaModel's loss and accuracy, overall and per exit.

Every metric is a running mean; all of them live in two variables (the
weighted sums and the weights, one slot per metric), so that a training step
updates them with two ops whatever the number of exits (one Keras `Mean` per
metric costs about ten ops each, a measurable part of a small network's
step: `benchmarks/small_speed.py`). Keras sees one `keras.metrics.Metric` per name (`ExitMetrics.slots`):
`fit`'s logs, History, callbacks and `evaluate` are unchanged.
"""

import keras
import tensorflow as tf


class ExitMetrics:
    """The running means `loss`, `accuracy` and, per exit `name`,
    `{name}_loss` and `{name}_accuracy`.

    Args:
        exit_names: names of the exits (SPELA layers), in order; the last
            one's accuracy is also `accuracy`.

    Example:

    ```python
    metrics = ExitMetrics(["dense_1", "dense_2"])
    logs = metrics.update(y, None, scores, losses)  # {name: mean so far}
    metrics.slots  # the keras.metrics.Metric objects of SpelaModel.metrics
    ```
    """

    def __init__(self, exit_names):
        self.exit_names = list(exit_names)
        self.names = ["loss", "accuracy"]
        for name in self.exit_names:
            self.names += [f"{name}_loss", f"{name}_accuracy"]
        self._index = {name: index for index, name in enumerate(self.names)}
        size = (len(self.names),)
        # Metric variables as Keras makes them (summed across replicas).
        self.totals, self.weights = (
            keras.Variable(
                tf.zeros(size),
                trainable=False,
                name=name,
                synchronization="on_read",
                aggregation="sum",
            )
            for name in ("metric_totals", "metric_weights")
        )
        self.slots = [MeanSlot(self, index, name) for index, name in enumerate(self.names)]

    def __contains__(self, name):
        return name in self._index

    def update(self, y, sample_weight, scores, losses):
        """Adds one batch and returns the means of the metrics it updated.

        Args:
            y: integer labels `(batch,)`.
            sample_weight: None or `(batch,)` weights of the accuracies.
            scores: `{exit name: (batch, num_classes) class scores}`.
            losses: `{exit name: batch-mean local loss}` of the layers that
                have one (a layer without one reports no loss).

        Returns:
            `{metric name: running mean}`.
        """
        values, weights = {}, {}
        for name, loss in losses.items():
            values[f"{name}_loss"], weights[f"{name}_loss"] = loss, 1.0
        if losses:
            values["loss"], weights["loss"] = tf.add_n(list(losses.values())), 1.0
        if sample_weight is None:
            total_weight = tf.cast(tf.shape(y)[0], tf.float32)
        else:
            sample_weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
            total_weight = tf.reduce_sum(sample_weight)
        for name, layer_scores in scores.items():
            predicted = tf.argmax(layer_scores, axis=-1, output_type=y.dtype)
            correct = tf.cast(tf.equal(predicted, y), tf.float32)
            if sample_weight is not None:
                correct = correct * sample_weight
            values[f"{name}_accuracy"] = tf.reduce_sum(correct)
            weights[f"{name}_accuracy"] = total_weight
            if name == self.exit_names[-1]:
                values["accuracy"], weights["accuracy"] = values[f"{name}_accuracy"], total_weight
        updated = [name for name in self.names if name in values]
        totals = self.totals.assign_add(_dense(values, self.names))
        counts = self.weights.assign_add(_dense(weights, self.names))
        means = tf.unstack(tf.math.divide_no_nan(totals, counts))
        return {name: means[self._index[name]] for name in updated}

    def result(self, index):
        """The running mean of slot `index` (0 before any update)."""
        return tf.math.divide_no_nan(self.totals[index], self.weights[index])

    def results(self):
        """`{name: running mean}` of every slot, as Python floats."""
        means = tf.math.divide_no_nan(self.totals, self.weights).numpy()
        return {name: float(mean) for name, mean in zip(self.names, means)}

    def reset(self, index=None):
        """Sets slot `index` (every slot when None) back to no data."""
        if index is None:
            self.totals.assign(tf.zeros_like(self.totals))
            self.weights.assign(tf.zeros_like(self.weights))
            return
        keep = 1.0 - tf.one_hot(index, len(self.names))
        self.totals.assign(self.totals * keep)
        self.weights.assign(self.weights * keep)


def _dense(parts, names):
    """`(len(names),)` float32: `parts[name]`, or 0 for a name without one."""
    return tf.stack([tf.cast(parts.get(name, 0.0), tf.float32) for name in names])


class MeanSlot(keras.metrics.Metric):
    """One running mean of an `ExitMetrics`, as Keras sees it: its name,
    `result()` and `reset_state()` (`fit` resets every metric at the start of
    each epoch). It is updated only through `ExitMetrics.update`."""

    def __init__(self, bank, index, name):
        super().__init__(name=name, dtype="float32")
        self._bank_and_index = (bank, index)  # a tuple: not tracked by Keras

    def update_state(self, *args, **kwargs):
        raise NotImplementedError(
            f"{self.name!r} is updated by SpelaModel's steps (ExitMetrics.update)."
        )

    def result(self):
        bank, index = self._bank_and_index
        return bank.result(index)

    def reset_state(self):
        bank, index = self._bank_and_index
        bank.reset(index)
