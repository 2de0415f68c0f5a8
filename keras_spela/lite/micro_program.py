"""The TFLite Micro train step: the same local rule, with weights in row blocks.

TFLite Micro keeps resource variables in its arena and copies them on every
READ_VARIABLE; ASSIGN_VARIABLE needs the new value as a separate tensor.
Updating a whole kernel at once therefore needs several kernel-sized
temporaries besides the kernel itself. Here every learned kernel is stored as
row blocks of its transpose (`(units_j, input_dim)`, each a FULLY_CONNECTED
weight), and the step touches one block at a time:

1. the forward sweep (`SpelaModel.compute_local_errors`, the code of
   `SpelaModel.train_step`) reads each block only for its own product;
2. the batch is accepted or rejected by `keras_spela.core.acceptance`, the
   definition the host's `train_step` asserts;
3. each block's gradient (`rules.kernel_gradient` on its columns of `dL/dz`),
   optimizer step (`DeviceOptimizer.updated_variable`) and assignment run
   before the next block is read.

Every new value is kept only when the batch is accepted (a SELECT_V2 on one
boolean, so a NaN candidate of a rejected batch never reaches a variable).
`schedule.schedule_for_micro` then moves each variable read next to its
user in the converted model. Peak memory is the weights, the optimizer state,
the activations of one batch and a few blocks.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_spela.core import acceptance
from keras_spela.core import primitives
from keras_spela.core import rules
from keras_spela.layers import SpelaLayer
from keras_spela_device import contract


class RowBlockKernel:
    """A 2-D kernel stored as row blocks of its transpose, `[(units_j,
    input_dim), ...]` with `sum(units_j) == units`: each block is a
    FULLY_CONNECTED weight. `rules.dense_forward` takes it as a kernel."""

    def __init__(self, blocks):
        self.blocks = list(blocks)

    def left_product(self, h, transform):
        """`h @ transform(kernel)`, one product per block."""
        parts = [tf.matmul(h, transform(block), transpose_b=True) for block in self.blocks]
        return primitives.concat(parts, axis=-1)


class _LearnedTensor(tf.Module):
    """One learned variable of the micro program and its optimizer slots."""

    def __init__(self, name, value, optimizer):
        super().__init__(name=name)
        self.variable = tf.Variable(value, name=name)
        # Zero slots: their update needs fewer temporaries in the arena than
        # slots read as zero before the first step (the LiteRT module's).
        self.slots = [
            tf.Variable(tf.fill(shape, tf.constant(init, tf.float32)), name=slot)
            for slot, shape, init in optimizer.slot_shapes(name, value.shape, zeros=True)
        ]

    def apply(self, gradient, optimizer, coefficients, accept):
        old = self.variable.read_value()
        slots = [slot.read_value() for slot in self.slots]
        new, new_slots = optimizer.updated_variable(
            gradient, old, slots, coefficients, zero_start=True
        )
        self.variable.assign(acceptance.select(accept, new, old))
        for slot, old_slot, new_slot in zip(self.slots, slots, new_slots):
            slot.assign(acceptance.select(accept, new_slot, old_slot))


def block_rows(input_dim, units, block_bytes):
    """Rows of the transposed kernel per block (at least one)."""
    return int(min(units, max(1, block_bytes // (4 * input_dim))))


class MicroTrainingProgram(tf.Module):
    """The single-graph TFLite Micro train step of a `SpelaModel`.

    A learning layer's 2-D `kernel` is kept in row blocks when the layer
    gives its gradient as a product (`SpelaLayer.kernel_gradient_factors`);
    every other learned weight is updated whole, from
    `SpelaLayer.parameter_gradient`.

    Args:
        plan: the export's `ExportPlan` (`keras_spela.lite.export_plan`).
        block_bytes: the largest kernel block, in bytes (at least one row
            of the transposed kernel). Smaller blocks lower the arena and
            add operators.
    """

    def __init__(self, plan, block_bytes):
        super().__init__(name="spela_micro_training")
        self.plan = plan
        # The Keras model is read through the plan: an attribute would put it in
        # the saved object graph, which the converter's SavedModel then carries.
        model = plan.model
        self.device_optimizer = optimizer = plan.optimizer
        self.batch_size = plan.batch_size
        self.input_shape = plan.input_shape
        self.learning = plan.learning_layers
        # {layer: [(start, stop), ...]}, {layer: [blocks]}, {layer: {name: tensor}}
        self.block_ranges, self.kernel_blocks = {}, {}
        self.whole = {layer.name: {} for layer in self.learning}
        learned_variables = plan.learned_variables()
        self.weight_names = [learned.name for learned in learned_variables]
        for learned in learned_variables:
            layer = learned.layer
            value = np.asarray(learned.variable.numpy(), np.float32)
            probe = layer.kernel_gradient_factors
            if learned.weight == "kernel" and value.ndim == 2 and _gives_factors(probe):
                self._add_blocks(layer.name, value, optimizer, block_bytes)
            else:
                self.whole[layer.name][learned.weight] = _LearnedTensor(
                    learned.name, value, optimizer
                )
        learned = [learned.variable for learned in learned_variables]
        self.shared = [
            tf.Variable(tf.constant(init, tf.float32), name=name)
            for name, _, init in optimizer.shared_state_shapes()
        ]
        # A max_classes model's active classes: an input of every step (the
        # application keeps them, e.g. with its weights), not a constant.
        self.has_class_mask = model.class_mask is not None
        self._frozen = plan.frozen_constants(
            learned + ([model.class_mask] if self.has_class_mask else [])
        )
        self.x_spec, self.y_spec = plan.train_specs()
        self.input_specs = [self.x_spec, self.y_spec]
        if self.has_class_mask:
            self.input_specs.append(
                tf.TensorSpec((model.num_classes,), tf.float32, name=contract.CLASS_MASK)
            )

    @property
    def model(self):
        """The exported `SpelaModel` (the plan's)."""
        return self.plan.model

    def _add_blocks(self, layer_name, kernel, optimizer, block_bytes):
        rows = block_rows(kernel.shape[0], kernel.shape[1], block_bytes)
        ranges = [
            (start, min(start + rows, kernel.shape[1])) for start in range(0, kernel.shape[1], rows)
        ]
        self.block_ranges[layer_name] = ranges
        self.kernel_blocks[layer_name] = [
            _LearnedTensor(
                f"{layer_name}_kernel_{start}",
                np.ascontiguousarray(kernel[:, start:stop].T),
                optimizer,
            )
            for start, stop in ranges
        ]

    def _weights(self, layer_name):
        """The layer's learned weights as `local_error` takes them: variables
        (each block is read where it is used) or read values."""
        weights = {
            name: tensor.variable.read_value() for name, tensor in self.whole[layer_name].items()
        }
        if layer_name in self.kernel_blocks:
            weights["kernel"] = RowBlockKernel(
                [block.variable for block in self.kernel_blocks[layer_name]]
            )
        return weights

    def step(self, x, y, active_classes=None, expose_weights=False):
        """One train step (rows labelled -1 are padding; `active_classes`,
        1 per active class, for a `max_classes` model). Returns `loss`,
        `exit_<k>_loss` per learning layer, `accepted`, `examples` (real
        rows), the pre-update
        `scores` of the last exit (labels all -1 make it a pure inference
        call) and, with `expose_weights`,
        every learned weight after the update (`<layer>_kernel`,
        `<layer>_bias`, in the Keras layout)."""
        # Every export traces the primitives' TFLite-builtins lowering.
        with primitives.lowering("builtins"):
            return self._step(x, y, active_classes, expose_weights)

    def _step(self, x, y, active_classes, expose_weights):
        x = acceptance.flush_subnormals(x)
        names = [layer.name for layer in self.learning]
        sample_weight, examples = acceptance.padding_weights(y)
        mapping = list(self._frozen)
        if self.has_class_mask:
            mapping.append((self.model.class_mask, active_classes))
        with keras.StatelessScope(state_mapping=mapping):
            errors, scores = self.model.compute_local_errors(
                x,
                y,
                sample_weight,
                training=False,
                train_layers=names,
                weights={name: self._weights(name) for name in names},
            )
        counts = acceptance.rejection_counts(
            x,
            y,
            self.model.exit_layers,
            errors,
            self.model.num_classes,
            padding=True,
            class_mask=active_classes,
        )
        accept = acceptance.accepted(counts)

        optimizer = self.device_optimizer
        shared = [variable.read_value() for variable in self.shared]
        new_shared, coefficients = optimizer.advance(shared)
        for variable, old, new in zip(self.shared, shared, new_shared):
            variable.assign(acceptance.select(accept, new, old))
        # x * 1.0 (or * 0.0 on a rejected batch, whose values are dropped):
        # makes every update come after the check in the converted graph.
        check = tf.cast(accept, tf.float32)
        for layer in self.learning:
            error = errors[layer.name]
            checked = error._replace(
                grad_z=error.grad_z * check,
                aux={k: v * check for k, v in error.aux.items()} if error.aux else None,
            )
            if layer.name in self.kernel_blocks:
                h, grad_z = layer.kernel_gradient_factors(error)
                # Transposed once per layer (the MUL keeps the converter from
                # folding them into a BATCH_MATMUL, which would keep
                # persistent transposed copies of its inputs for every block).
                grad_z_t = tf.transpose(grad_z) * check
                h_t = tf.transpose(h) * check
                for (start, stop), block in zip(
                    self.block_ranges[layer.name], self.kernel_blocks[layer.name]
                ):
                    gradient = rules.transposed_kernel_gradient(grad_z_t[start:stop], h_t)
                    block.apply(gradient, optimizer, coefficients, accept)
            for name, tensor in self.whole[layer.name].items():
                gradient = layer.parameter_gradient(checked, name)
                tensor.apply(gradient, optimizer, coefficients, accept)

        outputs = {
            # SUM of a PACK: its own tensor even for one learning layer (the
            # outputs are told apart by tensor).
            contract.LOSS_OUTPUT: tf.reduce_sum(
                tf.stack([error.loss for error in errors.values()])
            ),
            contract.ACCEPTED_OUTPUT: tf.cast(accept, tf.int32),
            contract.PADDING_OUTPUT: tf.cast(examples, tf.int32),
            contract.SCORES_OUTPUT: scores[self.model.exit_layers[-1].name],
        }
        for name, error in errors.items():
            outputs[contract.exit_loss_name(self.plan.exit_key(name))] = error.loss
        if expose_weights:
            outputs.update(self._exposed_weights())
        return outputs

    def _exposed_weights(self):
        """Every learned weight, `<layer>_<weight>`, in the Keras layout."""
        outputs = {}
        for layer in self.learning:
            if layer.name in self.kernel_blocks:
                blocks = [block.variable for block in self.kernel_blocks[layer.name]]
                outputs[f"{layer.name}_kernel"] = tf.transpose(primitives.concat(blocks, 0))
            for name, tensor in self.whole[layer.name].items():
                outputs[f"{layer.name}_{name}"] = tensor.variable.read_value()
        return outputs


def _gives_factors(method):
    """Whether a layer's `kernel_gradient_factors` is its own (not the base
    class's, which returns None)."""
    return getattr(method, "__func__", None) is not SpelaLayer.kernel_gradient_factors
