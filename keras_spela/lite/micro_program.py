"""The TFLite Micro train step: the same local rule, with weights in row blocks.

TFLite Micro keeps resource variables in its arena and copies them on every
READ_VARIABLE; ASSIGN_VARIABLE needs the new value as a separate tensor.
Updating a whole kernel at once therefore needs several kernel-sized
temporaries besides the kernel itself. Here every learned kernel is stored as
row blocks of its transpose (`(units_j, input_dim)`, each a FULLY_CONNECTED
weight), and the step touches one block at a time:

1. the forward sweep (`SpelaModel.compute_local_errors`, the code of
   `SpelaModel.train_step`) reads each block only for its own product;
2. the batch is accepted only when the inputs, the labels, every local loss,
   every layer input and every `dL/dz` are finite and valid, and no gradient
   can exceed `rules.MAX_GRADIENT`;
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

from keras_spela import rules
from keras_spela.lite.trainable_module import count_nonfinite
from keras_spela.lite.trainable_module import count_rejections
from keras_spela.lite.trainable_module import select
from keras_spela.lite.trainable_module import model_input_shape


class _LearnedTensor(tf.Module):
    """One learned variable of the micro program and its optimizer slots."""

    def __init__(self, name, value, optimizer):
        super().__init__(name=name)
        self.variable = tf.Variable(value, name=name)
        self.slots = [
            tf.Variable(tf.fill(shape, tf.constant(init, tf.float32)), name=slot)
            for slot, shape, init in optimizer.slot_shapes(name, value.shape)
        ]

    def apply(self, gradient, optimizer, coefficients, accept):
        old = self.variable.read_value()
        slots = [slot.read_value() for slot in self.slots]
        new, new_slots = optimizer.updated_variable(gradient, old, slots, coefficients)
        self.variable.assign(select(accept, new, old))
        for slot, old_slot, new_slot in zip(self.slots, slots, new_slots):
            slot.assign(select(accept, new_slot, old_slot))


def block_rows(input_dim, units, block_bytes):
    """Rows of the transposed kernel per block (at least one)."""
    return int(min(units, max(1, block_bytes // (4 * input_dim))))


class MicroTrainingProgram(tf.Module):
    """The single-graph TFLite Micro train step of a `SpelaModel`.

    Args:
        model: a built `SpelaModel`.
        optimizer: a `DeviceOptimizer`.
        train_layers: names of the SPELA layers that learn on the device;
            every other weight becomes a constant.
        batch_size: the static batch size.
        block_bytes: the largest kernel block, in bytes (at least one row
            of the transposed kernel). Smaller blocks lower the arena and
            add operators.
    """

    def __init__(self, model, optimizer, train_layers, batch_size, block_bytes):
        super().__init__(name="spela_micro_training")
        self.model = model
        self.device_optimizer = optimizer
        self.batch_size = int(batch_size)
        self.input_shape = model_input_shape(model)
        self.learning = [l for l in model.exit_layers if l.name in train_layers]
        self.kernel_blocks, self.biases, self.block_ranges = {}, {}, {}
        learned_ids = set()
        for layer in self.learning:
            kernel = np.asarray(layer.kernel.numpy(), np.float32)
            rows = block_rows(kernel.shape[0], kernel.shape[1], block_bytes)
            ranges = [
                (start, min(start + rows, kernel.shape[1]))
                for start in range(0, kernel.shape[1], rows)
            ]
            self.block_ranges[layer.name] = ranges
            self.kernel_blocks[layer.name] = [
                _LearnedTensor(
                    f"{layer.name}_kernel_{start}",
                    np.ascontiguousarray(kernel[:, start:stop].T),
                    optimizer,
                )
                for start, stop in ranges
            ]
            learned_ids.add(id(layer.kernel))
            if layer.use_bias:
                self.biases[layer.name] = _LearnedTensor(
                    f"{layer.name}_bias", np.asarray(layer.bias.numpy()), optimizer
                )
                learned_ids.add(id(layer.bias))
        self.shared = [
            tf.Variable(tf.constant(init, tf.float32), name=name)
            for name, _, init in optimizer.shared_state_shapes()
        ]
        self._frozen = [
            (variable, tf.constant(np.asarray(variable.numpy())))
            for variable in model.variables
            if id(variable) not in learned_ids
        ]
        self.weight_names = []
        for layer in self.learning:
            self.weight_names.append(f"{layer.name}_kernel")
            if layer.use_bias:
                self.weight_names.append(f"{layer.name}_bias")
        self.x_spec = tf.TensorSpec(
            (self.batch_size,) + self.input_shape, tf.float32, name="x"
        )
        self.y_spec = tf.TensorSpec((self.batch_size,), tf.int32, name="y")

    def step(self, x, y, expose_weights=False):
        """One train step. Returns `loss`, `exit_<k>_loss` per learning
        layer, `accepted`, the pre-update `scores` of the last exit (labels
        of -1 make it a pure inference call) and, with `expose_weights`,
        every learned weight after the update (`<layer>_kernel`,
        `<layer>_bias`, in the Keras layout)."""
        names = [layer.name for layer in self.learning]
        mapping = self._frozen + [
            (layer.bias, self.biases[layer.name].variable.read_value())
            for layer in self.learning
            if layer.use_bias
        ]
        with keras.StatelessScope(state_mapping=mapping):
            # Variables, not values: each block is read where it is used.
            kernels = {
                name: [block.variable for block in self.kernel_blocks[name]]
                for name in names
            }
            errors, scores = self.model.compute_local_errors(
                x, y, training=False, train_layers=names, kernels=kernels
            )
        bad = count_rejections(x, y, errors, self.model.num_classes)
        for error in errors.values():
            bad += count_nonfinite(error.inputs) + count_nonfinite(error.grad_z)
        accept = tf.equal(bad, 0.0)

        optimizer = self.device_optimizer
        shared = [variable.read_value() for variable in self.shared]
        new_shared, coefficients = optimizer.advance(shared)
        for variable, old, new in zip(self.shared, shared, new_shared):
            variable.assign(select(accept, new, old))
        # x * 1.0 (or * 0.0 on a rejected batch, whose values are dropped):
        # makes every update come after the check in the converted graph.
        check = tf.cast(accept, tf.float32)
        for layer in self.learning:
            error = errors[layer.name]
            grad_z = error.grad_z * check
            # Transposed once per layer (the MUL keeps the converter from
            # folding them into a BATCH_MATMUL, which would keep persistent
            # transposed copies of its inputs for every block).
            grad_z_t = tf.transpose(error.grad_z) * check
            h_t = tf.transpose(error.inputs) * check
            for (start, stop), block in zip(
                self.block_ranges[layer.name], self.kernel_blocks[layer.name]
            ):
                gradient = rules.transposed_kernel_gradient(grad_z_t[start:stop], h_t)
                block.apply(gradient, optimizer, coefficients, accept)
            if layer.use_bias:
                self.biases[layer.name].apply(
                    rules.bias_gradient(grad_z), optimizer, coefficients, accept
                )

        exit_names = [layer.name for layer in self.model.exit_layers]
        outputs = {
            "loss": tf.add_n([error.loss for error in errors.values()]),
            "accepted": tf.cast(accept, tf.int32),
            "scores": scores[exit_names[-1]],
        }
        for name, error in errors.items():
            outputs[f"exit_{exit_names.index(name)}_loss"] = error.loss
        if expose_weights:
            for layer in self.learning:
                blocks = [block.variable for block in self.kernel_blocks[layer.name]]
                outputs[f"{layer.name}_kernel"] = tf.transpose(rules.concat(blocks, 0))
                if layer.use_bias:
                    outputs[f"{layer.name}_bias"] = self.biases[
                        layer.name
                    ].variable.read_value()
        return outputs
