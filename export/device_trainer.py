"""Trains an exported keras_spela model on a device runtime (no TensorFlow).

    python export/device_trainer.py --model spela.tflite --data data.npz \\
        --epochs 5 --save_weights weights.npz

The command `keras-spela-device` of the device package (`pip install
./export[litert]`), run from the checkout; in Python:
`from keras_spela_device import DeviceTrainer`.
"""

import sys

from keras_spela_device.cli import main

if __name__ == "__main__":
    sys.exit(main())
