"""What every example does once its flags are checked (`example_flags`):
TensorFlow, Keras and keras_spela imported quietly (their C++ log lines
captured and shown only if the import fails) unless the command line has
--verbose.

    from example_setup import VERBOSE, keras, keras_spela, tf
"""

import os
import pathlib
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ logging is configured when TensorFlow is imported, before
# absl parses the flags: --verbose is looked up by hand here.
VERBOSE = any(arg in ("--verbose", "--verbose=true", "--verbose=1") for arg in sys.argv[1:])
if not VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no INFO/WARNING lines

REPO = pathlib.Path(__file__).resolve().parents[1]
# The device package (numpy only), installed with keras_spela.
from keras_spela_device import capture_native_stderr  # noqa: E402

# Importing TensorFlow prints oneDNN, CUDA and CPU-feature notices from C++
# straight to stderr, and so does its first look for a GPU.
with capture_native_stderr(not VERBOSE):
    import tensorflow as tf

    tf.config.list_physical_devices()
    import keras

    try:
        import keras_spela
    except ImportError:  # Running from a source checkout without installing.
        sys.path.insert(0, str(REPO))
        import keras_spela

# absl's log handler, created during the import, holds the temporary stderr
# stream of the capture (closed now): point it at the real one.
from absl import logging as _absl_logging  # noqa: E402

_absl_logging.get_absl_handler().python_handler.stream = sys.stderr


__all__ = [
    "REPO",
    "VERBOSE",
    "capture_native_stderr",
    "keras",
    "keras_spela",
    "tf",
]
