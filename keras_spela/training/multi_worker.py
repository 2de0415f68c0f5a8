"""SpelaModel training under `tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3's `fit` fails under this strategy for every model (keras-team/keras
issue 20585, tensorflow/tensorflow issue 72388), in two places of
`keras/src/backend/tensorflow/trainer.py`:

1. `_maybe_symbolic_build` calls `strategy.reduce("MEAN", batch, axis=None)`
   on the whole `(x, y)` batch, a nest that TensorFlow's collective
   reduction does not take ("Attempt to convert a value (PerReplica ...) to
   a Tensor"), with numpy and tf.data inputs alike, whatever the auto-shard
   policy.
2. Past it, `reduce_per_replica` reduces every metric with
   `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalar
   metric values ("Invalid reduction dimension 0 for input with 0
   dimensions").

`fit_multi_worker` is the entry point that replaces `fit` there: it runs
`SpelaModel.train_step` itself through `strategy.run` over a distributed
dataset. The step aggregates as under `MirroredStrategy`: each replica's
closed-form gradients are divided by the number of replicas and the
optimizer sums them across replicas and workers (one all-reduce), so every
worker applies the update of the global batch.
"""

import keras
import tensorflow as tf

from keras_spela.core import arguments
from keras_spela.training.fit_loop import rejections_as_value_errors

_DATA = tf.data.experimental.AutoShardPolicy.DATA
_AUTO = tf.data.experimental.AutoShardPolicy.AUTO


def fit_multi_worker(
    model, dataset, epochs=1, steps_per_epoch=None, callbacks=None, verbose="auto"
):
    """Trains a `SpelaModel` under its distribution strategy, like `fit`.

    Every worker runs the same call with the same dataset of GLOBAL batches
    (same order: shuffle with a seed). A dataset whose auto-shard policy is
    `AUTO` (the default) is sharded by `DATA`: at each step worker `i`
    trains on the `i`-th contiguous slice of the global batch, so the
    workers together take the update that one process takes on the whole
    batch. Another policy set by the user (`FILE`, `OFF`: each worker
    feeds its own shard) is kept. For exactly the single-process update
    the global batch size must be a multiple of the number of replicas:
    like Keras' losses, each replica's mean gradient is weighted
    `1 / replicas` whatever its row count.

    Each epoch reads a new iterator of the dataset (with `steps_per_epoch`:
    one iterator across epochs), as a loop over the dataset does. Keras'
    `fit` without `steps_per_epoch` makes an extra iterator between epochs,
    which advances a dataset that reshuffles each iteration: to compare
    with `fit` from the second epoch on, repeat the dataset and give both
    the same `steps_per_epoch`.

    The step is the model's own `train_step` (the batch checks, the local
    rules, one optimizer update). `compile(jit_compile=True)` does not make
    it an XLA step under a strategy: the model keeps its step off XLA there.
    Compiling this whole step with XLA fails on CPUs ("Collectives are not
    yet implemented for CPU devices when compiling with XLA") and would drop
    the batch checks. A batch rejected on one worker raises
    `BatchRejectedError` there before the all-reduce, and the other workers
    stop with `tf.errors.UnavailableError` once that worker's process has
    exited; no worker changes a weight.

    Callbacks get the logs that `fit` gives (`loss`, `accuracy`,
    `<layer>_loss`, `<layer>_accuracy`), averaged over the replicas, hence
    the same on every worker: `EarlyStopping` and `ReduceLROnPlateau` on
    these metrics stop or change every worker at the same epoch. There is
    no validation data (Keras' `evaluate` fails under this strategy as
    `fit` does); give callbacks that write files (`ModelCheckpoint`,
    `CSVLogger`) to one worker, or a path per worker.

    Args:
        model: a compiled `SpelaModel`, built (`keras.Input` or `build`),
            created and compiled inside `strategy.scope()`. Outside any
            scope the default strategy runs it in this process alone.
        dataset: a `tf.data.Dataset` of global batches `(x, y)` or
            `(x, y, sample_weight)`, or a `tf.distribute.DistributedDataset`
            made by the model's strategy (used as it is).
        epochs: number of epochs.
        steps_per_epoch: steps per epoch, taken from one iterator that runs
            on across epochs (repeat the dataset); None runs the dataset
            once per epoch.
        callbacks: a list of `keras.callbacks.Callback`.
        verbose: 0, 1 or 2 as in `fit`; `"auto"` is 1 on the chief (worker
            0, or a single process) and 0 on the other workers.

    Returns:
        A `keras.callbacks.History`.

    Example:

    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # TF_CONFIG
    with strategy.scope():
        model = SpelaModel([keras.Input((64,)), SpelaDense(32)], num_classes=10)
        model.compile(keras.optimizers.SGD(1.0))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(50)
    history = fit_multi_worker(model, dataset, epochs=3)
    ```
    """
    strategy = model.distribute_strategy
    _check_model(model, strategy)
    epochs = arguments.integer(epochs, "epochs", minimum=0)
    if steps_per_epoch is not None:
        steps_per_epoch = arguments.integer(steps_per_epoch, "steps_per_epoch")
    distributed = _distribute(dataset, strategy)
    if verbose == "auto":
        verbose = 1 if _is_chief(strategy) else 0
    callbacks = list(callbacks or [])
    for callback in callbacks:
        model._set_monitor_mode(callback)
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch or _global_batches(dataset),
    )
    train_function = _make_train_function(model, strategy)
    iterator = iter(distributed) if steps_per_epoch else None
    model.stop_training = False
    epoch_logs = None
    with rejections_as_value_errors():
        callback_list.on_train_begin()
        for epoch in range(epochs):
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            logs = {}
            batches = _epoch_batches(distributed, iterator, steps_per_epoch)
            for step, batch in enumerate(batches):
                callback_list.on_train_batch_begin(step)
                logs = _as_floats(train_function(batch))
                callback_list.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            # The trackers are running means over the epoch: the last step's
            # logs are the epoch's (read without a collective per metric).
            epoch_logs = dict(logs)
            callback_list.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break
        callback_list.on_train_end(logs=epoch_logs)
    return model.history


