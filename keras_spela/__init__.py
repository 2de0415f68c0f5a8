"""keras_spela: SPELA (Solo Pass Embedded Learning Algorithm) for Keras 3.

Every SPELA layer learns from its own local loss in a single forward pass;
the same closed-form rule trains on the host (`SpelaModel.fit`) and inside
exported TFLite / LiteRT / TFLite Micro models.
"""

import os as _os

_backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        f"keras_spela needs the TensorFlow backend of Keras, found "
        f"KERAS_BACKEND={_backend!r}. Set KERAS_BACKEND=tensorflow."
    )

from keras_spela import datasets
from keras_spela.core import class_vectors
from keras_spela.core import rules
from keras_spela.core.acceptance import BatchRejectedError
from keras_spela.layers import SpelaConv2D
from keras_spela.layers import SpelaDense
from keras_spela.layers import SpelaLayer
from keras_spela.lite import DeviceOptimizer
from keras_spela.lite import export_tflite
from keras_spela.lite import export_tflite_micro
from keras_spela.training.model import SpelaModel
from keras_spela.training.multi_worker import fit_multi_worker
from keras_spela.version import __version__

__all__ = [
    "BatchRejectedError",
    "DeviceOptimizer",
    "SpelaConv2D",
    "SpelaDense",
    "SpelaLayer",
    "SpelaModel",
    "class_vectors",
    "datasets",
    "export_tflite",
    "export_tflite_micro",
    "fit_multi_worker",
    "rules",
    "__version__",
]
