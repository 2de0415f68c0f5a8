"""SPELA layers: Keras layers that carry their own local learning rule."""

from keras_spela.layers.spela_conv2d import SpelaConv2D
from keras_spela.layers.spela_dense import SpelaDense
from keras_spela.layers.spela_layer import KernelSpelaLayer
from keras_spela.layers.spela_layer import SpelaLayer
from keras_spela.layers.spela_layer import is_spela_layer
from keras_spela.layers.spela_layer import weight_name

__all__ = [
    "KernelSpelaLayer",
    "SpelaConv2D",
    "SpelaDense",
    "SpelaLayer",
    "is_spela_layer",
    "weight_name",
]