def _check_model(model, strategy):
    if not hasattr(model, "exit_layers") or not hasattr(model, "train_step"):
        raise ValueError(
            f"fit_multi_worker trains a keras_spela.SpelaModel, received {type(model).__name__}."
        )
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            "The model must be compiled (inside strategy.scope()) before fit_multi_worker."
        )
    if not model.built or not model.weights:
        raise ValueError(
            "The model must be built before fit_multi_worker: give it a "
            "keras.Input or call model.build(input_shape) inside "
            "strategy.scope()."
        )
    outside = [
        v.path
        for v in model.weights + model.optimizer.variables
        # `value` is the TensorFlow variable that a Keras variable wraps.
        if not strategy.extended.variable_created_in_scope(v.value)
    ]
    if outside:
        raise ValueError(
            f"{len(outside)} variables of the model or its optimizer were "
            f"not created under {type(strategy).__name__} (e.g. "
            f"{outside[0]!r}): create and compile the model inside "
            "strategy.scope()."
        )


def _distribute(dataset, strategy):
    """The distributed dataset of `dataset` (DATA sharding for AUTO)."""
    if isinstance(dataset, tf.distribute.DistributedDataset):
        return dataset
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            "fit_multi_worker takes a tf.data.Dataset of global batches "
            "(x, y) or (x, y, sample_weight), e.g. "
            "tf.data.Dataset.from_tensor_slices((x, y)).batch(64); received "
            f"{type(dataset).__name__}."
        )
    if dataset.options().experimental_distribute.auto_shard_policy == _AUTO:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = _DATA
        dataset = dataset.with_options(options)
    return strategy.experimental_distribute_dataset(dataset)


def _global_batches(dataset):
    """The number of batches of `dataset`, or None if unknown."""
    if isinstance(dataset, tf.data.Dataset):
        count = int(dataset.cardinality())
        if count >= 0:
            return count
    return None


def _epoch_batches(distributed, iterator, steps_per_epoch):
    if steps_per_epoch is None:
        return iter(distributed)
    return _take(iterator, steps_per_epoch)


def _take(iterator, steps):
    for _ in range(steps):
        try:
            yield next(iterator)
        except StopIteration:
            return


def _make_train_function(model, strategy):
    """One step: `train_step` on every replica, logs averaged over replicas.

    The replicas' logs travel in one vector, so a step has one collective
    for them besides the optimizer's.
    """
    names = []

    def replica_step(batch):
        logs = model.train_step(batch)
        names[:] = list(logs)
        return tf.stack([tf.cast(logs[name], tf.float32) for name in names])

    @tf.function(reduce_retracing=True, autograph=False)
    def train_function(batch):
        values = strategy.run(replica_step, args=(batch,))
        mean = strategy.reduce("MEAN", values, axis=None)
        return {name: mean[i] for i, name in enumerate(names)}

    return train_function


def _as_floats(logs):
    return {name: float(value) for name, value in logs.items()}


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
    )
