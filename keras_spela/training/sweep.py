"""The one walk over a SpelaModel's layers: the single forward pass."""

import tensorflow as tf

from keras_spela.core import acceptance
from keras_spela.layers import is_spela_layer


def sweep(
    stack,
    x,
    targets=None,
    sample_weight=None,
    learning=(),
    training=False,
    weights=None,
    ordered=False,
):
    """Runs the layers in order, once, and every learning layer's local loss.

    Changes no variable. Layer k's input is a constant (`stop_gradient`):
    nothing flows from layer k+1's loss into layer k.

    Args:
        stack: the layers, in order.
        x: a batch of inputs.
        targets: one-hot labels `(batch, num_classes)`; needed when
            `learning` names a layer.
        sample_weight: optional `(batch,)` example weights.
        learning: names of the SPELA layers whose local error is computed.
        training: passed to the other layers' `call` (Dropout, BatchNorm).
        weights: optional `{layer name: {weight name: value}}` used instead of
            those layers' own weights (`SpelaLayer.local_error`).
        ordered: also take each learning layer's parameter gradients and
            acceptance check (`LocalError.gradients`, `.check`) before the
            next layer runs, so that a layer's input and `dL/dz` are freed
            then: the step's activation memory stays one layer's, whatever
            the depth (TensorFlow would otherwise run the cheap forward
            chain first and keep every layer's input alive; measured
            without XLA, which schedules on its own). It serialises the
            layers: `compile(ordered_steps=True)` asks for it.

    Returns:
        `(errors, scores)`: `{layer name: rules.LocalError}` for the layers in
        `learning` and `{layer name: (batch, num_classes) class scores}` for
        every SPELA layer.
    """
    weights = weights or {}
    errors, scores = {}, {}
    h = x
    for layer in stack:
        if is_spela_layer(layer) and layer.name in learning:
            # What Keras' __call__ would do: inputs in the layer's dtype.
            h = tf.cast(h, layer.compute_dtype)
            error = layer.local_error(h, targets, sample_weight, weights.get(layer.name))
            h = error.outputs
            if ordered:
                error = error._replace(
                    gradients=layer.parameter_gradients(error),
                    check=acceptance.layer_check(layer, error),
                )
                with tf.control_dependencies(error.gradients + [error.check]):
                    h = tf.identity(h)
            errors[layer.name] = error
            scores[layer.name] = error.scores
        else:
            h = layer(h, training=training)
            if is_spela_layer(layer):
                scores[layer.name] = layer.class_scores(h)
        h = tf.stop_gradient(h)
    return errors, scores
