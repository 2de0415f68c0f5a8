"""SpelaConv2D: a convolutional SPELA layer."""

import keras

from keras_spela import arguments
from keras_spela import conv_rules
from keras_spela import rules
from keras_spela.layers.spela_layer import KernelSpelaLayer

OBJECTIVES = ("pooled",)


@keras.saving.register_keras_serializable(package="keras_spela")
class SpelaConv2D(KernelSpelaLayer):
    """A 2-D convolution block trained by its own SPELA local loss.

    The forward pass is `outputs = maxpool(activation(conv(inputs, kernel) +
    bias))`. The layer's class scores are the cosines between the channel
    means of its outputs (global average pooling) and fixed class vectors in
    `R^filters`, so every `SpelaConv2D` is an exit. Its local loss compares
    those means with the vector of the true class (`local_loss`, as for
    `SpelaDense`); the gradient with respect to its kernel and bias is
    written in closed form with TFLite builtins (`keras_spela.conv_rules`):
    the filter gradient is one convolution of rearranged operands, pooling is
    undone with a mask. No gradient flows to earlier layers.

    Kernels like `(1, k)` train 1-D signals shaped `(1, length, channels)`.

    Args:
        filters: positive integer, the number of output channels.
        kernel_size: an integer or a pair `(kh, kw)`.
        strides: an integer or a pair.
        padding: `"valid"` or `"same"` (as in `keras.layers.Conv2D`).
        pool_size: max-pooling window and stride, an integer or a pair; 1
            for no pooling.
        num_classes: number of classes; `SpelaModel` fills it in when None.
        activation: as for `SpelaDense` (default `"leaky_relu"`).
        negative_slope: slope of `"leaky_relu"` for negative inputs.
        local_loss: as for `SpelaDense` (default `"softmax_cosine"`).
        temperature: softmax temperature of `"softmax_cosine"`.
        objective: `"pooled"`: the loss on the channel means (global
            average pooling) against class vectors in `R^filters`.
        class_vectors: as for `SpelaDense`; vectors live in `R^filters`.
        use_bias: whether the layer has a bias.
        kernel_initializer, bias_initializer: initializers.
        seed: integer seed of the class vectors and of a string-named kernel
            initializer.

    Input shape:
        `(batch_size, height, width, channels)`.

    Output shape:
        `(batch_size, pooled_height, pooled_width, filters)`.

    Example:

    ```python
    model = keras_spela.SpelaModel(
        [keras.Input((20, 20, 1)), SpelaConv2D(32, 3, padding="same"),
         SpelaConv2D(64, 3, padding="same"), keras.layers.Flatten(),
         SpelaDense(256), SpelaDense(34)],
        num_classes=10,
    )
    ```
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        pool_size=2,
        num_classes=None,
        activation="leaky_relu",
        negative_slope=0.01,
        local_loss="softmax_cosine",
        temperature=0.1,
        objective="pooled",
        class_vectors="coulomb",
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
            **kwargs,
        )
        self.filters = arguments.integer(filters, "filters")
        if padding not in conv_rules.PADDINGS:
            raise ValueError(
                f"padding must be one of {conv_rules.PADDINGS}, received "
                f"padding={padding!r}."
            )
        if objective not in OBJECTIVES:
            raise ValueError(
                f"Unknown objective={objective!r}. Expected one of {OBJECTIVES}."
            )
        self.objective = objective
        self.rule = conv_rules.ConvRule(
            kernel_size=arguments.pair(kernel_size, "kernel_size"),
            strides=arguments.pair(strides, "strides"),
            padding=padding,
            pool_size=arguments.pair(pool_size, "pool_size"),
            dense=self.dense_rule,
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "SpelaConv2D expects images of shape (batch, height, width, "
                f"channels), received {tuple(input_shape)}. Reshape 1-D signals "
                "to (batch, 1, length, channels) and use a (1, k) kernel_size."
            )
        if input_shape[-1] is None:
            raise ValueError("SpelaConv2D needs a known number of input channels.")
        conv_rules.output_shapes(input_shape, self.rule)  # raises when too small
        self.add_kernel_and_bias(
            self.rule.kernel_size + (input_shape[-1], self.filters), self.filters
        )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: input_shape[-1]})

    def call(self, inputs):
        bias = self.bias if self.use_bias else None
        return conv_rules.conv_forward(inputs, self.kernel, bias, self.rule)[3]

    def compute_output_shape(self, input_shape):
        _, pooled = conv_rules.output_shapes(input_shape, self.rule)
        return (input_shape[0],) + pooled + (self.filters,)

    def class_scores(self, outputs):
        """Cosine of the channel means of `outputs` to every class vector."""
        return rules.cosine_scores(conv_rules.pooled_features(outputs), self.class_vectors)

    def forward_error(self, inputs, kernel, bias, targets, sample_weight=None):
        """The forward pass and local error with `kernel` and `bias`."""
        return conv_rules.conv_local_error(
            *conv_rules.conv_forward(inputs, kernel, bias, self.rule),
            targets,
            self.class_vectors,
            self.rule,
            sample_weight,
        )

    def kernel_gradient(self, error):
        """`dL/dkernel`: one convolution of rearranged operands."""
        return conv_rules.conv_kernel_gradient(error.inputs, error.grad_z, self.rule)

    def bias_gradient(self, error):
        """`dL/dbias = sum(dL/dz)`."""
        return conv_rules.conv_bias_gradient(error.grad_z)

    def gradient_bound(self, error):
        """`conv_rules.conv_gradient_bound`: from activations."""
        return conv_rules.conv_gradient_bound(error)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.rule.kernel_size,
                "strides": self.rule.strides,
                "padding": self.rule.padding,
                "pool_size": self.rule.pool_size,
                "objective": self.objective,
            }
        )
        return config
