"""Exports a saved SpelaModel (.keras) for on-device training.

Writes a LiteRT model with `train`, `infer`, `get_weights` and `set_weights`
signatures and, on request, a TFLite Micro train step; prints the operators
(builtins only, checked), the file sizes and the measured micro arena.

    python export/export_tflite.py --model spela.keras --output spela.tflite \\
        --batch_size 16 --optimizer adam --learning_rate 1e-3 \\
        --train_layers 1 --micro_output spela_micro.tflite
"""

import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Path of a .keras file holding a SpelaModel.")
flags.DEFINE_string("output", None, "Path of the LiteRT .tflite file to write.")
flags.DEFINE_string("micro_output", None, "Also write a TFLite Micro train step here.")
flags.DEFINE_integer("batch_size", 16, "Static batch size of the train signature.")
flags.DEFINE_enum(
    "optimizer", "model", ["model", "sgd", "momentum", "adam"],
    "Device optimizer: the model's compiled one, or SGD / SGD with momentum / Adam.",
)
flags.DEFINE_float("learning_rate", None, "Device learning rate (default: the optimizer's).")
flags.DEFINE_float("momentum", 0.9, "Momentum of --optimizer=momentum.")
flags.DEFINE_string(
    "train_layers", "all",
    "SPELA layers that learn on the device: 'all', an integer k (the last k), "
    "or comma-separated layer names.",
)
flags.DEFINE_bool("quantize_frozen", False, "Store frozen layers as int8 constants.")
flags.mark_flags_as_required(["model", "output"])


def device_optimizer(name, learning_rate, momentum):
    """The DeviceOptimizer for a --optimizer flag value (None: the model's)."""
    import keras_spela

    if name == "model":
        return None
    kind = "adam" if name == "adam" else "sgd"
    rate = learning_rate if learning_rate is not None else (1e-3 if kind == "adam" else 0.1)
    return keras_spela.DeviceOptimizer(
        kind, rate, momentum=momentum if name == "momentum" else 0.0
    )


def parse_train_layers(value):
    if value == "all":
        return "all"
    if value.isdigit():
        return int(value)
    return [name.strip() for name in value.split(",") if name.strip()]


def main(argv):
    del argv
    import keras

    import keras_spela

    model = keras.saving.load_model(FLAGS.model)
    optimizer = device_optimizer(FLAGS.optimizer, FLAGS.learning_rate, FLAGS.momentum)
    learning_rate = FLAGS.learning_rate if optimizer is None else None
    train_layers = parse_train_layers(FLAGS.train_layers)
    settings = dict(
        batch_size=FLAGS.batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        train_layers=train_layers,
    )
    exported = keras_spela.export_tflite(
        model, FLAGS.output, quantize_frozen=FLAGS.quantize_frozen, **settings
    )
    print(f"wrote {exported.path}: {exported.size_bytes} bytes, "
          f"{sum(exported.operators.values())} operators, builtins only")
    print("  operators:", dict(sorted(exported.operators.items())))
    print("  learned weights:", list(exported.weight_names))
    print("  optimizer state:", list(exported.state_names))
    if FLAGS.micro_output:
        micro = keras_spela.export_tflite_micro(model, FLAGS.micro_output, **settings)
        print(f"wrote {micro.path}: {micro.size_bytes} bytes, arena "
              f"{micro.arena_bytes} bytes; inference model {micro.inference_path}")
        print(f"  inputs (index order): {micro.inputs}; outputs: {micro.outputs}")
        print(f"  TFLite Micro arena: {micro.arena_bytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
