"""SpelaModel: a Keras model trained by its layers' local rules."""

import keras
import numpy as np
import tensorflow as tf

from keras_spela import rules
from keras_spela.layers import SpelaDense

DEFAULT_LEARNING_RATE = 1e-2


def is_spela_layer(layer):
    """Whether `layer` carries a SPELA local rule (and so is an exit)."""
    return isinstance(layer, SpelaDense)


@keras.saving.register_keras_serializable(package="keras_spela")
class SpelaModel(keras.Model):
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

    Every SPELA layer is an exit: `evaluate` reports the accuracy at every
    exit, `predict(x, exit=k)` gives the class scores at exit k (the last by
    default), `truncated(k)` makes a cheaper model ending at exit k, and
    `evaluate_early_exit` stops each example at the first confident exit.

    Args:
        layers: a list of layers, optionally starting with `keras.Input(...)`;
            or a Sequential/functional Keras model whose layers form a chain.
        num_classes: number of classes (integer labels in
            `[0, num_classes)`). Given to every SPELA layer that lacks it.
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

    def __init__(self, layers, num_classes, train_layers="all", name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        layers, input_shape = _unpack_layers(layers)
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(
                "num_classes must be an integer >= 2, received "
                f"num_classes={num_classes!r}."
            )
        self.num_classes = int(num_classes)
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
                    f"but the model has num_classes={self.num_classes}."
                )
        self.xla_local_steps = False
        self._xla_functions = {}
        self.train_layers = train_layers
        self._input_shape_arg = input_shape
        self._trackers = self._make_trackers()
        if input_shape is not None:
            self.build((None,) + tuple(input_shape))

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.stack:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        self.built = True

    def _make_trackers(self):
        trackers = {
            "loss": keras.metrics.Mean(name="loss"),
            "accuracy": keras.metrics.Mean(name="accuracy"),
        }
        for layer in self.exit_layers:
            trackers[f"{layer.name}_loss"] = keras.metrics.Mean(
                name=f"{layer.name}_loss"
            )
            trackers[f"{layer.name}_accuracy"] = keras.metrics.Mean(
                name=f"{layer.name}_accuracy"
            )
        return trackers

    @property
    def metrics(self):
        return list(self._trackers.values())

    @property
    def train_layers(self):
        """Names of the SPELA layers that `fit` trains (the others run
        forward only). Setting it takes `"all"` or a list of names."""
        return self._train_layers

    @train_layers.setter
    def train_layers(self, train_layers):
        self._train_layers = self._resolve_train_layers(train_layers)
        # The compiled steps read it when they are traced: trace them again
        # (at once if a train function exists: a callback may set it in fit).
        self._xla_functions = {}
        if getattr(self, "train_function", None) is not None:
            self.make_train_function(force=True)

    def _resolve_train_layers(self, train_layers):
        names = [layer.name for layer in self.exit_layers]
        if isinstance(train_layers, str) and train_layers == "all":
            return list(names)
        if not isinstance(train_layers, (list, tuple)) or not all(
            isinstance(n, str) for n in train_layers
        ):
            raise ValueError(
                "train_layers must be 'all' or a list of SPELA layer names, "
                f"received {train_layers!r}."
            )
        if not train_layers:
            raise ValueError(
                f"train_layers must name at least one SPELA layer of {names}; "
                "received an empty list."
            )
        unknown = [n for n in train_layers if n not in names]
        if unknown:
            raise ValueError(
                f"train_layers names unknown SPELA layers {unknown}; the model's "
                f"SPELA layers are {names}."
            )
        return list(train_layers)

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """Configures the model for training; no loss is needed.

        Args:
            optimizer: a Keras optimizer or its name. None gives the library's
                default, `keras.optimizers.Adam(learning_rate=1e-2)`. The
                paper's exact recipe is `keras.optimizers.SGD(2.5)` with
                `local_loss="log_cosine"` layers.
            loss: must be None: every SPELA layer has its own local loss.
            metrics: None or `["accuracy"]`; per-exit accuracy and per-layer
                loss are always reported.
            **kwargs: passed to `keras.Model.compile` (e.g.
                `steps_per_execution`), except `jit_compile`: True compiles
                each step's local rules and its optimizer update with XLA
                (the batch checks stay outside XLA, which would drop them;
                not under a tf.distribute strategy, whose cross-replica
                merge XLA cannot compile);
                False and "auto" (the default) do not.
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
        self._xla_functions = {}
        kwargs["jit_compile"] = False
        if optimizer is None:
            optimizer = keras.optimizers.Adam(learning_rate=DEFAULT_LEARNING_RATE)
        super().compile(optimizer=optimizer, **kwargs)
        if self.built:
            self._build_optimizer()

    def compile_from_config(self, config):
        """Re-compiles a loaded model with its saved optimizer."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(
            optimizer=config.get("optimizer"),
            steps_per_execution=config.get("steps_per_execution", 1),
            jit_compile=config.get("jit_compile", "auto"),
        )

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config["jit_compile"] = self.xla_local_steps
        return config

    def _build_optimizer(self):
        """Builds the optimizer for EVERY SPELA layer's variables, so that a
        schedule training a subset first (fit_layerwise, train_layers) can
        later train the others with the same optimizer."""
        if not self.optimizer.built:
            self.optimizer.build(
                [v for layer in self.exit_layers for v in layer.trainable_variables]
            )

    # ------------------------------------------------------------- local rule
    def compute_local_errors(
        self, x, y, sample_weight=None, training=True, train_layers=None, kernels=None
    ):
        """Runs one forward sweep and every learning layer's local loss.

        Changes no variable. Layer k's input is a constant
        (`stop_gradient`): nothing flows from layer k+1's loss into layer k.

        Args:
            x: a batch of inputs.
            y: integer labels `(batch,)`.
            sample_weight: optional `(batch,)` example weights.
            training: passed to the non-SPELA layers (Dropout, BatchNorm).
            train_layers: names of the SPELA layers that learn; None uses
                the model's `train_layers`.
            kernels: optional `{layer name: kernel}` used instead of those
                layers' own kernels (any layout `rules.dense_forward` takes).

        Returns:
            `(errors, scores)`: `{layer name: rules.LocalError}` for the
            learning layers and `{layer name: (batch, num_classes) cosine
            scores}` for every exit.
        """
        if train_layers is None:
            train_layers = self.train_layers
        kernels = kernels or {}
        targets = rules.one_hot(y, self.num_classes)
        errors, scores = {}, {}
        h = x
        for layer in self.stack:
            if is_spela_layer(layer) and layer.name in train_layers:
                error = layer.local_error(
                    h, targets, sample_weight, kernel=kernels.get(layer.name)
                )
                errors[layer.name] = error
                scores[layer.name] = error.scores
                h = error.outputs
            else:
                h = layer(h, training=training)
                if is_spela_layer(layer):
                    scores[layer.name] = layer.class_scores(h)
            h = tf.stop_gradient(h)
        return errors, scores

    def compute_local_gradients(
        self, x, y, sample_weight=None, training=True, train_layers=None
    ):
        """Runs one forward sweep and every learning layer's local rule.

        Changes no variable (see `compute_local_errors`).

        Args:
            x, y, sample_weight, training, train_layers: as for
                `compute_local_errors`.

        Returns:
            `(gradients, variables, losses, scores)`: lists of gradients and
            the variables they belong to (learning layers only), and dicts
            `{layer name: batch-mean local loss}` (learning layers) and
            `{layer name: (batch, num_classes) cosine scores}` (every exit).
        """
        errors, scores = self.compute_local_errors(
            x, y, sample_weight, training, train_layers
        )
        gradients, variables, losses = self._gradients(errors)
        return gradients, variables, losses, scores

    def _gradients(self, errors):
        """`(gradients, variables, losses)` of `compute_local_errors`' errors."""
        gradients, variables, losses = [], [], {}
        for layer in self.exit_layers:
            if layer.name in errors:
                error = errors[layer.name]
                gradients.extend(rules.local_step(error, layer.use_bias).gradients)
                variables.extend(layer.trainable_variables)
                losses[layer.name] = error.loss
        return gradients, variables, losses

    def exit_scores(self, x, training=False):
        """Class scores at every exit: `{layer name: (batch, num_classes)}`."""
        scores = {}
        h = x
        for layer in self.stack:
            h = layer(h, training=training)
            if is_spela_layer(layer):
                scores[layer.name] = layer.class_scores(h)
        return scores

    def call(self, inputs, training=False):
        return self.exit_scores(inputs, training=training)[self.exit_layers[-1].name]

    # ------------------------------------------------------------ keras steps
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, y = self._checked_batch(x, y)
        if not all(layer.built for layer in self.stack):
            self.build(x.shape)  # a model without keras.Input, at its first batch
        self._build_optimizer()
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        # Under tf.distribute (even one replica) the optimizer merges across
        # replicas, which XLA cannot compile.
        if self.xla_local_steps and not tf.distribute.has_strategy():
            # One XLA function; it skips the update on a batch that fails
            # the checks below, which then raise.
            if "step" not in self._xla_functions:
                self._xla_functions["step"] = tf.function(
                    self._gated_local_step, jit_compile=True
                )
            losses, checked, scores = self._xla_functions["step"](x, y, sample_weight)
            tf.group(self._step_checks(checked))
        else:
            errors, scores = self.compute_local_errors(
                x, y, sample_weight, training=True
            )
            gradients, _, losses = self._gradients(errors)
            # Under tf.distribute the optimizer sums the replicas' gradients
            # (as for Keras' own losses, divided by the replica count).
            if replicas > 1:
                gradients = [g / replicas for g in gradients]
            with tf.control_dependencies(self._step_checks(_checked_values(errors))):
                gradients = [tf.identity(g) for g in gradients]
            self._apply(gradients)
        return self._update_metrics(y, sample_weight, scores, losses)

    def _step_checks(self, checked):
        """Assertions that stop a step before any update (see
        `_checked_values`)."""
        return [
            tf.debugging.assert_less_equal(
                value,
                tf.constant(rules.MAX_GRADIENT, value.dtype),
                message=f"the local loss of layer {name!r} is not finite, or its "
                f"gradients could exceed {rules.MAX_GRADIENT:g}, on this batch "
                "(inputs too large, or training diverged); no weight was changed",
            )
            for name, value in checked.items()
        ]

    def _gated_local_step(self, x, y, sample_weight):
        """The local rules and the update, which runs only when every value
        of `_checked_values` is at most `rules.MAX_GRADIENT` (the step of
        `compile(jit_compile=True)`)."""
        errors, scores = self.compute_local_errors(x, y, sample_weight, training=True)
        gradients, _, losses = self._gradients(errors)
        checked = _checked_values(errors)
        accept = tf.reduce_all(
            tf.less_equal(tf.stack(list(checked.values())), rules.MAX_GRADIENT)
        )

        def update():
            self._apply(gradients)
            return tf.constant(True)

        tf.cond(accept, update, lambda: tf.constant(False))
        return losses, checked, scores

    def _apply(self, gradients):
        variables = [
            v
            for layer in self.exit_layers
            if layer.name in self.train_layers
            for v in layer.trainable_variables
        ]
        self.optimizer.apply_gradients(zip(gradients, variables))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, y = self._checked_batch(x, y)
        targets = rules.one_hot(y, self.num_classes)
        losses, scores = {}, {}
        h = x
        for layer in self.stack:
            if is_spela_layer(layer):
                error = layer.local_error(h, targets, sample_weight)
                losses[layer.name], scores[layer.name] = error.loss, error.scores
                h = error.outputs
            else:
                h = layer(h, training=False)
        return self._update_metrics(y, sample_weight, scores, losses)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        # Every exit costs one small product: `predict` picks one afterwards,
        # so choosing an exit never retraces.
        return self.exit_scores(x, training=False)

    def _update_metrics(self, y, sample_weight, scores, losses):
        for name, loss in losses.items():
            self._trackers[f"{name}_loss"].update_state(loss)
        if losses:
            self._trackers["loss"].update_state(tf.add_n(list(losses.values())))
        for name, layer_scores in scores.items():
            predicted = tf.argmax(layer_scores, axis=-1, output_type=y.dtype)
            correct = tf.cast(tf.equal(predicted, y), tf.float32)
            self._trackers[f"{name}_accuracy"].update_state(correct, sample_weight)
            if name == self.exit_layers[-1].name:
                self._trackers["accuracy"].update_state(correct, sample_weight)
        # Layers that do not learn in this fit have no loss to report.
        silent = {
            f"{layer.name}_loss" for layer in self.exit_layers if layer.name not in losses
        }
        return {
            name: tracker.result()
            for name, tracker in self._trackers.items()
            if name not in silent
        }

    def _checked_batch(self, x, y):
        """Asserts a batch is usable; the step stops before any update if not."""
        if y is None:
            raise ValueError("SpelaModel needs labels: call fit/evaluate with y.")
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
        y = tf.cast(y, tf.int32)
        x_rows, y_rows = x.shape[0], y.shape[0]
        if x_rows is not None and y_rows is not None and x_rows != y_rows:
            raise ValueError(
                "x and y must have the same number of rows, received "
                f"{x_rows} and {y_rows}."
            )
        checks = [
            tf.debugging.assert_greater_equal(
                y, 0, message="labels must be in [0, num_classes): found a negative label"
            ),
            tf.debugging.assert_less(
                y,
                self.num_classes,
                message=f"labels must be in [0, num_classes={self.num_classes}): "
                "found a label >= num_classes",
            ),
            tf.debugging.assert_equal(
                tf.shape(x)[0],
                tf.shape(y)[0],
                message="x and y must have the same number of rows",
            ),
        ]
        if x.dtype.is_floating:
            checks.append(
                tf.debugging.assert_all_finite(
                    x, message="inputs contain NaN or infinite values"
                )
            )
        with tf.control_dependencies(checks):
            return tf.identity(x), tf.identity(y)

    # ------------------------------------------------------------ early exit
    def exit_index(self, exit):
        """The position in `exit_layers` of an exit given by index or name."""
        names = [layer.name for layer in self.exit_layers]
        if isinstance(exit, str):
            if exit not in names:
                raise ValueError(f"Unknown exit {exit!r}; the exits are {names}.")
            return names.index(exit)
        if isinstance(exit, (int, np.integer)) and -len(names) <= exit < len(names):
            return int(exit) % len(names)
        raise ValueError(
            f"exit must be an index in [-{len(names)}, {len(names)}) or one of "
            f"{names}, received exit={exit!r}."
        )

    def predict(self, x, exit=None, **kwargs):
        """Class scores (cosine to every class vector) at one exit or all.

        Args:
            x: inputs, as for `keras.Model.predict`.
            exit: None (the last exit), an exit index or layer name, or
                `"all"` for a dict `{layer name: scores}`.
            **kwargs: passed to `keras.Model.predict` (`batch_size`, ...).

        Returns:
            `(num_examples, num_classes)` numpy scores, or a dict of them.
        """
        name = self._exit_name(exit)
        scores = super().predict(x, **kwargs)
        return scores if name is None else scores[name]

    def predict_on_batch(self, x, exit=None):
        """`predict` on one batch (same `exit` argument)."""
        name = self._exit_name(exit)
        scores = super().predict_on_batch(x)
        return scores if name is None else scores[name]

    def _exit_name(self, exit):
        """The layer name of an exit given as `predict`'s `exit`; None for
        `"all"`."""
        if isinstance(exit, str) and exit == "all":
            return None
        return self.exit_layers[self.exit_index(-1 if exit is None else exit)].name

    def truncated(self, exit):
        """A model made of this model's layers up to and including `exit`.

        The new model shares the layers (and so the weights) of this one; it
        is cheaper to run and predicts from `exit`.

        Args:
            exit: exit index or SPELA layer name.

        Returns:
            A `SpelaModel`.
        """
        last = self.exit_layers[self.exit_index(exit)]
        layers = self.stack[: self.stack.index(last) + 1]
        model = SpelaModel(layers, self.num_classes, name=f"{self.name}_to_{last.name}")
        if self._input_shape_arg is not None:
            model._input_shape_arg = self._input_shape_arg
        return model

    def predict_early_exit(self, x, threshold, batch_size=None):
        """Stops each example at the first exit whose cosine margin passes.

        The margin of an exit is its best class score minus its second best.
        An example that never passes `threshold` uses the last exit.

        Args:
            x: inputs.
            threshold: margin needed to stop, e.g. 0.2.
            batch_size: passed to `predict`.

        Returns:
            `(predictions, exits)`: integer arrays of the predicted class and
            of the exit index used, per example.
        """
        scores = self.predict(x, exit="all", batch_size=batch_size, verbose=0)
        scores = np.stack([scores[layer.name] for layer in self.exit_layers])
        top2 = np.sort(scores, axis=-1)[..., -2:]
        confident = (top2[..., 1] - top2[..., 0]) >= threshold
        confident[-1] = True
        exits = np.argmax(confident, axis=0)
        predictions = np.argmax(scores, axis=-1)[exits, np.arange(scores.shape[1])]
        return predictions, exits

    def evaluate_early_exit(self, x, y, threshold, batch_size=None):
        """Accuracy and average depth of confidence-gated early exit.

        Returns:
            A dict with `accuracy`, `mean_exit` (average exit index, from 0),
            `mean_depth` (average number of SPELA layers run, from 1), and
            `exit_fractions` (share of examples leaving at each exit).
        """
        predictions, exits = self.predict_early_exit(x, threshold, batch_size)
        counts = np.bincount(exits, minlength=len(self.exit_layers))
        return {
            "accuracy": float(np.mean(predictions == np.asarray(y).reshape(-1))),
            "mean_exit": float(np.mean(exits)),
            "mean_depth": float(np.mean(exits) + 1.0),
            "exit_fractions": (counts / len(exits)).tolist(),
        }

    # ------------------------------------------------------ layer-wise SPELA
    def fit_layerwise(self, x=None, y=None, epochs=1, **kwargs):
        """The paper's slower schedule: train exit 1 fully, then exit 2, ...

        While exit k trains, the earlier exits are frozen and run forward
        only, and the later ones are not updated.

        Args:
            x, y: training data, as for `fit`.
            epochs: epochs per SPELA layer.
            **kwargs: passed to every `fit` call.

        Returns:
            A list of `History` objects, one per SPELA layer.
        """
        histories = []
        saved = self.train_layers
        try:
            for layer in self.exit_layers:
                self.train_layers = [layer.name]
                histories.append(self.fit(x, y, epochs=epochs, **kwargs))
        finally:
            self.train_layers = saved
        return histories

    # --------------------------------------------------------- serialization
    def get_config(self):
        config = {
            "name": self.name,
            "layers": [keras.saving.serialize_keras_object(l) for l in self.stack],
            "num_classes": self.num_classes,
            "train_layers": self.train_layers,
            "input_shape": (
                None if self._input_shape_arg is None else list(self._input_shape_arg)
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


def _checked_values(errors):
    """Per layer, `gradient bound + 0 * loss`: at most `rules.MAX_GRADIENT`
    exactly when the local loss is finite (else NaN, which fails every
    comparison) and no gradient can exceed the bound, so that squared
    gradients (Adam) stay finite."""
    return {
        name: rules.gradient_bound(error) + 0.0 * error.loss
        for name, error in errors.items()
    }


def _unpack_layers(layers):
    """Splits a layer list (or chain model) into layers and an input shape."""
    if isinstance(layers, keras.Model):
        model = layers
        layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
        if not isinstance(model, keras.Sequential):
            _check_chain(model, layers)
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


def _check_chain(model, layers):
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
