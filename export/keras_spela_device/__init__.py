"""keras_spela_device: train exported keras_spela models on a device.

No TensorFlow: NumPy, and the runtime that a model runs on (LiteRT,
tflite-runtime or TFLite Micro, extras of `pip install ./export`).

Example:

```python
from keras_spela_device import DeviceTrainer

trainer = DeviceTrainer("spela.tflite")   # LiteRT, else tflite-runtime
trainer.fit(x_new, y_new, epochs=3)
trainer.evaluate(x_test, y_test)
trainer.save_weights("personal.npz")
```

Modules: `contract` (every name an export and its device side share),
`backends` (one module per runtime, `backends.REGISTRY`), `trainer`
(DeviceTrainer), `tflite_file` (the `.tflite` reader), `cli` (the
`keras-spela-device` command), `flower_client` / `flower_server` (Flower).
"""

from keras_spela_device import contract
from keras_spela_device.backends import RUNTIMES
from keras_spela_device.errors import DeviceTrainingError
from keras_spela_device.errors import ModelFileError
from keras_spela_device.errors import RuntimeUnavailableError
from keras_spela_device.native_stderr import capture_native_stderr
from keras_spela_device.npz import load_npz
from keras_spela_device.trainer import DeviceTrainer

__version__ = "0.1.0"

__all__ = [
    "DeviceTrainer",
    "DeviceTrainingError",
    "ModelFileError",
    "RUNTIMES",
    "RuntimeUnavailableError",
    "capture_native_stderr",
    "contract",
    "load_npz",
]
