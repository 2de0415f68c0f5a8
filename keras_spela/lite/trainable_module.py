"""A tf.Module with the train / infer / get_weights / set_weights signatures.

The train signature calls `SpelaModel.compute_local_errors` and
`compute_local_gradients`, the code of `SpelaModel.train_step`, then a
`DeviceOptimizer` step, and assigns the new values only when the batch is
accepted (`keras_spela.core.acceptance`, the host's definition). The gate is a
SELECT_V2 on one boolean (`acceptance.select`), so a rejected batch leaves
every weight and every optimizer state exactly as it was, even when its
candidate values are NaN, with builtin ops only.
"""

import keras
import tensorflow as tf

from keras_spela.core import acceptance
from keras_spela.core import primitives
from keras_spela_device import contract


class SpelaTrainingModule(tf.Module):
    """The on-device training program of a `SpelaModel`.

    Args:
        plan: the export's `ExportPlan` (`keras_spela.lite.export_plan`).

    The variables of the learning layers are the model's own; export does not
    change them.
    """

    def __init__(self, plan):
        super().__init__(name="spela_training")
        self.plan = plan
        # The Keras model is read through the plan: an attribute would put it in
        # the saved object graph, which the converter's SavedModel then carries.
        model = plan.model
        self.device_optimizer = optimizer = plan.optimizer
        self.train_layer_names = list(plan.train_layers)
        self.batch_size = plan.batch_size
        learned_variables = plan.learned_variables()
        self.weight_names = [learned.name for learned in learned_variables]
        self.weights = [learned.variable.value for learned in learned_variables]
        learned = [learned.variable for learned in learned_variables]
        state_specs = optimizer.state_shapes(
            self.weight_names, [tuple(w.shape) for w in self.weights]
        )
        self.state_names = [name for name, _, _ in state_specs]
        # Slots start as copies of their weights (read as zero by the first
        # step): the file stores each weight's initial values once.
        initial = {n: w for n, w in zip(self.weight_names, self.weights)}
        self.state = [
            tf.Variable(
                _slot_owner(initial, name).numpy()
                if init is None
                else tf.fill(shape, tf.constant(init, tf.float32)),
                name=name,
            )
            for name, shape, init in state_specs
        ]
        self._slot_count = len(state_specs) - len(optimizer.shared_state_shapes())
        # A max_classes model's active classes are device state too.
        self.class_names, self.class_state = [], []
        if model.class_mask is not None:
            self.class_names, self.class_state = [contract.CLASS_MASK], [model.class_mask.value]
            learned.append(model.class_mask)
        # Everything that does not learn on the device is frozen as a constant.
        self._frozen = plan.frozen_constants(learned)
        self.input_shape = input_shape = plan.input_shape
        x_train, y_train = plan.train_specs()
        x_infer = tf.TensorSpec((None,) + input_shape, tf.float32, name=contract.INFER_INPUT)
        self.train = tf.function(self._train, input_signature=[x_train, y_train], autograph=False)
        self.infer = tf.function(self._infer, input_signature=[x_infer], autograph=False)
        # Java/Kotlin's runSignature refuses a signature without inputs.
        request = tf.TensorSpec((), tf.int32, name=contract.GET_WEIGHTS_INPUT)
        self.get_weights = tf.function(
            self._get_weights, input_signature=[request], autograph=False
        )
        named_specs = [
            tf.TensorSpec(v.shape, tf.float32, name=n)
            for n, v in zip(self.all_names, self.all_variables)
        ]
        self.set_weights = tf.function(
            self._set_weights, input_signature=named_specs, autograph=False
        )

    @property
    def model(self):
        """The exported `SpelaModel` (the plan's)."""
        return self.plan.model

    @property
    def all_names(self):
        return self.weight_names + self.state_names + self.class_names

    @property
    def all_variables(self):
        return self.weights + self.state + self.class_state

    def _frozen_scope(self):
        return keras.StatelessScope(state_mapping=self._frozen)

    def _train(self, x, y):
        """Learns from one batch (rows labelled -1 are padding). Returns a
        map of `loss` (sum of the layers' local losses), `exit_<k>_loss` per
        learning layer (k = its exit index), `accepted` (1 when the batch
        was learned from, 0 when it was rejected) and `examples` (its number
        of real, non-padding rows)."""
        # Every export traces the primitives' TFLite-builtins lowering.
        with primitives.lowering("builtins"):
            return self._learn(x, y)

    def _learn(self, x, y):
        x = acceptance.flush_subnormals(x)
        weights, examples = acceptance.padding_weights(y)
        with self._frozen_scope():
            errors, _ = self.model.compute_local_errors(
                x, y, weights, training=False, train_layers=self.train_layer_names
            )
            gradients, _, losses = self.model.compute_local_gradients(errors)
        counts = acceptance.rejection_counts(
            x,
            y,
            self.model.exit_layers,
            errors,
            self.model.num_classes,
            padding=True,
            class_mask=self.class_state[0] if self.class_state else None,
        )
        accept = acceptance.accepted(counts)
        values = [w.read_value() for w in self.weights]
        state = [s.read_value() for s in self.state]
        new_values, new_state = self.device_optimizer.updated_values(gradients, values, state)
        for variable, old, new in zip(
            self.weights + self.state, values + state, new_values + new_state
        ):
            variable.assign(acceptance.select(accept, new, old))
        outputs = {
            contract.LOSS_OUTPUT: tf.add_n(list(losses.values())),
            contract.ACCEPTED_OUTPUT: tf.cast(accept, tf.int32),
            contract.PADDING_OUTPUT: tf.cast(examples, tf.int32),
        }
        outputs.update(
            {contract.exit_loss_name(self.plan.exit_key(n)): v for n, v in losses.items()}
        )
        return outputs

    def _infer(self, x):
        """Class scores for any batch size. Returns a map of `scores` (the last
        exit) and `exit_<k>_scores` for every exit k."""
        with self._frozen_scope():
            return self.plan.inference_outputs(x)

    def _get_weights(self, request=None):
        """A map of every learned weight and optimizer state (and, for a
        `max_classes` model, `active_classes`), by name.
        `request` (any int32 scalar) is ignored: it is there because the
        Java/Kotlin `runSignature` refuses a signature without inputs."""
        slots = [s.read_value() for s in self.state[: self._slot_count]]
        shared = [s.read_value() for s in self.state[self._slot_count :]]
        values = (
            [w.read_value() for w in self.weights]
            + self.device_optimizer.visible_slots(slots, shared)
            + shared
            + [c.read_value() for c in self.class_state]
        )
        # Computed outputs, not bare variable reads: a READ_VARIABLE output is
        # a dynamic tensor, which LiteRT's CompiledModel cannot bind to a
        # TensorBuffer. `select(request >= int32 min, v, v)` (always `v`)
        # depends on the input, so the converter keeps it.
        keep = tf.greater_equal(request, tf.int32.min)
        values = [acceptance.select(keep, v, v) for v in values]
        return dict(zip(self.all_names, values))

    def _set_weights(self, *values):
        """Sets every learned weight and optimizer state (and
        `active_classes`; names as in get_weights). Returns `accepted`: 0
        (and nothing changed) when a value is not finite."""
        accept = tf.equal(tf.add_n([acceptance.count_nonfinite(v) for v in values]), 0.0)
        for variable, new in zip(self.all_variables, values):
            variable.assign(acceptance.select(accept, new, variable.read_value()))
        return {contract.ACCEPTED_OUTPUT: tf.cast(accept, tf.int32)}


def _slot_owner(weights, slot_name):
    """The weight of a slot named `<weight name>_<slot>`."""
    owner = slot_name.rsplit("_", 1)[0]
    return weights[owner]
