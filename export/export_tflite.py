"""Exports a saved SpelaModel (.keras) for on-device training.

Writes a LiteRT model with `train`, `infer`, `get_weights` and `set_weights`
signatures and, on request, a TFLite Micro train step; prints the operators
(builtins only, checked), the file sizes and the measured micro arena.

    python export/export_tflite.py --model spela.keras --output spela.tflite \\
        --batch_size 16 --optimizer adam --learning_rate 1e-3 \\
        --train_layers 1 --micro_output spela_micro.tflite

A user mistake (a missing or wrong file, a .keras file without a SpelaModel,
a bad flag value, a model the exporters refuse) ends with one `error:` line
on stderr and exit code 1 (2 for bad flags). TensorFlow's and the
converter's own log lines are captured and shown only if the export fails;
`--verbose` shows everything.
"""

import os
import sys
import zipfile

from absl import app
from absl import flags

# What TensorFlow's C++ code prints straight to stderr is captured as on the device.
from keras_spela_device import capture_native_stderr

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Path of a .keras file holding a SpelaModel.")
flags.DEFINE_string("output", None, "Path of the LiteRT .tflite file to write.")
flags.DEFINE_string("micro_output", None, "Also write a TFLite Micro train step here.")
flags.DEFINE_integer("batch_size", 16, "Static batch size of the train signature.", lower_bound=1)
flags.DEFINE_enum(
    "optimizer",
    "model",
    ["model", "sgd", "momentum", "adam"],
    "Device optimizer: the model's compiled one, or SGD / SGD with momentum / Adam.",
)
flags.DEFINE_float("learning_rate", None, "Device learning rate (default: the optimizer's).")
flags.DEFINE_float(
    "momentum", 0.9, "Momentum of --optimizer=momentum.", lower_bound=0.0, upper_bound=1.0
)
flags.DEFINE_string(
    "train_layers",
    "all",
    "SPELA layers that learn on the device: 'all', an integer k (the last k), "
    "or comma-separated layer names.",
)
flags.DEFINE_bool("quantize_frozen", False, "Store frozen layers as int8 constants.")
flags.DEFINE_bool(
    "verbose",
    False,
    "Show TensorFlow's and the converter's own log lines (captured by default).",
)
flags.mark_flags_as_required(["model", "output"])
flags.register_validator(
    "learning_rate",
    lambda value: value is None or value > 0,
    message="--learning_rate must be a positive number.",
)
flags.register_validator(
    "train_layers",
    lambda value: bool(value and value.strip()),
    message="--train_layers must be 'all', an integer or layer names.",
)

PROG = os.path.basename(__file__)


class UsageError(Exception):
    """A mistake of the user: reported as one line, exit code 1."""


def device_optimizer(name, learning_rate, momentum):
    """The DeviceOptimizer for a --optimizer flag value (None: the model's)."""
    import keras_spela

    if name == "model":
        return None
    kind = "adam" if name == "adam" else "sgd"
    rate = learning_rate if learning_rate is not None else (1e-3 if kind == "adam" else 0.1)
    settings = {"momentum": momentum} if name == "momentum" else {}
    return keras_spela.DeviceOptimizer(kind, rate, **settings)


def parse_train_layers(value):
    if value == "all":
        return "all"
    if value.isdigit():
        return int(value)
    return [name.strip() for name in value.split(",") if name.strip()]


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def _parse_flags(argv):
    """absl's flag parsing, with one error line instead of two (exit 2)."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        sys.stderr.write(f"{PROG}: error: {_one_line(error)} (see --helpfull)\n")
        sys.exit(2)


def quiet_tensorflow(verbose):
    """Sets TensorFlow's log level and imports it with its import-time C++
    notices (oneDNN, CUDA, CPU features, absl) captured; returns the
    modules `(keras, keras_spela)`. Call before anything imports TensorFlow."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with capture_native_stderr(not verbose):
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA probing prints here, once
        import keras

        import keras_spela
    if not verbose:
        from absl import logging

        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO logs
    return keras, keras_spela


