"""The input of `SpelaModel.fit`: arrays as ONE repeating `tf.data` pipeline.

For arrays, Keras builds a data pipeline whose iterator it makes anew twice
per epoch, and whose batches go through a parallel, autotuned map: at small
sizes a large part of an epoch's time (`benchmarks/small_speed.py` measures
fit's own time per step). `fit_arguments` gives Keras the same batches as
one pipeline that repeats, with `steps_per_epoch`, so its iterator is made
once per `fit`:

- the same rows per epoch (a new permutation every epoch with
  `shuffle=True`, Keras' default; in order with `shuffle=False`), the same
  batch size (Keras' default 32) and the same short last batch. (Under
  `keras.utils.set_random_seed`, Keras' own pipeline restarts its seeded
  shuffle with every epoch's new iterator and so repeats one order; this
  one draws a new order each epoch);
- validation at `validation_batch_size`, or else `batch_size`, as Keras;
- float64 arrays cast to `keras.config.floatx()` once, as Keras casts them;
- `validation_split` takes the last rows, as Keras does, before any shuffle;
- `sample_weight` rides along.

Other inputs, and arrays with `class_weight`, `shuffle="batch"`, no rows,
`compile(steps_per_execution=k)` with k > 1 or under a tf.distribute
strategy, go to Keras as given; a `tf.data.Dataset` of known
length gets `steps_per_epoch` (then Keras makes one iterator per epoch, not
two).
"""

import math

import keras
import numpy as np
import tensorflow as tf

_ARRAY_TYPES = (np.ndarray, tf.Tensor)


def fit_arguments(arguments, one_step_calls=True):
    """The arguments of `keras.Model.fit` (a dict of its parameter names),
    with array inputs replaced by a repeating dataset (see the module
    docstring); unchanged where that does not apply. `one_step_calls`: the
    model's train function runs one step per call outside any tf.distribute
    strategy (`SpelaModel.runs_one_step_per_call`; a call of several steps
    would read on into the next epoch)."""
    if arguments.get("steps_per_epoch") is not None:
        return arguments
    x = arguments.get("x")
    if isinstance(x, tf.data.Dataset):
        cardinality = int(x.cardinality())
        if cardinality > 0:
            return {**arguments, "steps_per_epoch": cardinality}
        return arguments
    y, sample_weight = arguments.get("y"), arguments.get("sample_weight")
    batch_size = arguments.get("batch_size") or 32  # Keras' default
    shuffle = arguments.get("shuffle", True)
    if (
        not all(isinstance(a, _ARRAY_TYPES) for a in (x, y))
        or not (sample_weight is None or isinstance(sample_weight, _ARRAY_TYPES))
        or arguments.get("class_weight") is not None
        or shuffle not in (True, False)
        or not isinstance(batch_size, int)
        or batch_size < 1
        or not one_step_calls
    ):
        return arguments
    arrays = [a for a in (x, y, sample_weight) if a is not None]
    rows = int(x.shape[0]) if len(x.shape) else 0
    if rows == 0 or any(len(a.shape) == 0 or int(a.shape[0]) != rows for a in arrays):
        return arguments  # Keras' own error or warning
    arguments = dict(arguments)
    split = arguments.pop("validation_split", 0.0) or 0.0
    if split:
        if arguments.get("validation_data") is None:
            train_rows = int(math.floor(rows * (1.0 - split)))  # as Keras' own split
            if train_rows in (0, rows):
                return {**arguments, "validation_split": split}  # Keras' own error
            arguments["validation_data"] = tuple(a[train_rows:] for a in arrays)
            arrays = [a[:train_rows] for a in arrays]
            rows = train_rows
    steps = -(-rows // batch_size)
    # Keras validates at validation_batch_size or batch_size (the per-exit
    # losses are means of batch means): keep that batch size.
    arguments["validation_batch_size"] = arguments.get("validation_batch_size") or batch_size
    arguments.update(
        x=_repeating_batches(arrays, rows, batch_size, shuffle),
        y=None,
        sample_weight=None,
        batch_size=None,
        shuffle=False,
        steps_per_epoch=steps,
    )
    return arguments


def _repeating_batches(arrays, rows, batch_size, shuffle):
    """`(x, y[, sample_weight])` batches, epoch after epoch, without end."""
    # As Keras: float64 arrays become floatx (once, not per batch).
    tensors = tuple(
        tf.cast(a, keras.config.floatx()) if a.dtype == np.float64 else tf.convert_to_tensor(a)
        for a in arrays
    )

    def epoch_order(_):
        order = tf.range(rows, dtype=tf.int64)
        return tf.random.shuffle(order) if shuffle else order

    indices = (
        tf.data.Dataset.range(1)
        .repeat()
        .map(epoch_order)
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    )
    data = tf.data.Dataset.zip((indices, tf.data.Dataset.from_tensors(tensors).repeat()))
    batches = data.map(lambda index, parts: tuple(tf.gather(part, index, axis=0) for part in parts))
    options = tf.data.Options()
    # As Keras' own array pipeline: no graph rewrites (they cost at every
    # iterator), and the shuffle's random state is not checkpointed.
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return batches.with_options(options).prefetch(2)
