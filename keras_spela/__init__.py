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

from keras_spela import class_vectors
from keras_spela import rules
from keras_spela.layers import SpelaDense
from keras_spela.model import SpelaModel
from keras_spela.version import __version__

__all__ = [
    "SpelaDense",
    "SpelaModel",
    "class_vectors",
    "rules",
    "__version__",
]
