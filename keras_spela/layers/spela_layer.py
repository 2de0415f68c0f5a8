"""SpelaLayer: the interface that every kind of SPELA layer implements."""

import numbers

import keras
import numpy as np

from keras_spela.core import arguments
from keras_spela.core import class_vectors as class_vectors_lib
from keras_spela.core import rules


def weight_name(variable):
    """The short name of a layer's weight (`"kernel"`, `"bias"`, ...)."""
    return variable.path.split("/")[-1]


def is_spela_layer(layer):
    """Whether `layer` carries a SPELA local rule (and so is an exit)."""
    return isinstance(layer, SpelaLayer)


class SpelaLayer(keras.layers.Layer):
    """Base class of the SPELA layers: a layer with its own local rule.

    Every SPELA layer owns fixed class vectors (a non-trainable weight) and is
    an exit of the network. `SpelaModel`'s steps, the LiteRT training module
    and the TFLite Micro program use a SPELA layer only through this
    interface, so a new kind of layer plugs in by implementing it:

    - `call(inputs)`: the forward pass (`keras.layers.Layer`).
    - `class_scores(outputs)`: `(batch, num_classes)` class scores of the
      layer's outputs (the base class: cosine to every class vector).
    - `local_error(inputs, targets, sample_weight, weights)`: the forward pass
      and the local loss with its closed-form gradient at the pre-activation,
      a `rules.LocalError`; changes nothing.
    - `parameter_gradient(error, name)`: the closed-form gradient of the
      local loss with respect to the trainable weight `name` ("kernel",
      "bias", ...). `parameter_gradients(error)` lines them up with
      `trainable_variables`.
    - `gradient_bound(error)`: a scalar bound of every entry of the
      parameter gradients (batches whose bound exceeds `rules.MAX_GRADIENT`
      are rejected); the base class takes the exact maximum of
      `parameter_gradients`, a layer may give a cheaper bound.
    - `kernel_gradient_factors(error)` (optional): `(h, g)` with
      `d loss / d kernel = h^T g` for a 2-D `kernel`. Device programs use it
      to update the kernel in blocks (`keras_spela.lite.micro_program`);
      `None` (the default) means the kernel is updated whole.

    Subclasses call `super().__init__(num_classes, class_vectors, seed,
    **kwargs)` and `self.add_class_vectors(dim)` in `build`.

    Args:
        num_classes: number of classes; `SpelaModel` fills it in when None.
        class_vectors: a kind from `class_vectors.KINDS` or an array of shape
            `(num_classes, dim)` with unit rows.
        seed: integer seed of the class vectors (None: numpy's global
            generator, which `keras.utils.set_random_seed` seeds).
    """

    def __init__(self, num_classes=None, class_vectors="coulomb", seed=None, **kwargs):
        # The local rule divides by norms and sums small products: it runs in
        # float32 under any global precision policy, and under a mixed policy
        # given to the layer (float32 variables: mixed_float16 included).
        dtype = kwargs.get("dtype")
        if dtype is None or keras.dtype_policies.get(dtype).variable_dtype == "float32":
            kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if self.compute_dtype != "float32":
            raise ValueError(
                f"SPELA layers compute their local rule in float32; {self.name!r} "
                f"received dtype={dtype!r} (compute dtype {self.compute_dtype}). "
                "Leave dtype unset or give a mixed policy ('mixed_float16'): the "
                "layer then runs in float32, the layers around it in float16."
            )
        if num_classes is not None:
            num_classes = arguments.integer(num_classes, "num_classes", minimum=2)
        self.num_classes = num_classes
        if isinstance(class_vectors, str):
            if class_vectors not in class_vectors_lib.KINDS:
                raise ValueError(
                    f"Unknown class_vectors={class_vectors!r}. Expected one of "
                    f"{class_vectors_lib.KINDS} or an array."
                )
            self.class_vectors_kind = class_vectors
        else:
            self.class_vectors_kind = np.asarray(class_vectors, np.float32)
        if seed is not None:
            seed = arguments.integer(seed, "seed", minimum=0)
        self.seed = seed

    def add_class_vectors(self, dim):
        """Creates the `class_vectors` weight, `(num_classes, dim)`."""
        if self.num_classes is None:
            raise ValueError(
                f"Layer {self.name!r} needs num_classes before it is built: "
                f"pass num_classes= to {type(self).__name__} (needed when it is "
                "called on a keras.Input, in Keras' functional style), or to "
                "SpelaModel with a list of layers."
            )
        seed = self.seed
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        vectors = class_vectors_lib.make_class_vectors(
            self.class_vectors_kind, self.num_classes, dim, seed
        )
        self.class_vectors = self.add_weight(
            name="class_vectors",
            shape=vectors.shape,
            initializer=keras.initializers.Constant(vectors),
            trainable=False,
        )

    def class_scores(self, outputs):
        """Cosine of `outputs` (this layer's outputs) to every class vector.

        Returns:
            `(batch_size, num_classes)` float32 scores in [-1, 1].
        """
        return rules.cosine_scores(outputs, self.class_vectors)

    def local_error(self, inputs, targets, sample_weight=None, weights=None):
        """Runs the forward pass and the local loss on one batch; changes
        nothing.

        Args:
            inputs: this layer's inputs (a constant).
            targets: one-hot labels `(batch, num_classes)` (`rules.one_hot`).
            sample_weight: optional `(batch,)` example weights.
            weights: optional `{weight name: value}` used instead of the
                layer's own weights (a device program passes its variables,
                or a layout of them that `rules` accepts).

        Returns:
            A `rules.LocalError`.
        """
        raise NotImplementedError

    def parameter_gradient(self, error, name):
        """`d loss / d weight` of the trainable weight `name`, in closed form."""
        raise NotImplementedError

    def parameter_gradients(self, error):
        """The gradients of `error`'s local loss, lined up with
        `self.trainable_variables`."""
        return [
            self.parameter_gradient(error, weight_name(variable))
            for variable in self.trainable_variables
        ]

    def gradient_bound(self, error):
        """A bound of `max |gradient|` over `parameter_gradients(error)`
        (those of `error.gradients` when an ordered sweep took them)."""
        gradients = error.gradients
        if gradients is None:
            gradients = self.parameter_gradients(error)
        return rules.largest_magnitude(gradients)

    def kernel_gradient_factors(self, error):
        """`(h, g)` with `d loss / d kernel = h^T g`, or None (see the class
        docstring)."""
        del error
        return None

    def get_config(self):
        config = super().get_config()
        class_vectors = self.class_vectors_kind
        if not isinstance(class_vectors, str):
            class_vectors = class_vectors.tolist()
        config.update(
            {
                "num_classes": self.num_classes,
                "class_vectors": class_vectors,
                "seed": self.seed,
            }
        )
        return config


