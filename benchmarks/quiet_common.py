"""`common` (and so TensorFlow), imported with TensorFlow's C++ notices captured.

TensorFlow prints oneDNN / CUDA notices to file descriptor 2 while it is
imported. This module imports `common` with them captured (they are shown only
if the import fails), then gives absl's log handler, created during that
import, the real stderr. Import it before anything that imports TensorFlow:

    from quiet_common import capture_native_stderr, common
"""

import sys

from keras_spela_device import capture_native_stderr

with capture_native_stderr():
    import common  # sets the Keras backend; import before keras

    common.tf.config.list_physical_devices()

from absl import logging as _absl_logging  # noqa: E402

_absl_logging.get_absl_handler().python_handler.stream = sys.stderr

__all__ = ["capture_native_stderr", "common"]
