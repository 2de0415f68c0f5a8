"""What an on-device export of a SpelaModel holds, computed once and handed
to both exporters (`export_tflite`, `export_tflite_micro`)."""

import collections
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_spela.core import arguments
from keras_spela.layers import weight_name
from keras_spela.lite.optimizers import DeviceOptimizer
from keras_spela.training import default_optimizer
from keras_spela.training.train_layers import resolve_train_layers
from keras_spela_device import contract

LearnedVariable = collections.namedtuple("LearnedVariable", ["name", "layer", "weight", "variable"])
LearnedVariable.__doc__ = """A weight that learns on the device: its device name
`<layer>_<weight>`, its SPELA layer, its short name and its variable."""


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """An export's model, optimizer, learning layers and static shapes.

    Attributes:
        model: a built `SpelaModel`.
        optimizer: the `DeviceOptimizer` of the train step.
        train_layers: names of the SPELA layers that learn on the device
            (every other weight becomes a constant).
        batch_size: the train step's static batch size.
        input_shape: the per-example input shape.
        exit_offset: exits before the model's first (see `behind_front`).
    """

    model: object
    optimizer: DeviceOptimizer
    train_layers: tuple
    batch_size: int
    input_shape: tuple
    # Exits of the layers before `model`'s first (a step that starts at a
    # frozen front's output keeps the full model's exit numbers).
    exit_offset: int = 0

    @property
    def learning_layers(self):
        return [layer for layer in self.model.exit_layers if layer.name in self.train_layers]

    def learned_variables(self):
        """A `LearnedVariable` for every learned weight, in layer order."""
        return [
            LearnedVariable(
                f"{layer.name}_{weight_name(variable)}", layer, weight_name(variable), variable
            )
            for layer in self.learning_layers
            for variable in layer.trainable_variables
        ]

    def frozen_constants(self, learned_variables=()):
        """`(variable, constant)` pairs for every variable of the model that
        does not learn on the device (a `keras.StatelessScope` state
        mapping)."""
        learned_ids = {id(variable) for variable in learned_variables}
        return [
            (variable, tf.constant(np.asarray(variable.numpy())))
            for variable in self.model.variables
            if id(variable) not in learned_ids
        ]

    def exit_key(self, layer_name):
        """The output key prefix of a SPELA layer: `exit_<k>`."""
        names = [layer.name for layer in self.model.exit_layers]
        return contract.exit_name(self.exit_offset + names.index(layer_name))

    def inference_outputs(self, x):
        """`scores` (the last exit) and `exit_<k>_scores` for every exit k."""
        model = self.model
        scores = model.exit_scores(x, training=False)
        outputs = {contract.SCORES_OUTPUT: scores[model.exit_layers[-1].name]}
        outputs.update({contract.exit_scores_name(self.exit_key(n)): v for n, v in scores.items()})
        return outputs

    def train_specs(self):
        """The `x` and `y` specs of a train step."""
        x_name, y_name = contract.TRAIN_INPUTS
        return (
            tf.TensorSpec((self.batch_size,) + self.input_shape, tf.float32, name=x_name),
            tf.TensorSpec((self.batch_size,), tf.int32, name=y_name),
        )


def plan_export(model, batch_size, optimizer=None, learning_rate=None, train_layers="all"):
    """Checks what both exporters take and plans the export.

    Args:
        model, batch_size, optimizer, learning_rate, train_layers: as for
            `keras_spela.export_tflite`.

    Returns:
        An `ExportPlan`.

    Raises:
        ValueError: for a model that is not a built SpelaModel, a bad batch
            size, an unsupported optimizer or bad `train_layers`.
    """
    # The model's interface, not its class: the model module imports the
    # exporter (SpelaModel.export).
    if not hasattr(model, "compute_local_errors"):
        raise ValueError(
            f"Only a keras_spela.SpelaModel can be exported for on-device "
            f"training, received {type(model).__name__}."
        )
    if not model.built:
        raise ValueError("Build the model first: start its layers with keras.Input.")
    if model.example_input_shape is None:
        raise ValueError(
            "The model's input shape is unknown: start its layer list with "
            "keras.Input(shape) to export it."
        )
    half = [
        layer.name
        for layer in model.stack
        if getattr(layer, "compute_dtype", "float32") not in ("float32", None)
    ]
    if half:
        raise ValueError(
            f"The layers {half} compute in {model.get_layer(half[0]).compute_dtype} "
            "(a mixed precision policy), which TFLite builtin kernels do not "
            "run. Rebuild the model under keras.mixed_precision."
            "set_global_policy('float32'), copy the weights with "
            "set_weights(model.get_weights()), and export that model."
        )
    arguments.integer(batch_size, "batch_size")
    return ExportPlan(
        model=model,
        optimizer=_device_optimizer(model, optimizer, learning_rate),
        train_layers=tuple(_learning_layers(model, train_layers)),
        batch_size=int(batch_size),
        input_shape=tuple(model.example_input_shape),
    )


def _device_optimizer(model, optimizer, learning_rate):
    if optimizer is None:
        optimizer = getattr(model, "optimizer", None) or "adam"
        if optimizer == "adam" and learning_rate is None:
            learning_rate = default_optimizer.DEFAULT_LEARNING_RATE
    if not isinstance(optimizer, DeviceOptimizer):
        return DeviceOptimizer.from_keras(optimizer, learning_rate)
    if learning_rate is not None:
        return DeviceOptimizer(**{**optimizer.get_config(), "learning_rate": learning_rate})
    return optimizer


def _learning_layers(model, train_layers):
    names = [layer.name for layer in model.exit_layers]
    learning = resolve_train_layers(names, train_layers)
    frozen = [layer.name for layer in model.exit_layers if not layer.trainable]
    named = isinstance(train_layers, (str, list, tuple)) and train_layers != "all"
    if named and set(learning) & set(frozen):
        raise ValueError(
            f"train_layers names frozen SPELA layers {sorted(set(learning) & set(frozen))} "
            "(trainable=False); unfreeze them or leave them out."
        )
    learning = [name for name in learning if name not in frozen]
    if not learning:
        raise ValueError(
            "No SPELA layer would learn on the device: every layer of train_layers "
            f"is frozen (trainable=False): {frozen}."
        )
    return learning


def behind_front(plan, front):
    """The plan of the layers after a frozen front: a model of the rest of
    `plan.model`'s layers (shared, with their weights) whose input is the
    front's output, the same learning layers and exit numbers.

    Args:
        plan: an `ExportPlan`.
        front: the first layers of `plan.model.stack`, none of them learning.
    """
    model = plan.model
    shape = (None,) + plan.input_shape
    for layer in front:
        shape = tuple(layer.compute_output_shape(shape))
    rest = model.stack[len(front) :]
    behind = type(model)(
        [keras.Input(shape[1:])] + rest,
        num_classes=model._initial_classes,
        max_classes=model.max_classes,
        name=f"{model.name}_behind_front",
    )
    if model.class_mask is not None:
        behind.class_mask.assign(model.class_mask.numpy())
    offset = sum(1 for layer in front if layer in model.exit_layers)
    return dataclasses.replace(plan, model=behind, input_shape=tuple(shape[1:]), exit_offset=offset)
