"""Building a SpelaModel from a layer list or a chain-shaped Keras model."""

import inspect

import keras


def _model_signature(
    layers, num_classes, train_layers="all", max_classes=None, name=None, **kwargs
):
    """SpelaModel's arguments (see its docstring)."""


MODEL_SIGNATURE = inspect.signature(_model_signature)


def model_arguments(args, kwargs):
    """SpelaModel's arguments by name, from its positional and keyword ones.

    Keras' functional style, `SpelaModel(inputs, outputs, num_classes=10)`
    (or `inputs=`, `outputs=`), gives `layers` as `keras.Model(inputs,
    outputs)`, which `unpack_layers` takes when it is a chain.

    Returns:
        A dict `{parameter: value}` of `MODEL_SIGNATURE`, defaults included
        (`kwargs`: the other keyword arguments).
    """
    args, kwargs = list(args), dict(kwargs)
    if "inputs" in kwargs or "outputs" in kwargs:
        inputs = kwargs.pop("inputs") if "inputs" in kwargs else args.pop(0)
        outputs = kwargs.pop("outputs") if "outputs" in kwargs else args.pop(0)
        args.insert(0, keras.Model(inputs, outputs))
    elif len(args) >= 2 and _symbolic(args[0]) and _symbolic(args[1]):
        args[:2] = [keras.Model(args[0], args[1])]
    bound = MODEL_SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def _symbolic(value):
    """Whether `value` is a KerasTensor or a non-empty structure of them."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(v, keras.KerasTensor) for v in value)
    return isinstance(value, keras.KerasTensor)


def unpack_layers(layers):
    """Splits a layer list (or chain model) into layers and an input shape.

    Raises:
        ValueError: for something that is not a layer, a functional model
            that is not a chain, or layers listed twice or sharing a name.
    """
    layers, input_shape = _layers_and_input_shape(layers)
    names = [layer.name for layer in layers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            "SpelaModel runs each layer once, in order, and reports metrics by "
            f"layer name: the layer names {repeated} appear more than once (a "
            "layer listed twice, or two layers sharing a name). Give each "
            "layer its own instance and name."
        )
    return layers, input_shape


def _layers_and_input_shape(layers):
    if isinstance(layers, keras.Model):
        model = layers
        layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
        if not isinstance(model, keras.Sequential):
            check_chain(model, layers)
        try:
            input_shape = tuple(model.inputs[0].shape[1:])
        except (AttributeError, ValueError, IndexError):
            input_shape = None
        return layers, input_shape
    layers = list(layers)
    input_shape = None
    if layers and isinstance(layers[0], keras.KerasTensor):
        input_shape = tuple(layers[0].shape[1:])
        layers = layers[1:]
    for layer in layers:
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                "SpelaModel takes a list of Keras layers (optionally starting "
                f"with keras.Input), received {layer!r}."
            )
    return layers, input_shape


def check_chain(model, layers):
    """Raises ValueError unless a functional model is a plain chain: one
    input, one output, and each layer called once on the previous one's
    output (SpelaModel runs its layers in order)."""
    problem = None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        problem = "it has several inputs or outputs"
    else:
        previous = model.inputs[0]._keras_history.operation
        # A layer may also be called in other models: count this one's calls.
        own = {n for nodes in model._nodes_by_depth.values() for n in nodes}
        for layer in layers:
            nodes = [n for n in layer._inbound_nodes if n in own]
            sources = [t._keras_history.operation for n in nodes for t in n.input_tensors]
            if len(nodes) != 1 or sources != [previous]:
                problem = (
                    f"layer {layer.name!r} does not take exactly the previous "
                    "layer's output (a branch, a merge, a skip connection or a "
                    "shared layer)"
                )
                break
            previous = layer
        else:
            if model.outputs[0]._keras_history.operation is not previous:
                problem = "its output is not its last layer's output"
    if problem:
        raise ValueError(
            f"SpelaModel can take a functional model only when it is a chain of "
            f"layers, but {problem}. Build the SpelaModel from a list of layers, "
            "and wrap a non-chain block as one frozen layer (a keras.Model used "
            "as a layer)."
        )
