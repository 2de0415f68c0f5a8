"""SpelaModel: a Keras model trained by its layers' local rules."""

import keras
import numpy as np

from keras_spela.core import arguments
from keras_spela.core import primitives
from keras_spela.layers import is_spela_layer
from keras_spela.training import chain
from keras_spela.training import default_optimizer
from keras_spela.training.class_slots import ClassSlotsMixin
from keras_spela.training.class_slots import class_capacity
from keras_spela.training.early_exit import EarlyExitMixin
from keras_spela.training.exit_metrics import ExitMetrics
from keras_spela.training.fit_loop import FitLoopMixin
from keras_spela.training.layerwise import LayerwiseMixin
from keras_spela.training.litert_export import LiteRTExportMixin
from keras_spela.training.steps import LocalStepsMixin
from keras_spela.training.train_layers import resolve_train_layers


@keras.saving.register_keras_serializable(package="keras_spela")
class SpelaModel(
    FitLoopMixin,
    LocalStepsMixin,
    LiteRTExportMixin,
    ClassSlotsMixin,
    EarlyExitMixin,
    LayerwiseMixin,
    keras.Model,
):
    """A stack of layers in which every SPELA layer learns from a local loss.

    `train_step` runs the layers in order, once. Each SPELA layer computes its
    local loss and closed-form update from its own input (held constant),
    and passes its pre-update output on; other Keras layers (Rescaling,
    Flatten, Dropout, a frozen pretrained block) run forward only and are
    never updated. All updates of a batch are applied by ONE call of the
    compiled optimizer, which keeps per-variable (so per-layer) state.

    A bad batch stops `fit` with an error before any weight changes: labels
    out of range or not integers, NaN or infinite inputs (checked before the
    forward pass), and a non-finite local loss or gradients that could
    exceed `rules.MAX_GRADIENT` (checked after it). The moving statistics of
    a `BatchNormalization` layer in the stack are updated by the forward
    pass, so a batch stopped by the later checks has already moved them.

    `fit` takes what `keras.Model.fit` takes. Arrays are given to Keras as one
    repeating `tf.data` pipeline with the same batches (`keras_spela.training.fit_data`:
    Keras would make a new input pipeline twice per epoch), and each step is
    one `tf.function` call: at small sizes these and the model's two metric
    variables (`keras_spela.training.exit_metrics`) shorten an epoch
    (`benchmarks/small_speed.py` times it against Keras' backprop fit of the
    same widths).

    Every SPELA layer is an exit: `evaluate` reports the accuracy at every
    exit, `predict(x, exit=k)` gives the class scores at exit k (the last by
    default), `truncated(k)` makes a cheaper model ending at exit k, and
    `evaluate_early_exit` stops each example at the first confident exit.

    Args:
        layers: a list of layers, optionally starting with `keras.Input(...)`;
            or a Sequential/functional Keras model whose layers form a chain.
            Keras' functional style works too for a chain:
            `SpelaModel(inputs, outputs, num_classes=10)` (its SPELA layers
            need `num_classes=` when they are called on `inputs`).
        num_classes: number of classes (integer labels in
            `[0, num_classes)`). Given to every SPELA layer that lacks it.
        max_classes: None, or room for this many classes (>= num_classes):
            class vectors for `max_classes` classes, of which the first
            `num_classes` are active; `activate_class(k)` starts another one,
            here or on a device (`keras_spela.training.class_slots`). Then
            `model.num_classes` is `max_classes`.
        train_layers: `"all"` (SPELA(O): every SPELA layer learns in the same
            sweep, the default) or a list of SPELA layer names that learn;
            the others run forward only.
        name: name of the model.

    Example:

    ```python
    model = keras_spela.SpelaModel(
        [keras.Input((64,)), SpelaDense(256), SpelaDense(34)], num_classes=10
    )
    model.compile()          # Adam(1e-2); no loss: each layer has its own
    model.fit(x, y, epochs=5, batch_size=50)
    model.evaluate(x_test, y_test)  # accuracy at every exit
    ```
    """

    def __init__(self, *args, **kwargs):
        # (layers, num_classes, train_layers, max_classes, name, **kwargs), or
        # Keras' functional style: SpelaModel(inputs, outputs, num_classes=10).
        arguments_ = chain.model_arguments(args, kwargs)
        layers, num_classes, train_layers, max_classes, name = (
            arguments_[key]
            for key in ("layers", "num_classes", "train_layers", "max_classes", "name")
        )
        kwargs = arguments_["kwargs"]
        # The model's own computations (scores, the local rules) run in
        # float32; plain Keras layers in the stack follow their own policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(name=name, **kwargs)
        layers, input_shape = chain.unpack_layers(layers)
        initial_classes = arguments.integer(num_classes, "num_classes", minimum=2)
        self.max_classes = (
            None if max_classes is None else class_capacity(initial_classes, max_classes)
        )
        # The class slots: every class vector, label range and score width.
        self.num_classes = self.max_classes or initial_classes
        self._initial_classes = initial_classes
        self._add_class_mask(initial_classes)
        self.stack = layers
        self.exit_layers = [layer for layer in layers if is_spela_layer(layer)]
        if not self.exit_layers:
            raise ValueError(
                "SpelaModel needs at least one SPELA layer (e.g. SpelaDense), "
                f"received layers {[layer.name for layer in layers]}."
            )
        for layer in self.exit_layers:
            if layer.num_classes is None:
                layer.num_classes = self.num_classes
            elif layer.num_classes != self.num_classes:
                raise ValueError(
                    f"Layer {layer.name!r} has num_classes={layer.num_classes} "
                    f"but the model has num_classes={self.num_classes}"
                    + (" (its max_classes)." if self.max_classes else ".")
                )
        self.xla_local_steps = False
        self.ordered_steps = False
        self.lowering = primitives.DEFAULT_LOWERING
        self.anneal = False
        self._xla_functions = {}
        self.train_layers = train_layers
        # The per-example input shape (from keras.Input), or None.
        self.example_input_shape = None if input_shape is None else tuple(input_shape)
        self._exit_metrics = ExitMetrics([layer.name for layer in self.exit_layers])
        if input_shape is not None:
            self.build((None,) + tuple(input_shape))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.stack:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        self.built = True
        # A symbolic call (no computation): Keras' SavedModel export needs a
        # model that has been called.
        self(keras.KerasTensor(tuple(input_shape)))

    def compute_output_spec(self, inputs, training=False):
        return keras.KerasTensor((inputs.shape[0], self.num_classes))

    @property
    def learning_layers(self):
        """Names of the SPELA layers that `fit` updates: those of
        `train_layers` whose `trainable` is True (Keras' freezing)."""
        return [
            layer.name
            for layer in self.exit_layers
            if layer.name in self.train_layers and layer.trainable
        ]

    @property
    def metrics(self):
        return self._exit_metrics.slots

    def reset_metrics(self):
        # What Keras does metric by metric, in two ops (before every epoch).
        self._exit_metrics.reset()

    def get_metrics_result(self):
        return self._exit_metrics.results()

    @property
    def train_layers(self):
        """Names of the SPELA layers that `fit` trains (the others run
        forward only). Setting it takes what `resolve_train_layers` takes:
        `"all"`, an integer k (the last k), a name or a list of names."""
        return self._train_layers

    @train_layers.setter
    def train_layers(self, train_layers):
        names = [layer.name for layer in self.exit_layers]
        self._train_layers = resolve_train_layers(names, train_layers)
        # The compiled steps read it when they are traced: trace them again
        # (at once if a train function exists: a callback may set it in fit).
        self._xla_functions = {}
        if getattr(self, "train_function", None) is not None:
            self.make_train_function(force=True)

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """Configures the model for training; no loss is needed.

        Args:
            optimizer: a Keras optimizer or its name. None gives the library's
                default, `keras.optimizers.Adam(learning_rate=1e-2)`, whose
                learning rate is annealed over each `fit` (see `anneal`).
                The paper's exact recipe is `keras.optimizers.SGD(2.5)` with
                `local_loss="log_cosine"` layers.
            loss: must be None: every SPELA layer has its own local loss.
            metrics: None or `["accuracy"]`; per-exit accuracy and per-layer
                loss are always reported.
            **kwargs: passed to `keras.Model.compile` (e.g.
                `steps_per_execution`), except `ordered_steps` (False by
                default): True takes each layer's gradients before the next
                layer runs (`keras_spela.training.sweep.sweep`), so the step's
                activation memory stays one layer's whatever the depth
                (`benchmarks/memory_depth.py`), at a cost in time
                (`benchmarks/train_speed.py`); and `jit_compile`: True compiles
                each step's local rules and its optimizer update with XLA
                (the batch checks stay outside XLA, which would drop them;
                not under a tf.distribute strategy, whose cross-replica
                merge XLA cannot compile);
                False and "auto" (the default) do not; and `lowering`: which
                lowering of the rule's primitives the host steps run
                (`keras_spela.core.primitives`): `"fused"` (the default,
                TensorFlow's fused gradient kernels) or `"builtins"` (the
                TFLite builtins that every export runs, to debug parity on
                the host). Exports, and the XLA step of `jit_compile=True`,
                always trace `"builtins"`; and `anneal`:
                whether each `fit` anneals the learning rate with a cosine
                over its epochs and restores it at the end
                (`keras_spela.training.default_optimizer.CosineOverFit`; not when fit is given
                a LearningRateScheduler or ReduceLROnPlateau); None (the
                default) anneals exactly when `optimizer` is None.
        """
        if loss is not None:
            raise ValueError(
                "SpelaModel trains each SPELA layer with its own local loss "
                "(set local_loss= on the layer); compile() takes no loss, "
                f"received loss={loss!r}."
            )
        if metrics not in (None, [], ["accuracy"], ("accuracy",)):
            raise ValueError(
                "SpelaModel always reports loss and accuracy per exit; "
                f"compile() takes no other metrics, received metrics={metrics!r}."
            )
        jit_compile = kwargs.pop("jit_compile", "auto")
        if jit_compile not in (True, False, "auto"):
            raise ValueError(
                f"jit_compile must be True, False or 'auto', received jit_compile={jit_compile!r}."
            )
        # XLA drops the assertions that reject a bad batch, so Keras never
        # compiles the whole step: with jit_compile=True the local rules and
        # the optimizer update run as one XLA function between the checks.
        # "auto" keeps them uncompiled (Keras' "auto" also stays off XLA on
        # CPU-only machines).
        self.xla_local_steps = jit_compile is True
        ordered_steps = kwargs.pop("ordered_steps", False)
        if not isinstance(ordered_steps, bool):
            raise ValueError(
                f"ordered_steps must be True or False, received ordered_steps={ordered_steps!r}."
            )
        self.ordered_steps = ordered_steps
        self.lowering = primitives.check_lowering(
            kwargs.pop("lowering", primitives.DEFAULT_LOWERING)
        )
        self._xla_functions = {}
        kwargs["jit_compile"] = False
        anneal = kwargs.pop("anneal", None)
        if anneal not in (None, True, False):
            raise ValueError(f"anneal must be True, False or None, received anneal={anneal!r}.")
        self.anneal = optimizer is None if anneal is None else anneal
        if optimizer is None:
            optimizer = default_optimizer.default_optimizer()
        super().compile(optimizer=optimizer, **kwargs)
        # Under a mixed_float16 policy Keras wraps the optimizer to unscale
        # gradients of a scaled loss; SPELA's closed-form gradients are never
        # scaled (and its layers keep their rule in float32).
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            self.optimizer = self.optimizer.inner_optimizer
        if self.built:
            self._build_optimizer()

    def compile_from_config(self, config):
        """Re-compiles a loaded model with its saved optimizer."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(
            optimizer=config.get("optimizer"),
            steps_per_execution=config.get("steps_per_execution", 1),
            jit_compile=config.get("jit_compile", "auto"),
            ordered_steps=config.get("ordered_steps", False),
            lowering=config.get("lowering", primitives.DEFAULT_LOWERING),
            anneal=config.get("anneal", False),
        )

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config["jit_compile"] = self.xla_local_steps
            config["ordered_steps"] = self.ordered_steps
            config["lowering"] = self.lowering
            config["anneal"] = self.anneal
        return config

    def _build_optimizer(self):
        """Builds the optimizer for EVERY SPELA layer's variables, so that a
        schedule training a subset first (fit_layerwise, train_layers, frozen
        layers) can later train the others with the same optimizer."""
        if not self.optimizer.built:
            self.optimizer.build(
                [v for layer in self.exit_layers for v in layer.weights if v.trainable]
            )

    # --------------------------------------------------------- serialization
    def set_weights(self, weights):
        """As `keras.Model.set_weights`; NaN or infinite values are refused
        (ValueError) and then no weight is changed."""
        for variable, value in zip(self.weights, weights):
            value = np.asarray(value)
            if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
                raise ValueError(
                    f"set_weights received NaN or infinite values for {variable.path!r}; "
                    "no weight was changed. Give finite weights."
                )
        super().set_weights(weights)

    def save(self, filepath, *args, **kwargs):
        """As `keras.Model.save`, in the `.keras` format (HDF5, `.h5`, is
        refused: its legacy loader cannot rebuild a SpelaModel)."""
        if str(filepath).endswith((".h5", ".hdf5")):
            raise ValueError(
                f"SpelaModel saves to the .keras format, received {str(filepath)!r}: "
                "a legacy HDF5 file could not be loaded back. Use a path ending "
                "in .keras (or save_weights('....weights.h5') for the weights)."
            )
        return super().save(filepath, *args, **kwargs)

    def get_config(self):
        config = {
            "name": self.name,
            "layers": [keras.saving.serialize_keras_object(l) for l in self.stack],
            "num_classes": self._initial_classes,
            "max_classes": self.max_classes,
            "train_layers": self.train_layers,
            "input_shape": (
                None if self.example_input_shape is None else list(self.example_input_shape)
            ),
        }
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layers = [
            keras.saving.deserialize_keras_object(l, custom_objects=custom_objects)
            for l in config.pop("layers")
        ]
        input_shape = config.pop("input_shape")
        if input_shape is not None:
            layers = [keras.Input(tuple(input_shape))] + layers
        return cls(layers, **config)
