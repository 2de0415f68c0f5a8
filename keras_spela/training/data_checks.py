"""Checks of what `SpelaModel` is given to fit, evaluate and predict.

Each mistake ends in one error line that names the problem and the fix,
before TensorFlow meets the data: x as a dict, examples of another shape
than the model's, a `tf.data.Dataset` that is not batched, labels that are
not class ids. Integer and boolean inputs become float32, as Keras makes
them for a `keras.Input` of the default dtype. `warn_tiny_inputs` warns when
a layer's inputs are too small for its bias to let it learn.
"""

import warnings

import numpy as np
import tensorflow as tf

from keras_spela.layers import is_spela_layer

# A layer input whose norm (over what one output unit sees) is below this is
# far below the scale at which a bias moves: measured on the digits
# (64-256-34, 5 epochs), Adam(1e-2) reaches 95 % at norms of about 4e-2 and
# 30 % at 4e-3; SGD(0.1) fails at 4e-2 already.
TINY_INPUT_NORM = 1e-2


def _refuse_structure(x):
    """Raises ValueError for x given as a dict, list or tuple."""
    if isinstance(x, dict):
        keys = sorted(x)
        kind, first = f"a dict with keys {keys}", f"x[{keys[0]!r}]" if keys else "x"
    elif isinstance(x, (list, tuple)) and x and all(hasattr(v, "shape") for v in x):
        kind, first = f"a {type(x).__name__} of {len(x)} arrays", "x[0]"
    else:
        return
    raise ValueError(
        "SpelaModel takes x as one array or tensor (its layers form one "
        f"chain), received {kind}. Pass the array itself, e.g. {first}."
    )


def model_inputs(model, x):
    """`x` checked against the model and as its layers take it.

    Args:
        model: a `SpelaModel`.
        x: a batch of inputs (a tensor, or an array).

    Returns:
        `x` as a tensor; integer and boolean inputs as float32.

    Raises:
        ValueError: x is a dict or a list, has no batch axis, or its
            examples do not have the model's input shape.
    """
    _refuse_structure(x)
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None:
        check_example_shape(model, tuple(x.shape))
    if not x.dtype.is_floating:
        x = tf.cast(x, "float32")
    return x


def _expected_example_shape(model):
    """`(shape, strict)`: the model's `keras.Input` shape (every known axis
    must match), or the shape its layers were built for (rank and last axis
    must match), or `(None, False)`."""
    if model.example_input_shape is not None:
        return tuple(model.example_input_shape), True
    return getattr(model, "_first_example_shape", None), False


def check_example_shape(model, shape, what="x"):
    """Raises ValueError when a batch of shape `shape` (batch axis first)
    does not fit the model; remembers the first shape of a model without
    `keras.Input`."""
    expected, strict = _expected_example_shape(model)
    if len(shape) == 0:
        raise ValueError(f"SpelaModel needs a batch of examples, received a scalar {what}.")
    if expected is None:
        model._first_example_shape = tuple(shape[1:])
        return
    if len(shape) == len(expected):
        raise ValueError(
            f"SpelaModel takes batches of examples of shape {tuple(expected)}, "
            f"received {what} of shape {tuple(shape)}: one example without "
            "a batch axis. Add one (x[None]), or batch a tf.data.Dataset "
            "(dataset.batch(32))."
        )
    example = tuple(shape[1:])
    pairs = list(zip(expected, example)) if strict else [(expected[-1], example[-1])]
    if len(example) != len(expected) or any(
        e is not None and a is not None and e != a for e, a in pairs
    ):
        source = "its keras.Input" if strict else "the shape it was built for"
        raise ValueError(
            f"The model takes examples of shape {tuple(expected)} ({source}), "
            f"received {what} of shape {tuple(shape)} (batch first). Give "
            "examples of the model's shape, or build a model for examples of "
            f"shape {example}."
        )


def check_dataset_spec(model, dataset, labels=True):
    """Raises ValueError for a `tf.data.Dataset` that the model cannot take:
    elements that are dicts, not batched, of another shape, or (with
    `labels`) without labels."""
    spec = dataset.element_spec
    if isinstance(spec, (list, tuple)) and 1 <= len(spec) <= 3:
        x_spec, y_spec = spec[0], spec[1] if len(spec) > 1 else None
    else:
        x_spec, y_spec = spec, None
    _refuse_structure(x_spec)
    if labels and y_spec is None:
        raise ValueError(
            "SpelaModel needs labels: the tf.data.Dataset must yield (x, y) "
            "batches, its elements are x only."
        )
    unbatched = y_spec is not None and y_spec.shape.rank == 0
    expected, _ = _expected_example_shape(model)
    if expected is not None and x_spec.shape.rank == len(expected):
        unbatched = True
    if unbatched:
        shapes = f"x of shape {x_spec.shape}" + (
            "" if y_spec is None else f", y of shape {y_spec.shape}"
        )
        raise ValueError(
            f"The tf.data.Dataset yields single examples ({shapes}): batch it, "
            "e.g. dataset.batch(32)."
        )
    if x_spec.shape.rank is not None:
        check_example_shape(model, tuple(x_spec.shape), "x")