def _check_model_file(path):
    """UsageError for a --model that cannot be a saved .keras model."""
    if not os.path.exists(path):
        raise UsageError(f"--model {path}: no such file")
    if not os.path.isfile(path):
        raise UsageError(f"--model {path}: not a file; give the .keras file saved by model.save()")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        raise UsageError(
            f"--model {path}: is an exported .tflite model; --model takes the .keras "
            "file saved by SpelaModel.save()"
        )
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise UsageError(f"--model {path}: not a .keras zip archive (saved by model.save())")


def _check_outputs():
    for flag in ("output", "micro_output"):
        path = getattr(FLAGS, flag)
        if path is None:
            continue
        if os.path.isdir(path):
            raise UsageError(f"--{flag} {path}: is a directory; give the .tflite file to write")
        if os.path.abspath(path) == os.path.abspath(FLAGS.model):
            raise UsageError(f"--{flag} {path}: would overwrite --model")
    if FLAGS.micro_output and os.path.abspath(FLAGS.micro_output) == os.path.abspath(FLAGS.output):
        raise UsageError("--micro_output and --output name the same file")


def export(keras, keras_spela):
    verbose = FLAGS.verbose
    with capture_native_stderr(not verbose):
        try:
            model = keras.saving.load_model(FLAGS.model)
        except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
            raise UsageError(
                f"--model {FLAGS.model}: cannot be loaded as a Keras model: {_one_line(error)}"
            ) from None
    if not isinstance(model, keras_spela.SpelaModel):
        raise UsageError(
            f"--model {FLAGS.model}: holds a {type(model).__name__}, not a keras_spela "
            "SpelaModel; build and train a SpelaModel, save it with model.save(), and "
            "export that"
        )
    try:
        optimizer = device_optimizer(FLAGS.optimizer, FLAGS.learning_rate, FLAGS.momentum)
    except ValueError as error:
        raise UsageError(f"--optimizer {FLAGS.optimizer}: {_one_line(error)}") from None
    learning_rate = FLAGS.learning_rate if optimizer is None else None
    settings = dict(
        batch_size=FLAGS.batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        train_layers=parse_train_layers(FLAGS.train_layers),
    )
    try:
        with capture_native_stderr(not verbose):
            exported = keras_spela.export_tflite(
                model, FLAGS.output, quantize_frozen=FLAGS.quantize_frozen, **settings
            )
    except ValueError as error:  # the exporter's refusals: settings or model
        raise UsageError(f"cannot export {FLAGS.model}: {_one_line(error)}") from None
    except OSError as error:
        raise UsageError(
            f"--output {FLAGS.output}: cannot be written: {_one_line(error)}"
        ) from None
    print(
        f"wrote {exported.path}: {exported.size_bytes} bytes, "
        f"{sum(exported.operators.values())} operators, builtins only"
    )
    print("  operators:", dict(sorted(exported.operators.items())))
    print("  learned weights:", list(exported.weight_names))
    print("  optimizer state:", list(exported.state_names))
    if FLAGS.micro_output:
        try:
            with capture_native_stderr(not verbose):
                micro = keras_spela.export_tflite_micro(model, FLAGS.micro_output, **settings)
        except ValueError as error:
            raise UsageError(
                f"cannot export {FLAGS.model} for TFLite Micro: {_one_line(error)}"
            ) from None
        except OSError as error:
            raise UsageError(
                f"--micro_output {FLAGS.micro_output}: cannot be written: {_one_line(error)}"
            ) from None
        print(
            f"wrote {micro.path}: {micro.size_bytes} bytes, arena "
            f"{micro.arena_bytes} bytes; inference model {micro.inference_path}"
        )
        print(f"  inputs (index order): {micro.inputs}; outputs: {micro.outputs}")
        print(f"  TFLite Micro arena: {micro.arena_bytes} bytes")


def main(argv):
    try:
        if len(argv) > 1:
            raise UsageError(f"unexpected arguments {argv[1:]}; every setting is a --flag")
        _check_model_file(FLAGS.model)
        _check_outputs()
        keras, keras_spela = quiet_tensorflow(FLAGS.verbose)
        export(keras, keras_spela)
    except (UsageError, OSError) as error:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: error: {_one_line(error)}\n")
        return 1
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
