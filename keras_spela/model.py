"""SpelaModel: a Keras model trained by its layers' local rules."""

import contextlib
import inspect
import re

import keras
import numpy as np
import tensorflow as tf

from keras_spela import acceptance
from keras_spela import arguments
from keras_spela import chain
from keras_spela import data_checks
from keras_spela import fit_data
from keras_spela import primitives
from keras_spela import rules
from keras_spela import default_optimizer
from keras_spela.default_optimizer import CosineOverFit
from keras_spela.class_slots import ClassSlotsMixin
from keras_spela.class_slots import class_capacity
from keras_spela.early_exit import EarlyExitMixin
from keras_spela.exit_metrics import ExitMetrics
from keras_spela.layers import is_spela_layer
from keras_spela.layerwise import LayerwiseMixin
from keras_spela.sweep import sweep
from keras_spela.train_layers import resolve_train_layers



@keras.saving.register_keras_serializable(package="keras_spela")
class SpelaModel(ClassSlotsMixin, EarlyExitMixin, LayerwiseMixin, keras.Model):
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
    repeating `tf.data` pipeline with the same batches (`keras_spela.fit_data`:
    Keras would make a new input pipeline twice per epoch), and each step is
    one `tf.function` call: at small sizes these and the model's two metric
    variables (`keras_spela.exit_metrics`) make an epoch about half as long
    as Keras' backprop fit of the same widths (`benchmarks/small_speed.py`).

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
            here or on a device (`keras_spela.class_slots`). Then
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
        self.max_classes = None if max_classes is None else class_capacity(
            initial_classes, max_classes
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
                layer runs (`keras_spela.sweep.sweep`), so the step's
                activation memory stays one layer's whatever the depth
                (`benchmarks/memory_depth.py`), at a cost in time
                (`benchmarks/train_speed.py`); and `jit_compile`: True compiles
                each step's local rules and its optimizer update with XLA
                (the batch checks stay outside XLA, which would drop them;
                not under a tf.distribute strategy, whose cross-replica
                merge XLA cannot compile);
                False and "auto" (the default) do not; and `lowering`: which
                lowering of the rule's primitives the host steps run
                (`keras_spela.primitives`): `"fused"` (the default,
                TensorFlow's fused gradient kernels) or `"builtins"` (the
                TFLite builtins that every export runs, to debug parity on
                the host). Exports, and the XLA step of `jit_compile=True`,
                always trace `"builtins"`; and `anneal`:
                whether each `fit` anneals the learning rate with a cosine
                over its epochs and restores it at the end
                (`keras_spela.default_optimizer.CosineOverFit`; not when fit is given
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
                "jit_compile must be True, False or 'auto', received "
                f"jit_compile={jit_compile!r}."
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

    # ------------------------------------------------------- Keras entry points
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
        with _rejections_as_value_errors():
            return super().fit(
                **fit_data.fit_arguments(arguments_, self.runs_one_step_per_call())
            )

    def evaluate(self, *args, **kwargs):
        data_checks.check_data(self, args[0] if args else kwargs.get("x"))
        with _rejections_as_value_errors():
            return super().evaluate(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        data_checks.check_data(self, args[0] if args else kwargs.get("x"))
        with _rejections_as_value_errors():
            return super().train_on_batch(*args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        data_checks.check_data(self, args[0] if args else kwargs.get("x"))
        with _rejections_as_value_errors():
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
        takes arrays as one repeating pipeline (`keras_spela.fit_data`)."""
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
        are eager ops: together about 0.6 ms a step, most of a small
        network's step). An exhausted iterator raises OutOfRangeError, which
        Keras' epoch loop ends the epoch on."""
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

    # ------------------------------------------------------------- local rule
    def compute_local_errors(
        self, x, y, sample_weight=None, training=True, train_layers=None, weights=None,
        ordered=False,
    ):
        """Runs one forward sweep and every learning layer's local loss.

        Changes no variable (see `keras_spela.sweep.sweep`).

        Args:
            x: a batch of inputs.
            y: integer labels `(batch,)`.
            sample_weight: optional `(batch,)` example weights.
            training: passed to the non-SPELA layers (Dropout, BatchNorm).
            train_layers: names of the SPELA layers that learn; None uses
                the model's `learning_layers`.
            weights: optional `{layer name: {weight name: value}}` used
                instead of those layers' own weights (device programs).
            ordered: take each layer's gradients before the next layer runs
                (`keras_spela.sweep.sweep`; `train_step` does).

        Returns:
            `(errors, scores)`: `{layer name: rules.LocalError}` for the
            learning layers and `{layer name: (batch, num_classes) class
            scores}` for every exit.
        """
        if train_layers is None:
            train_layers = self.learning_layers
        targets = rules.one_hot(y, self.num_classes)
        errors, scores = sweep(
            self.stack, x, targets, sample_weight, train_layers, training, weights, ordered
        )
        return errors, self.masked_scores(scores)

    def compute_local_gradients(self, errors):
        """The closed-form parameter gradients of `compute_local_errors`'
        errors.

        Returns:
            `(gradients, variables, losses)`: lists of gradients and the
            variables they belong to (learning layers only, in layer order),
            and `{layer name: batch-mean local loss}`.
        """
        gradients, variables, losses = [], [], {}
        for layer in self.exit_layers:
            if layer.name in errors:
                error = errors[layer.name]
                gradients.extend(
                    error.gradients
                    if error.gradients is not None
                    else layer.parameter_gradients(error)
                )
                variables.extend(layer.trainable_variables)
                losses[layer.name] = error.loss
        return gradients, variables, losses

    def exit_scores(self, x, training=False):
        """Class scores at every exit: `{layer name: (batch, num_classes)}`
        (an inactive class of a `max_classes` model scores below -3)."""
        x = data_checks.model_inputs(self, x)
        return self.masked_scores(sweep(self.stack, x, training=training)[1])

    def call(self, inputs, training=False):
        return self.exit_scores(inputs, training=training)[self.exit_layers[-1].name]

    # ------------------------------------------------------------ keras steps
    def train_step(self, data):
        with primitives.lowering(self.lowering):
            return self._train_step(data)

    def _train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, y = self._checked_batch(x, y)
        if not all(layer.built for layer in self.stack):
            self.build(x.shape)  # a model without keras.Input, at its first batch
        self._build_optimizer()
        # Under tf.distribute (even one replica) the optimizer merges across
        # replicas, which XLA cannot compile.
        if (
            self.xla_local_steps
            and self.learning_layers
            and not tf.distribute.has_strategy()
        ):
            if "step" not in self._xla_functions:
                self._xla_functions["step"] = tf.function(
                    self._gated_local_update, jit_compile=True
                )
            # The XLA function skips the update of a rejected batch; the
            # assertions (which XLA would drop) then raise. XLA compiles the
            # builtins lowering: it fuses those ops itself, while TensorFlow's
            # fused filter gradient compiles to far slower XLA code
            # (benchmarks/conv_speed.py times both).
            with primitives.lowering("builtins"):
                losses, counts, scores = self._xla_functions["step"](x, y, sample_weight)
            tf.group(
                acceptance.assert_accepted(counts, self.num_classes, list(losses))
            )
        else:
            errors, scores = self.compute_local_errors(
                x, y, sample_weight, ordered=self.ordered_steps
            )
            gradients, variables, losses = self.compute_local_gradients(errors)
            # Under tf.distribute the optimizer sums the replicas' gradients
            # (as for Keras' own losses, divided by the replica count).
            replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            if replicas > 1:
                gradients = [g / replicas for g in gradients]
            checks = acceptance.assert_accepted(
                acceptance.layer_rejections(self.exit_layers, errors),
                self.num_classes,
                list(errors),
            )
            # Every op of the update (iterations included) waits for them.
            with tf.control_dependencies(checks):
                if variables:
                    self.optimizer.apply_gradients(zip(gradients, variables))
        return self._exit_metrics.update(y, sample_weight, scores, losses)

    def _gated_local_update(self, x, y, sample_weight):
        """The local rules and the update, which runs only for an accepted
        batch (the step of `compile(jit_compile=True)`)."""
        errors, scores = self.compute_local_errors(
            x, y, sample_weight, ordered=self.ordered_steps
        )
        gradients, variables, losses = self.compute_local_gradients(errors)
        counts = acceptance.layer_rejections(self.exit_layers, errors)

        def update():
            self.optimizer.apply_gradients(zip(gradients, variables))
            return tf.constant(True)

        tf.cond(acceptance.accepted(counts), update, lambda: tf.constant(False))
        return losses, counts, scores

    def test_step(self, data):
        with primitives.lowering(self.lowering):
            return self._test_step(data)

    def _test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, y = self._checked_batch(x, y, training=False)
        loss_weight = sample_weight
        if self.class_mask is not None:
            # Evaluation covers the active classes: other rows weigh 0 in the
            # accuracies, and the losses are means over the active rows.
            mask = tf.cast(tf.greater_equal(self.class_mask, 0.5), tf.float32)
            active = tf.reduce_sum(rules.one_hot(y, self.num_classes) * mask, axis=-1)
            if sample_weight is not None:
                active = active * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
            rows = tf.cast(tf.shape(y)[0], tf.float32)
            count = tf.reduce_sum(tf.cast(tf.greater(active, 0.0), tf.float32))
            sample_weight = active
            loss_weight = active * (rows / tf.maximum(count, 1.0))
        every_exit = [layer.name for layer in self.exit_layers]
        errors, scores = self.compute_local_errors(
            x, y, loss_weight, training=False, train_layers=every_exit
        )
        losses = {name: error.loss for name, error in errors.items()}
        return self._exit_metrics.update(y, sample_weight, scores, losses)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        # Every exit costs one small product: `predict` picks one afterwards,
        # so choosing an exit never retraces.
        return self.exit_scores(x, training=False)

    def _checked_batch(self, x, y, training=True):
        """Checks a batch's types and shapes, and asserts the rejection counts
        that need no forward pass (`acceptance.input_rejections`; labels of
        inactive classes only when `training`)."""
        if y is None:
            raise ValueError("SpelaModel needs labels: call fit/evaluate with y.")
        if y.shape.rank == 0:
            raise ValueError(
                "The labels of a batch have shape (): single examples, not "
                "batches. Batch a tf.data.Dataset first, e.g. dataset.batch(32)."
            )
        x = data_checks.model_inputs(self, x)
        if not y.dtype.is_integer:
            raise ValueError(
                "Labels must be integer class ids in [0, num_classes), "
                f"received dtype {y.dtype.name}. Cast them, e.g. y.astype('int32')."
            )
        if y.shape.rank is not None and y.shape.rank != 1:
            if y.shape.rank == 2 and y.shape[-1] == 1:
                y = tf.reshape(y, [-1])
            else:
                raise ValueError(
                    "Labels must be integer class ids of shape (batch,), received "
                    f"shape {tuple(y.shape)}. One-hot labels are not accepted."
                )
        x_rows, y_rows = x.shape[0], y.shape[0]
        if x_rows is not None and y_rows is not None and x_rows != y_rows:
            raise ValueError(
                "x and y must have the same number of rows, received "
                f"{x_rows} and {y_rows}."
            )
        counts = {
            "rows": tf.cast(tf.not_equal(tf.shape(x)[0], tf.shape(y)[0]), tf.float32),
            **acceptance.input_rejections(
                x, y, self.num_classes, class_mask=self.class_mask if training else None
            ),
        }
        checks = acceptance.assert_accepted(counts, self.num_classes)
        with tf.control_dependencies(checks):
            # Cast after the check: int32 would wrap a label of 2**32 to 0.
            return tf.identity(x), tf.cast(y, tf.int32)

    # ---------------------------------------------------------------- export
    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               **kwargs):
        """Exports the model; `format="litert"` writes the on-device-trainable
        LiteRT model.

        With `format="litert"` this is `keras_spela.export_tflite(self,
        filepath, **kwargs)`: signatures `train`, `infer`, `get_weights` and
        `set_weights`, TFLite builtins only (Keras' own LiteRT export is
        inference-only and may need Flex ops). Every other format is Keras'
        `Model.export` (inference only).

        Args:
            filepath: where to write the artifact (a `.tflite` file for
                `"litert"`).
            format: `"litert"`, or any format of `keras.Model.export`
                (default `"tf_saved_model"`).
            verbose: as for `keras.Model.export`; with `"litert"`, True
                prints one line naming the file.
            input_signature: not used by `"litert"` (the model's
                `keras.Input` gives the shape; `batch_size` the static batch).
            **kwargs: with `"litert"`, `export_tflite`'s arguments
                (`batch_size`, `optimizer`, `learning_rate`, `train_layers`,
                `quantize_frozen`); otherwise Keras' options.

        Returns:
            With `"litert"`, the `TFLiteExport` of `export_tflite`.

        Example:

        ```python
        model.export("spela.tflite", format="litert", batch_size=16)
        ```
        """
        if format != "litert":
            return super().export(
                filepath, format=format, verbose=verbose, input_signature=input_signature,
                **kwargs,
            )
        if input_signature is not None:
            raise ValueError(
                "format='litert' takes the input shape from the model's keras.Input "
                "and the static batch from batch_size=; input_signature is not used."
            )
        from keras_spela.lite import exporter  # the exporter imports this module

        unknown = sorted(set(kwargs) - set(exporter.EXPORT_ARGUMENTS))
        if unknown:
            raise ValueError(
                f"Unknown argument(s) {unknown} for format='litert'; it takes "
                f"{list(exporter.EXPORT_ARGUMENTS)} (as keras_spela.export_tflite)."
            )
        export = exporter.export_tflite(self, str(filepath), **kwargs)
        if verbose:
            print(f"Saved the trainable LiteRT model at '{export.path}'.")
        return export

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
                None
                if self.example_input_shape is None
                else list(self.example_input_shape)
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


@contextlib.contextmanager
def _rejections_as_value_errors():
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
