"""What every example does first: TensorFlow, Keras and keras_spela imported
quietly (their C++ log lines captured and shown only if the import fails)
unless the command line has --verbose.

    from example_setup import VERBOSE, keras, keras_spela, tf

`app.run(main, flags_parser=parse_flags)` ends a bad flag value (absl's
bounds, types, enums, `require_positive`) with one `error:` line and exit
code 2, as argparse does.
"""

import math
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


def require_positive(*names):
    """Registers absl validators: each named number flag is finite and > 0 (or None).

    Example:

    >>> require_positive("learning_rate")  # doctest: +SKIP
    """
    from absl import flags

    for name in names:
        flags.register_validator(
            name,
            lambda value: value is None or (math.isfinite(value) and value > 0),
            message="must be a positive number",
        )


def parse_flags(argv):
    """absl's flag parsing; a bad flag is one line, `<script>: error: ...`, exit code 2.

    Args:
        argv: The command line, `sys.argv`.

    Returns:
        The arguments that are not flags (`app.run` passes them to `main`).

    Example:

    >>> app.run(main, flags_parser=parse_flags)  # doctest: +SKIP
    """
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        message = " ".join(str(error).split())
        sys.stderr.write(f"{pathlib.Path(argv[0]).name}: error: {message} (see --helpfull)\n")
        sys.exit(2)


__all__ = [
    "REPO",
    "VERBOSE",
    "capture_native_stderr",
    "keras",
    "keras_spela",
    "parse_flags",
    "require_positive",
    "tf",
]
