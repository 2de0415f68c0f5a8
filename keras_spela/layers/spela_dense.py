"""SpelaDense: a densely-connected SPELA layer."""

import keras

from keras_spela.core import arguments
from keras_spela.core import rules
from keras_spela.layers.spela_layer import KernelSpelaLayer


@keras.saving.register_keras_serializable(package="keras_spela")
class SpelaDense(KernelSpelaLayer):
    """A densely-connected layer trained by its own SPELA local loss.

    The forward pass is `outputs = activation(inputs @ kernel + bias)` (with the
    inputs scaled to unit norm first when `normalize_inputs=True`). The layer
    owns one fixed unit vector per class, `class_vectors`, in the space of its
    outputs; its prediction for a row is the class whose vector has the
    largest cosine with the output, so every `SpelaDense` layer is an exit of
    the network. It learns from its local loss between the outputs and the
    vector of the true class, with its input held constant, in closed form
    (`keras_spela.core.rules`): no gradient ever flows to earlier layers.

    Args:
        units: positive integer, the output dimension.
        num_classes: number of classes; `SpelaModel` fills it in when None.
        activation: `"leaky_relu"` (default), `"relu"`, `"tanh"`,
            `"sigmoid"` or `"linear"`.
        negative_slope: slope of `"leaky_relu"` for negative inputs.
        local_loss: `"softmax_cosine"` (default: cross-entropy over the
            cosines to every class vector), `"cosine"` (the paper's
            `1 - cos`), `"log_cosine"` (the authors' code, `log(2 - cos)`) or
            `"euclidean"` (the paper's ablation, squared distance).
        temperature: softmax temperature of `"softmax_cosine"`, > 0.
        class_vectors: `"coulomb"` (default: minimum Coulomb energy, which
            is the exact regular simplex under a random rotation when
            `num_classes <= units + 1` and an energy relaxation otherwise),
            `"simplex"` (the simplex only; an error when it cannot exist),
            `"axis_simplex"` (the simplex aligned with the axes, whose
            positive part is reachable by ReLU-like outputs: for the paper's
            `log_cosine` loss on a last layer with as many units as classes),
            `"random"` (Gaussian ablation), or an array of shape
            `(num_classes, units)` with unit rows.
        normalize_inputs: scale each input row to unit norm (paper's
            Algorithm 1). The authors' MLP code does not.
        binary_weights: use `sign(kernel)` (+-1) in the forward pass while
            the float kernel receives the updates (the paper's ablation).
        use_bias: whether the layer has a bias.
        kernel_initializer: initializer of the kernel.
        bias_initializer: initializer of the bias.
        seed: integer seed of the class vectors and of a string-named kernel
            initializer. None draws one from numpy's global generator, which
            `keras.utils.set_random_seed` seeds.

    Input shape:
        `(batch_size, input_dim)`.

    Output shape:
        `(batch_size, units)`.

    Example:

    ```python
    layer = keras_spela.SpelaDense(34, num_classes=10)
    error = layer.local_error(x, rules.one_hot(y, 10))  # loss, dL/dz, scores
    gradients = layer.parameter_gradients(error)       # kernel, bias
    scores = layer.class_scores(layer(x))
    ```
    """

    def __init__(
        self,
        units,
        num_classes=None,
        activation="leaky_relu",
        negative_slope=0.01,
        local_loss="softmax_cosine",
        temperature=0.1,
        class_vectors="coulomb",
        normalize_inputs=False,
        binary_weights=False,
        use_bias=True,
        kernel_initializer="he_uniform",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        super().__init__(
            num_classes,
            class_vectors,
            seed,
            activation=activation,
            negative_slope=negative_slope,
            local_loss=local_loss,
            temperature=temperature,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            rule_options={
                "normalize_inputs": bool(normalize_inputs),
                "binary_weights": bool(binary_weights),
            },
            **kwargs,
        )
        self.units = arguments.integer(units, "units")
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    @property
    def rule(self):
        """The `rules.DenseRule` of this layer."""
        return self.dense_rule

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"SpelaDense expects inputs of shape (batch, features), received "
                f"{tuple(input_shape)}. Put a keras.layers.Flatten() before it."
            )
        self.add_kernel_and_bias((input_shape[-1], self.units), self.units)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def call(self, inputs):
        bias = self.bias if self.use_bias else None
        return rules.dense_forward(inputs, self.kernel, bias, self.rule)[2]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward_error(self, inputs, kernel, bias, targets, sample_weight=None):
        """The forward pass and local error with `kernel` (any layout
        `rules.dense_forward` takes) and `bias`."""
        features = self.kernel.shape[0]
        if inputs.shape[-1] is not None and inputs.shape[-1] != features:
            raise ValueError(
                f"Layer {self.name!r} takes {features} features, received inputs "
                f"of shape {tuple(inputs.shape)}. Give it {features} features "
                "(check the data and the layers before it)."
            )
        return rules.local_error(
            *rules.dense_forward(inputs, kernel, bias, self.rule),
            targets,
            self.class_vectors,
            self.rule,
            sample_weight,
        )

    def kernel_gradient(self, error):
        """`dL/dkernel = h^T dL/dz`."""
        return rules.kernel_gradient(error.inputs, error.grad_z)

    def bias_gradient(self, error):
        """`dL/dbias = sum(dL/dz)`."""
        return rules.bias_gradient(error.grad_z)

    def gradient_bound(self, error):
        """`rules.gradient_bound`: from activations, no gradient needed."""
        return rules.gradient_bound(error, has_bias=self.use_bias)

    def kernel_gradient_factors(self, error):
        """`(h, dL/dz)`: `dL/dkernel = h^T dL/dz`."""
        return error.inputs, error.grad_z

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "normalize_inputs": self.rule.normalize_inputs,
                "binary_weights": self.rule.binary_weights,
            }
        )
        return config