def class_ids(y, num_classes, rows=None):
    """`y` as a 1-D integer array of class ids in `[0, num_classes)`.

    Args:
        y: labels, `(examples,)` or `(examples, 1)`.
        num_classes: the model's number of classes.
        rows: the number of examples of x, or None.

    Raises:
        ValueError: one-hot or float labels, a label out of range, or a
            number of labels that differs from `rows`.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            "Labels must be integer class ids of shape (examples,), received "
            f"shape {y.shape}. For one-hot labels give y.argmax(-1)."
        )
    if y.dtype.kind not in "iu":
        raise ValueError(
            "Labels must be integer class ids in [0, num_classes), received "
            f"dtype {y.dtype.name}. Cast them, e.g. y.astype('int32')."
        )
    if rows is not None and len(y) != rows:
        raise ValueError(
            f"x and y must have the same number of rows, received {rows} and {len(y)}."
        )
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise ValueError(
            f"Labels must be class ids in [0, num_classes={num_classes}), found "
            f"{int(y[bad][0])} ({int(bad.sum())} such labels)."
        )
    return y


def first_rows(x, count=32):
    """Up to `count` rows of fit's `x` when it is an array or a tensor, else
    None (the first batch of a `tf.data.Dataset` can cost as much as filling
    its shuffle buffer)."""
    if isinstance(x, (np.ndarray, tf.Tensor)) and len(x.shape) and x.shape[0]:
        return x[:count]
    return None


def _tiny_input_hint(layer):
    """The fix for a layer whose bias outweighs its inputs, or None when the
    layer is scale-free (no bias, or inputs normalised before the bias)."""
    rule = getattr(layer, "rule", None)
    if not getattr(layer, "use_bias", False) or getattr(rule, "normalize_inputs", False):
        return None
    if getattr(rule, "normalization", None) is not None:
        return None
    if hasattr(rule, "normalize_inputs"):
        return "normalize_inputs=True or use_bias=False"
    if hasattr(rule, "normalization"):
        return "normalization='layer' or use_bias=False"
    return "use_bias=False"


def warn_tiny_inputs(model, x):
    """Warns about the first learning SPELA layer with a bias whose inputs
    on the batch `x` are far below the bias's scale: its bias
    then moves much faster than its outputs can, and it learns nothing
    (the local rule is scale-free, a bias is not).

    Args:
        model: a built `SpelaModel`.
        x: a few rows of the training inputs (`model_inputs`).
    """
    h = x
    learning = set(model.learning_layers)
    for layer in model.stack:
        hint = _tiny_input_hint(layer) if is_spela_layer(layer) else None
        if hint and layer.name in learning and getattr(layer, "kernel", None) is not None:
            fan_in = int(np.prod(layer.kernel.shape[:-1]))
            # float64: the squares of inputs of 1e-20 underflow float32.
            values = np.asarray(h, np.float64)
            norm = float(np.sqrt(np.mean(np.square(values)) * fan_in))
            if 0.0 < norm < TINY_INPUT_NORM:
                warnings.warn(
                    f"The inputs of layer {layer.name!r} are far below the scale of "
                    f"its bias (norm {norm:.1g} per output unit, below "
                    f"{TINY_INPUT_NORM:g}): the bias will outweigh them and the "
                    f"layer will not learn. Give it {hint}, or scale the inputs up.",
                    stacklevel=3,
                )
                return  # the layers after it see its outputs: one at a time
        h = layer(h, training=False)


def check_data(model, x, labels=True):
    """The checks of an `x` given to fit, evaluate or predict, in Python
    (a compiled step, retraced for a new shape, may see unknown shapes):
    `check_dataset_spec` for a `tf.data.Dataset`, the structure and the
    example shape of an array or a tensor; other inputs pass."""
    if isinstance(x, tf.data.Dataset):
        check_dataset_spec(model, x, labels)
        return
    _refuse_structure(x)
    shape = getattr(x, "shape", None)
    if shape is not None and all(d is None or isinstance(d, int) for d in tuple(shape)):
        check_example_shape(model, tuple(shape))


def check_fit_data(model, x, validation_data=None):
    """The checks of `fit`'s data before Keras sees it (`check_data`), and
    for array inputs `warn_tiny_inputs` on the first rows (building the
    model when it is not)."""
    check_data(model, x)
    if isinstance(validation_data, tf.data.Dataset):
        check_dataset_spec(model, validation_data)
    rows = first_rows(x)
    if rows is None:
        return
    rows = model_inputs(model, rows)
    if not all(layer.built for layer in model.stack):
        model.build((None,) + tuple(rows.shape[1:]))
    warn_tiny_inputs(model, rows)
