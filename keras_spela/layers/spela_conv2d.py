"""SpelaConv2D: a convolutional SPELA layer."""

import functools

import keras
import numpy as np

from keras_spela.core import arguments
from keras_spela.core import class_vectors as class_vectors_lib
from keras_spela.core import conv_rules
from keras_spela.core import rules
from keras_spela.layers.spela_layer import KernelSpelaLayer

OBJECTIVES = ("readout", "pooled", "projection")
# The default local loss of each objective (the read-out's is always its
# softmax cross-entropy).
OBJECTIVE_LOSSES = {"pooled": "softmax_cosine", "projection": "squared_cosine"}
# The paper's class grouping: 2 to 9 groups per channel.
DEFAULT_GROUPS = (2, 9)


@keras.saving.register_keras_serializable(package="keras_spela")
class SpelaConv2D(KernelSpelaLayer):
    """A 2-D convolution block trained by its own SPELA local loss.

    The forward pass is `outputs = maxpool(activation(normalize(conv(inputs,
    kernel)) + bias))` (`normalization` is off by default). Every
    `SpelaConv2D` is an exit: it scores the classes from its outputs, and its
    local loss trains its own weights only. The gradients are written in
    closed form over the rule's primitives (`keras_spela.core.conv_rules`,
    `keras_spela.core.primitives`): the filter gradient and the max-pool gradient
    run on TensorFlow's fused kernels on the host and on TFLite builtins in
    every export. No gradient flows to earlier layers.

    Three local objectives:

    - `"readout"` (default): the outputs average-pooled to a grid of
      `readout_grid` cells (`(batch, filters * cells)` features), a trainable
      linear read-out to one logit per class (`readout_kernel`,
      `readout_bias`) and the softmax cross-entropy of those logits (the
      "pred" loss of Nokland & Eidnes, 2019). The class scores are the
      read-out's softmax probabilities. The best objective measured on real
      images (`benchmarks/fashion_mnist.py`).
    - `"pooled"`: the channel means of the outputs (global average pooling)
      against fixed class vectors in `R^filters`, with `local_loss` (default
      `"softmax_cosine"`), as for `SpelaDense`.
    - `"projection"`: the paper's. Every channel `c` is flattened and
      projected by its own trainable matrix `projection[c]` `(H'W',
      projection_dim)`; the classes are dealt at random onto a few groups per
      channel, each group a simplex vertex in `R^projection_dim`, and the loss
      is the mean over channels of `local_loss` (default `"squared_cosine"`,
      the paper's `(1 - cos)^2`) to the vector of the true class's group. The
      class scores are the channel-mean cosines to each class's group vector.

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
        local_loss: `"pooled"` and `"projection"` only: as for
            `SpelaDense`; None: the objective's default.
        temperature: softmax temperature of `"softmax_cosine"`.
        normalization: None, `"layer"` (each example's convolution output
            scaled to zero mean and unit variance over height, width and
            channels) or `"instance"` (the same per channel), before the bias
            and the activation. Per example, with no running statistics: the
            same on the host and on a device, at any batch size (the
            gradient through it is in closed form too).
        objective: `"readout"`, `"pooled"` or `"projection"` (see above).
        readout_grid: `"readout"` only: the grid of the read-out's average
            pooling, an integer or a pair `(rows, columns)` (at most the
            output's size; cells overlap where they do not divide it).
        projection_dim: `"projection"` only: the dimension of each channel's
            projection (the paper: 100).
        groups: `"projection"` only: the number of class groups per channel,
            an integer or a range `(low, high)` drawn from per channel; None:
            the paper's 2 to 9, at most the number of classes (and
            `projection_dim + 1`).
        class_vectors: `"pooled"` only, as for `SpelaDense`; vectors live in
            `R^filters`.
        use_bias: whether the layer has a bias.
        kernel_initializer, bias_initializer: initializers.
        seed: integer seed of the class vectors, the grouping, the projection,
            the read-out and a string-named kernel initializer.

    Input shape:
        `(batch_size, height, width, channels)`.

    Output shape:
        `(batch_size, pooled_height, pooled_width, filters)`.

    Example:

    ```python
    model = keras_spela.SpelaModel(
        [keras.Input((20, 20, 1)), SpelaConv2D(32, 5, padding="same"),
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
        local_loss=None,
        temperature=0.1,
        normalization=None,
        objective="readout",
        readout_grid=4,
        projection_dim=100,
        groups=None,
        class_vectors="coulomb",
        use_bias=True,
        kernel_initializer="he_uniform",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"Unknown objective={objective!r}. Expected one of {OBJECTIVES}.")
        if normalization is not None and normalization not in conv_rules.NORMALIZATIONS:
            raise ValueError(
                f"Unknown normalization={normalization!r}. Expected None or one of "
                f"{tuple(conv_rules.NORMALIZATIONS)}."
            )
        if objective == "readout" and local_loss is not None:
            raise ValueError(
                "objective='readout' learns with the softmax cross-entropy of its "
                f"read-out; local_loss={local_loss!r} applies to the 'pooled' and "
                "'projection' objectives. Leave local_loss unset."
            )
        if local_loss is None:
            local_loss = OBJECTIVE_LOSSES.get(objective, "softmax_cosine")
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
                f"padding must be one of {conv_rules.PADDINGS}, received padding={padding!r}."
            )
        self.objective = objective
        self.readout_grid = arguments.pair(readout_grid, "readout_grid")
        self.projection_dim = arguments.integer(projection_dim, "projection_dim", minimum=2)
        self.groups = None if groups is None else arguments.group_range(groups)
        self.rule = conv_rules.ConvRule(
            kernel_size=arguments.pair(kernel_size, "kernel_size"),
            strides=arguments.pair(strides, "strides"),
            padding=padding,
            pool_size=arguments.pair(pool_size, "pool_size"),
            dense=self.dense_rule,
            normalization=normalization,
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "SpelaConv2D expects images of shape (batch, height, width, "
                f"channels), received {tuple(input_shape)}. Reshape 1-D signals "
                "to (batch, 1, length, channels) and use kernel_size=(1, k) and "
                "pool_size=(1, p)."
            )
        if None in tuple(input_shape)[1:]:
            raise ValueError(
                "SpelaConv2D needs a known height, width and number of channels "
                f"(its rule and its exports use static shapes), received input "
                f"shape {tuple(input_shape)}. Give keras.Input((height, width, "
                "channels)), with images of one size."
            )
        kernel, pool = self.rule.kernel_size, self.rule.pool_size
        if input_shape[1] == 1 and (
            pool[0] > 1 or (kernel[0] > 1 and self.rule.padding == "valid")
        ):
            raise ValueError(
                f"SpelaConv2D received inputs of height 1 {tuple(input_shape)}, a "
                f"1-D signal, with kernel_size={kernel} and pool_size={pool}: use "
                "kernel_size=(1, k) and pool_size=(1, p) for 1-D signals."
            )
        _, pooled = conv_rules.output_shapes(input_shape, self.rule)  # raises when too small
        self.add_kernel_and_bias(
            self.rule.kernel_size + (input_shape[-1], self.filters),
            self.filters,
            class_vectors=self.objective == "pooled",
        )
        self.projection = None
        self.readout_kernel = self.readout_bias = None
        if self.objective == "projection":
            self._add_projection(pooled[0] * pooled[1])
        elif self.objective == "readout":
            self._add_readout(pooled)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: input_shape[-1]})

    def _add_projection(self, positions):
        """The `"projection"` objective's trainable `projection` `(filters,
        positions, projection_dim)` and its grouped class vectors
        `(filters, num_classes, projection_dim)`."""
        if self.num_classes is None:
            raise ValueError(
                f"Layer {self.name!r} needs num_classes before it is built: "
                "pass num_classes= to SpelaConv2D or to SpelaModel."
            )
        seed = self.seed if self.seed is not None else int(np.random.randint(0, 2**31 - 1))
        groups = self.groups or (
            DEFAULT_GROUPS[0],
            min(DEFAULT_GROUPS[1], self.num_classes, self.projection_dim + 1),
        )
        vectors = class_vectors_lib.grouped_class_vectors(
            self.num_classes, self.filters, self.projection_dim, groups, seed
        )
        self.projection = self.add_weight(
            name="projection",
            shape=(self.filters, positions, self.projection_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / np.sqrt(positions), seed=seed),
        )
        self.class_vectors = self.add_weight(
            name="class_vectors",
            shape=vectors.shape,
            initializer=keras.initializers.Constant(vectors),
            trainable=False,
        )

    def _add_readout(self, pooled):
        """The `"readout"` objective's trainable `readout_kernel` `(filters *
        cells, num_classes)` and `readout_bias` `(num_classes,)`."""
        if self.num_classes is None:
            raise ValueError(
                f"Layer {self.name!r} needs num_classes before it is built: "
                "pass num_classes= to SpelaConv2D or to SpelaModel."
            )
        matrix = conv_rules.grid_pooling_matrix(pooled[0], pooled[1], self.readout_grid)
        self.readout_kernel = self.add_weight(
            name="readout_kernel",
            shape=(self.filters * matrix.shape[1], self.num_classes),
            initializer=keras.initializers.GlorotUniform(seed=self.seed),
        )
        self.readout_bias = self.add_weight(
            name="readout_bias", shape=(self.num_classes,), initializer="zeros"
        )

    def call(self, inputs):
        bias = self.bias if self.use_bias else None
        return conv_rules.conv_forward(inputs, self.kernel, bias, self.rule)[3]

    def compute_output_shape(self, input_shape):
        _, pooled = conv_rules.output_shapes(input_shape, self.rule)
        return (input_shape[0],) + pooled + (self.filters,)

    def class_scores(self, outputs):
        """`(batch, num_classes)` scores: the read-out's softmax
        probabilities (`"readout"`), the cosines of the channel means of
        `outputs` to the class vectors (`"pooled"`), or the channel mean of
        the projections' cosines to the group vectors (`"projection"`)."""
        if self.objective == "readout":
            return conv_rules.readout_scores(
                outputs, self.readout_kernel, self.readout_bias, self.readout_grid
            )
        if self.projection is not None:
            return conv_rules.grouped_scores(outputs, self.class_vectors, self.projection)
        return rules.cosine_scores(conv_rules.pooled_features(outputs), self.class_vectors)

    def local_error(self, inputs, targets, sample_weight=None, weights=None):
        """See `SpelaLayer.local_error`; `weights` may hold any trainable
        weight by name (`"kernel"`, `"bias"`, `"projection"`,
        `"readout_kernel"`, `"readout_bias"`)."""
        if not self.built:
            self.build(tuple(inputs.shape))
        weights = weights or {}

        def weight(name):
            return weights.get(name, getattr(self, name))

        bias = weight("bias") if self.use_bias else None
        forward = conv_rules.conv_forward(inputs, weight("kernel"), bias, self.rule)
        if self.objective == "readout":
            objective = functools.partial(
                conv_rules.readout_objective,
                targets=targets,
                readout_kernel=weight("readout_kernel"),
                readout_bias=weight("readout_bias"),
                grid=self.readout_grid,
                sample_weight=sample_weight,
            )
        elif self.objective == "projection":
            objective = functools.partial(
                conv_rules.projection_objective,
                targets=targets,
                class_vectors=self.class_vectors,
                projection=weight("projection"),
                rule=self.rule,
                sample_weight=sample_weight,
            )
        else:
            objective = functools.partial(
                conv_rules.pooled_objective,
                targets=targets,
                class_vectors=self.class_vectors,
                rule=self.rule,
                sample_weight=sample_weight,
            )
        return conv_rules.conv_local_error(*forward, self.rule, objective)

    def parameter_gradient(self, error, name):
        if name == "projection":
            return conv_rules.projection_gradient(error)
        if name in ("readout_kernel", "readout_bias"):
            return conv_rules.readout_gradients(error)[name == "readout_bias"]
        return super().parameter_gradient(error, name)

    def kernel_gradient(self, error):
        """`dL/dkernel`: one convolution of rearranged operands."""
        return conv_rules.conv_kernel_gradient(
            error.inputs, conv_rules.conv_gradient(error), self.rule
        )

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
                "normalization": self.rule.normalization,
                "objective": self.objective,
                "readout_grid": self.readout_grid,
                "projection_dim": self.projection_dim,
                "groups": self.groups,
            }
        )
        if self.objective == "readout":
            config["local_loss"] = None
        return config
