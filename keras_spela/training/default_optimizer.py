"""SpelaModel's default optimizer and its learning-rate schedule.

`SpelaModel.compile()` without an optimizer uses `Adam(1e-2)` and anneals
its learning rate over the epochs of each `fit` call: epoch `e` of `E` runs
at `lr * (1 + cos(pi * e / E)) / 2`, from `lr` down towards zero, and `lr`
is restored when `fit` ends (so a later `fit` or an export starts from it).
`benchmarks/fashion_mnist.py` measures what this adds on real images.
"""

import math

import keras

DEFAULT_LEARNING_RATE = 1e-2


def default_optimizer():
    """A new `keras.optimizers.Adam(learning_rate=DEFAULT_LEARNING_RATE)`."""
    return keras.optimizers.Adam(learning_rate=DEFAULT_LEARNING_RATE)


class CosineOverFit(keras.callbacks.Callback):
    """Anneals the optimizer's learning rate with a cosine over one `fit`.

    Args:
        epochs: the `epochs` of the `fit` call.
        initial_epoch: its `initial_epoch` (the cosine covers the epochs
            that this call runs).

    Example:

    ```python
    model.fit(x, y, epochs=30, callbacks=[CosineOverFit(30)])
    ```
    """

    def __init__(self, epochs, initial_epoch=0):
        super().__init__()
        self.epochs = int(epochs)
        self.initial_epoch = int(initial_epoch)
        self.base_learning_rate = None

    def on_train_begin(self, logs=None):
        # A plain float of the variable (a MirroredVariable under a strategy).
        rate = self.model.optimizer.learning_rate
        self.base_learning_rate = float(keras.ops.convert_to_numpy(rate))

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = self.learning_rate(epoch)

    def learning_rate(self, epoch):
        """The learning rate of `epoch` (counted as `fit` counts)."""
        span = max(self.epochs - self.initial_epoch, 1)
        progress = (epoch - self.initial_epoch) / span
        return self.base_learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def on_train_end(self, logs=None):
        self.model.optimizer.learning_rate = self.base_learning_rate


def anneals(optimizer, epochs, initial_epoch, callbacks):
    """Whether a `fit` of `epochs` (from `initial_epoch`) anneals: it runs
    more than one epoch, the optimizer's rate is a number (not a schedule)
    and no callback of `callbacks` sets the rate itself."""
    return (
        epochs - initial_epoch > 1
        and not isinstance(
            getattr(optimizer, "_learning_rate", None),
            keras.optimizers.schedules.LearningRateSchedule,
        )
        and not any(isinstance(c, LEARNING_RATE_CALLBACKS) for c in callbacks)
    )


# Callbacks that set the learning rate themselves: fit does not anneal then.
LEARNING_RATE_CALLBACKS = (
    CosineOverFit,
    keras.callbacks.LearningRateScheduler,
    keras.callbacks.ReduceLROnPlateau,
)