class KernelSpelaLayer(SpelaLayer):
    """A SPELA layer with a `kernel`, an optional `bias` and a
    `rules.DenseRule` (activation and local loss): what `SpelaDense` and
    `SpelaConv2D` share.

    Subclasses implement `forward_error(inputs, kernel, bias, targets,
    sample_weight)` (the `rules.LocalError` with the given weights) or
    override `local_error` (a layer with further weights, as `SpelaConv2D`),
    implement `kernel_gradient(error)` and `bias_gradient(error)`, and call
    `add_kernel_and_bias(kernel_shape, units)` in `build`.
    """

    def __init__(
        self,
        num_classes=None,
        class_vectors="coulomb",
        seed=None,
        activation="leaky_relu",
        negative_slope=0.01,
        local_loss="softmax_cosine",
        temperature=0.1,
        use_bias=True,
        kernel_initializer="he_uniform",
        bias_initializer="zeros",
        rule_options=None,
        **kwargs,
    ):
        super().__init__(num_classes, class_vectors, seed, **kwargs)
        self.dense_rule = rules.DenseRule(
            activation=activation,
            negative_slope=float(negative_slope),
            local_loss=local_loss,
            temperature=(
                float(temperature)
                if isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
                else temperature
            ),
            **(rule_options or {}),
        )
        self.use_bias = bool(use_bias)
        if isinstance(kernel_initializer, str) and self.seed is not None:
            kernel_initializer = keras.initializers.get(
                {"class_name": kernel_initializer, "config": {"seed": self.seed}}
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def add_kernel_and_bias(self, kernel_shape, units, class_vectors=True):
        """Creates `kernel`, `bias` (when `use_bias`) and, unless
        `class_vectors=False`, the class vectors (`units` wide), in that
        order."""
        self.kernel = self.add_weight(
            name="kernel", shape=kernel_shape, initializer=self.kernel_initializer
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(units,), initializer=self.bias_initializer
            )
        if class_vectors:
            self.add_class_vectors(units)

    def local_error(self, inputs, targets, sample_weight=None, weights=None):
        """See `SpelaLayer.local_error`; `weights` may hold `"kernel"` (in any
        layout the layer's rule takes) and `"bias"`."""
        if not self.built:
            self.build(tuple(inputs.shape))
        weights = weights or {}
        kernel = weights.get("kernel", self.kernel)
        bias = weights.get("bias", self.bias if self.use_bias else None)
        return self.forward_error(inputs, kernel, bias, targets, sample_weight)

    def parameter_gradient(self, error, name):
        if name == "kernel":
            return self.kernel_gradient(error)
        if name == "bias":
            return self.bias_gradient(error)
        raise ValueError(f"{type(self).__name__} has no trainable weight {name!r}.")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "activation": self.dense_rule.activation,
                "negative_slope": self.dense_rule.negative_slope,
                "local_loss": self.dense_rule.local_loss,
                "temperature": self.dense_rule.temperature,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
