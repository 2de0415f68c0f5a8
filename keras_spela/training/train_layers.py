"""`train_layers`: which SPELA layers learn, with one meaning everywhere.

`SpelaModel(train_layers=...)`, `export_tflite`, `export_tflite_micro` and the
export CLI all resolve the argument here.
"""

from keras_spela.core import arguments


def resolve_train_layers(names, train_layers):
    """The names of the SPELA layers that learn.

    Args:
        names: the model's SPELA layer names, in order.
        train_layers: `"all"`, an integer `k` in `[1, len(names)]` (the last
            k SPELA layers), one layer name, or a list of layer names.

    Returns:
        A list of layer names, in the order given.

    Raises:
        ValueError: for any other value, an empty list or an unknown name.
    """
    names, received = list(names), train_layers
    if isinstance(train_layers, str):
        train_layers = list(names) if train_layers == "all" else [train_layers]
    elif arguments.is_integer(train_layers):
        if 1 <= train_layers <= len(names):
            train_layers = names[len(names) - int(train_layers) :]
        else:
            train_layers = None
    elif isinstance(train_layers, (list, tuple)) and all(
        isinstance(name, str) for name in train_layers
    ):
        train_layers = list(train_layers)
    else:
        train_layers = None
    if (
        not train_layers
        or any(name not in names for name in train_layers)
        or len(set(train_layers)) != len(train_layers)
    ):
        raise ValueError(
            "train_layers must be 'all', an integer k in [1, "
            f"{len(names)}] (the last k SPELA layers), a SPELA layer name or a "
            f"list of distinct names from {names}; received {received!r}."
        )
    return train_layers
