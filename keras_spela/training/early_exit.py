"""The early-exit API of SpelaModel: every SPELA layer is an exit."""

import keras
import numpy as np
import tensorflow as tf

from keras_spela.core import arguments
from keras_spela.training import data_checks


class EarlyExitMixin:
    """Prediction at any exit, truncated models and confidence-gated exit.

    Used by `SpelaModel`, whose `exit_layers` are its SPELA layers and whose
    `predict_step` returns the scores of every exit.
    """

    def exit_index(self, exit):
        """The position in `exit_layers` of an exit given by index or name."""
        names = [layer.name for layer in self.exit_layers]
        if isinstance(exit, str):
            if exit not in names:
                raise ValueError(f"Unknown exit {exit!r}; the exits are {names}.")
            return names.index(exit)
        if arguments.is_integer(exit) and -len(names) <= exit < len(names):
            return int(exit) % len(names)
        raise ValueError(
            f"exit must be an index in [-{len(names)}, {len(names)}) or one of "
            f"{names}, received exit={exit!r}."
        )

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, exit=None):
        """Class scores (cosine to every class vector) at one exit or all.

        Args:
            x, batch_size, verbose, steps, callbacks: as for
                `keras.Model.predict`.
            exit: None (the last exit), an exit index or layer name, or
                `"all"` for a dict `{layer name: scores}`.

        Returns:
            `(num_examples, num_classes)` numpy scores, or a dict of them.
        """
        name = self._exit_name(exit)
        data_checks.check_data(self, x, labels=False)
        scores = super().predict(
            x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks
        )
        return scores if name is None else scores[name]

    def predict_on_batch(self, x, exit=None):
        """`predict` on one batch (same `exit` argument)."""
        name = self._exit_name(exit)
        data_checks.check_data(self, x, labels=False)
        scores = super().predict_on_batch(x)
        return scores if name is None else scores[name]

    def _exit_name(self, exit):
        """The layer name of an exit given as `predict`'s `exit`; None for
        `"all"`."""
        if isinstance(exit, str) and exit == "all":
            return None
        return self.exit_layers[self.exit_index(-1 if exit is None else exit)].name

    def truncated(self, exit):
        """A model made of this model's layers up to and including `exit`.

        The new model shares the layers (and so the weights) of this one; it
        is cheaper to run and predicts from `exit`. It is built (and can be
        exported) when this model's input shape is known.

        Args:
            exit: exit index or SPELA layer name.

        Returns:
            A `SpelaModel`.
        """
        last = self.exit_layers[self.exit_index(exit)]
        layers = self.stack[: self.stack.index(last) + 1]
        if self.example_input_shape is not None:
            layers = [keras.Input(self.example_input_shape)] + layers
        return type(self)(layers, self.num_classes, name=f"{self.name}_to_{last.name}")

    def predict_early_exit(self, x, threshold, batch_size=None):
        """Stops each example at the first exit whose cosine margin passes.

        The margin of an exit is its best class score minus its second best.
        An example that never passes `threshold` uses the last exit.

        Args:
            x: inputs, as for `predict`.
            threshold: margin needed to stop, e.g. 0.2.
            batch_size: passed to `predict`.

        Returns:
            `(predictions, exits)`: integer arrays of the predicted class and
            of the exit index used, per example.
        """
        scores = self.predict(x, exit="all", batch_size=batch_size, verbose=0)
        return self._early_exits(scores, threshold)

    def _early_exits(self, scores, threshold):
        """`(predictions, exits)` of `predict_early_exit` from the scores of
        every exit, `{layer name: (examples, num_classes)}`."""
        scores = np.stack([scores[layer.name] for layer in self.exit_layers])
        top2 = np.sort(scores, axis=-1)[..., -2:]
        confident = (top2[..., 1] - top2[..., 0]) >= threshold
        confident[-1] = True
        exits = np.argmax(confident, axis=0)
        predictions = np.argmax(scores, axis=-1)[exits, np.arange(scores.shape[1])]
        return predictions, exits

    def evaluate_early_exit(self, x, y, threshold, batch_size=None):
        """Accuracy and average depth of confidence-gated early exit.

        Args:
            x: inputs (with `y`), or a batched `tf.data.Dataset` of `(x, y)`
                (then `y` is None), as for `evaluate`.
            y: integer class ids in `[0, num_classes)`, or None.
            threshold: margin needed to stop (`predict_early_exit`).
            batch_size: passed to `predict` for array inputs.

        Returns:
            A dict with `accuracy`, `mean_exit` (average exit index, from 0),
            `mean_depth` (average number of SPELA layers run, from 1), and
            `exit_fractions` (share of examples leaving at each exit).
        """
        if isinstance(x, tf.data.Dataset):
            predictions, exits, y = self._dataset_early_exits(x, y, threshold)
        else:
            if y is None:
                raise ValueError(
                    "evaluate_early_exit needs labels: give y, or x as a "
                    "tf.data.Dataset of (x, y) batches."
                )
            rows = None if not hasattr(x, "shape") or not len(x.shape) else int(x.shape[0])
            y = data_checks.class_ids(y, self.num_classes, rows)
            predictions, exits = self.predict_early_exit(x, threshold, batch_size)
        counts = np.bincount(exits, minlength=len(self.exit_layers))
        return {
            "accuracy": float(np.mean(predictions == y)),
            "mean_exit": float(np.mean(exits)),
            "mean_depth": float(np.mean(exits) + 1.0),
            "exit_fractions": (counts / len(exits)).tolist(),
        }

    def _dataset_early_exits(self, dataset, y, threshold):
        """`(predictions, exits, labels)` over one pass of a dataset of
        `(x, y)` batches (one pass: a reshuffling dataset keeps each label
        with its example)."""
        if y is not None:
            raise ValueError(
                "y must be None when x is a tf.data.Dataset: its (x, y) batches carry the labels."
            )
        data_checks.check_data(self, dataset, labels=True)
        if len(dataset.element_spec) == 3:
            raise ValueError(
                "evaluate_early_exit takes (x, y) batches; this dataset also "
                "yields sample weights. Drop them, e.g. "
                "dataset.map(lambda x, y, w: (x, y))."
            )
        predictions, exits, labels = [], [], []
        for batch_x, batch_y in dataset:
            batch_y = data_checks.class_ids(batch_y, self.num_classes, int(batch_x.shape[0]))
            batch_predictions, batch_exits = self._early_exits(
                self.predict_on_batch(batch_x, exit="all"), threshold
            )
            predictions.append(batch_predictions)
            exits.append(batch_exits)
            labels.append(batch_y)
        if not labels:
            raise ValueError("evaluate_early_exit received an empty tf.data.Dataset.")
        return np.concatenate(predictions), np.concatenate(exits), np.concatenate(labels)
