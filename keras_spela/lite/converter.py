"""Conversion to TFLite with builtin operators only, and writing the file."""

import os

import tensorflow as tf


def convert(converter, quantize_frozen):
    """Converts with TFLITE_BUILTINS only and resource variables; a
    converter failure becomes a ValueError that says so."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_enable_resource_variables = True
    # No conversion-metadata entry (converter version, options): writing it
    # unpacks and repacks the whole flatbuffer in Python, and no runtime
    # reads it.
    converter.exclude_conversion_metadata = True
    if quantize_frozen:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # Per-tensor int8 dense weights: per-channel ones need FULLY_CONNECTED
        # version 12, which tflite-runtime 2.14 (and older LiteRT builds on
        # devices) cannot load; the file is also smaller.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    try:
        return converter.convert()
    except Exception as error:  # the converter raises several types
        raise ValueError(
            f"The model cannot be exported with TFLite builtin operators only: {error}"
        ) from error


def write(filepath, data):
    """Writes `data` to `filepath`, creating its directory."""
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    with open(filepath, "wb") as f:
        f.write(data)
