"""On-device training export: LiteRT / tflite-runtime and TFLite Micro."""

from keras_spela.lite.exporter import export_tflite
from keras_spela.lite.flatbuffer_ops import check_builtin_only
from keras_spela.lite.flatbuffer_ops import read_operators
from keras_spela.lite.micro_exporter import export_tflite_micro
from keras_spela.lite.optimizers import DeviceOptimizer

__all__ = [
    "DeviceOptimizer",
    "check_builtin_only",
    "export_tflite",
    "export_tflite_micro",
    "read_operators",
]
