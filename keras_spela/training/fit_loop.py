"""How SpelaModel runs Keras' loops: fit, evaluate and the batch-level calls
with the model's own data checks, one tf.function per step, the default
optimizer's annealing and batch rejections as one-line errors."""

import contextlib
import inspect
import re

import keras
import tensorflow as tf

from keras_spela.core import acceptance
from keras_spela.training import data_checks
from keras_spela.training import default_optimizer
from keras_spela.training import fit_data
from keras_spela.training.default_optimizer import CosineOverFit


class FitLoopMixin:
    """Keras' `fit`, `evaluate`, `train_on_batch` and `test_on_batch` for
    `SpelaModel`, and its leaner train and test functions."""

    def fit(self, *args, **kwargs):
        arguments_ = _FIT_SIGNATURE.bind(self, *args, **kwargs).arguments
        arguments_.pop("self")
        for callback in arguments_.get("callbacks") or []:
            self._set_monitor_mode(callback)
        data_checks.check_fit_data(self, arguments_.get("x"), arguments_.get("validation_data"))
        callbacks = list(arguments_.get("callbacks") or [])
        epochs = arguments_.get("epochs", 1)
        initial_epoch = arguments_.get("initial_epoch", 0)
        if getattr(self, "anneal", False) and default_optimizer.anneals(
            self.optimizer, epochs, initial_epoch, callbacks
        ):
            # First: the user's callbacks see (and may change) each epoch's rate.
            arguments_["callbacks"] = [CosineOverFit(epochs, initial_epoch)] + callbacks
        with rejections_as_value_errors():
            return super().fit(**fit_data.fit_arguments(arguments_, self.runs_one_step_per_call()))

    def evaluate(self, *args, **kwargs):
        data_checks.check_data(self, args[0] if args else kwargs.get("x"))
        with rejections_as_value_errors():
            return super().evaluate(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        data_checks.check_data(self, args[0] if args else kwargs.get("x"))
        with rejections_as_value_errors():
            return super().train_on_batch(*args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        data_checks.check_data(self, args[0] if args else kwargs.get("x"))
        with rejections_as_value_errors():
            return super().test_on_batch(*args, **kwargs)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        self.train_function = self._one_step_function(self.train_step, self.train_function)
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        super().make_test_function(force=True)
        self.test_function = self._one_step_function(self.test_step, self.test_function)
        return self.test_function

    def runs_one_step_per_call(self):
        """Whether the train and test functions are SpelaModel's own (one
        step per call, graph mode, no tf.distribute strategy), whose fit
        takes arrays as one repeating pipeline (`keras_spela.training.fit_data`)."""
        return not (
            self.steps_per_execution != 1
            or self.run_eagerly
            or self._distribute_strategy is not None
            or tf.distribute.has_strategy()
        )

    def _one_step_function(self, step_function, keras_function):
        """`keras_function`, or for one step per call outside a tf.distribute
        strategy a leaner equivalent: ONE tf.function that reads the batch
        from the iterator and runs `step_function` (Keras nests a second
        tf.function and returns a `tf.experimental.Optional`, whose checks
        are eager ops: at small sizes much of a step, which
        `benchmarks/small_speed.py` times as fit's own share). An exhausted
        iterator raises OutOfRangeError, which Keras' epoch loop ends the
        epoch on."""
        if not self.runs_one_step_per_call():
            return keras_function

        def one_step_on_iterator(iterator):
            data = iterator.get_next()
            # As Keras: an Optional in the data (an absent element) is None.
            data = tf.nest.map_structure(
                lambda item: None if isinstance(item, tf.experimental.Optional) else item,
                data,
            )
            return step_function(data)

        # As Keras: no autograph (the steps are plain graph code).
        one_step = tf.function(one_step_on_iterator, reduce_retracing=True, autograph=False)

        def function(iterator):
            if isinstance(iterator, tf.data.Iterator):
                return one_step(iterator)
            return keras_function(iterator)

        return function

    def _set_monitor_mode(self, callback):
        """Gives a monitoring callback in mode "auto" (EarlyStopping,
        ReduceLROnPlateau, ModelCheckpoint) the direction of a SpelaModel
        metric, which Keras cannot infer: accuracies up, losses down."""
        if getattr(callback, "mode", None) != "auto" or not hasattr(callback, "monitor"):
            return
        name = str(callback.monitor).removeprefix("val_")
        if name in self._exit_metrics:
            callback.mode = "max" if name.endswith("accuracy") else "min"


@contextlib.contextmanager
def rejections_as_value_errors():
    """Turns a batch rejection raised inside a compiled step (a graph
    assertion, with a long graph traceback) into one `ValueError` line."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        match = re.search(r"(Rejected batch: .*?no weight was changed)", error.message)
        if match is None:
            raise
        # The assertion prints its message as a string literal: \' for '.
        message = match.group(1).replace("\\'", "'")
        raise acceptance.BatchRejectedError(message + ".") from None


_FIT_SIGNATURE = inspect.signature(keras.Model.fit)
