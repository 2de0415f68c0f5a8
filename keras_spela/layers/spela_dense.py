"""SpelaDense: a densely-connected SPELA layer."""

import numbers

import keras

from keras_spela import rules
from keras_spela.layers.spela_layer import SpelaLayer


@keras.saving.register_keras_serializable(package="keras_spela")
class SpelaDense(SpelaLayer):
    """A densely-connected layer trained by its own SPELA local loss.

    The forward pass is `outputs = activation(inputs @ kernel + bias)` (with the
    inputs scaled to unit norm first when `normalize_inputs=True`). The layer
    owns one fixed unit vector per class, `class_vectors`, in the space of its
    outputs; its prediction for a row is the class whose vector has the
    largest cosine with the output, so every `SpelaDense` layer is an exit of
    the network. It learns from its local loss between the outputs and the
    vector of the true class, with its input held constant, in closed form
    (`keras_spela.rules`): no gradient ever flows to earlier layers.

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
        super().__init__(num_classes, class_vectors, seed, **kwargs)
        if (
            not isinstance(units, numbers.Integral)
            or isinstance(units, bool)
            or units < 1
        ):
            raise ValueError(
                f"units must be a positive integer, received units={units!r}."
            )
        self.units = int(units)
        self.rule = rules.DenseRule(
            activation=activation,
            negative_slope=float(negative_slope),
            local_loss=local_loss,
            temperature=(
                float(temperature)
                if isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
                else temperature
            ),
            normalize_inputs=bool(normalize_inputs),
            binary_weights=bool(binary_weights),
        )
        self.use_bias = bool(use_bias)
        if isinstance(kernel_initializer, str) and self.seed is not None:
            kernel_initializer = keras.initializers.get(
                {"class_name": kernel_initializer, "config": {"seed": self.seed}}
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"SpelaDense expects inputs of shape (batch, features), received "
                f"{tuple(input_shape)}. Put a keras.layers.Flatten() before it."
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer
            )
        self.add_class_vectors(self.units)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def call(self, inputs):
        return rules.dense_forward(inputs, self.kernel, self._bias(), self.rule)[2]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def local_error(self, inputs, targets, sample_weight=None, weights=None):
        """Runs the forward pass and the local loss on one batch; changes
        nothing (see `SpelaLayer.local_error`; `weights` may hold `"kernel"`
        in any layout `rules.dense_forward` takes, and `"bias"`).

        Returns:
            A `rules.LocalError` (inputs, outputs, `dL/dz`, loss, scores).
        """
        if not self.built:
            self.build(tuple(inputs.shape))
        weights = weights or {}
        kernel = weights.get("kernel", self.kernel)
        bias = weights.get("bias", self._bias())
        return rules.local_error(
            *rules.dense_forward(inputs, kernel, bias, self.rule),
            targets,
            self.class_vectors,
            self.rule,
            sample_weight,
        )

    def parameter_gradient(self, error, name):
        """`dL/dkernel = h^T dL/dz` or `dL/dbias = sum(dL/dz)`."""
        if name == "kernel":
            return rules.kernel_gradient(error.inputs, error.grad_z)
        if name == "bias":
            return rules.bias_gradient(error.grad_z)
        raise ValueError(f"SpelaDense has no trainable weight {name!r}.")

    def gradient_bound(self, error):
        """`rules.gradient_bound`: from activations, no gradient needed."""
        return rules.gradient_bound(error, has_bias=self.use_bias)

    def kernel_gradient_factors(self, error):
        """`(h, dL/dz)`: `dL/dkernel = h^T dL/dz`."""
        return error.inputs, error.grad_z

    def _bias(self):
        return self.bias if self.use_bias else None

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": self.rule.activation,
                "negative_slope": self.rule.negative_slope,
                "local_loss": self.rule.local_loss,
                "temperature": self.rule.temperature,
                "normalize_inputs": self.rule.normalize_inputs,
                "binary_weights": self.rule.binary_weights,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
            }
        )
        return config
