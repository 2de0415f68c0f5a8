"""The one walk over a SpelaModel's layers: the single forward pass."""

import tensorflow as tf

from keras_spela.layers import is_spela_layer


def sweep(stack, x, targets=None, sample_weight=None, learning=(), training=False,
          weights=None):
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
            errors[layer.name] = error
            scores[layer.name] = error.scores
            h = error.outputs
        else:
            h = layer(h, training=training)
            if is_spela_layer(layer):
                scores[layer.name] = layer.class_scores(h)
        h = tf.stop_gradient(h)
    return errors, scores
