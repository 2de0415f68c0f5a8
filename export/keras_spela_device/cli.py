"""The device command line: trains an exported model on a device runtime.

    keras-spela-device --model spela.tflite --data data.npz \\
        --epochs 5 --save_weights weights.npz

(also `python -m keras_spela_device.cli` and `python export/device_trainer.py`),
where `data.npz` holds `x_train`, `y_train` and optionally `x_test`, `y_test`.
A user mistake (a missing or wrong file, bad data, a rejected batch) ends
with one `error:` line on stderr and exit code 1 (2 for bad arguments).
"""

import argparse
import os
import sys

from keras_spela_device import backends
from keras_spela_device.errors import DeviceTrainingError
from keras_spela_device.errors import RuntimeUnavailableError
from keras_spela_device.errors import one_line
from keras_spela_device.npz import load_npz
from keras_spela_device.trainer import DeviceTrainer


def _integer_at_least(minimum, kind):
    """An argparse type: an integer >= `minimum`, named `kind` in errors."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {kind}, received {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {kind}, received {value}")
        return value

    return parse


_positive_int = _integer_at_least(1, "positive integer")
_non_negative_int = _integer_at_least(0, "non-negative integer")


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # One line (argparse would print the whole usage first); exit code 2.
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def _data_arrays(path):
    arrays = load_npz(path, "--data file")
    known = {"x_train", "y_train", "x_test", "y_test"}
    problems = []
    if not {"x_train", "y_train"} <= set(arrays):
        problems.append("it needs x_train and y_train")
    if ("x_test" in arrays) != ("y_test" in arrays):
        problems.append("x_test and y_test go together")
    unknown = sorted(set(arrays) - known)
    if unknown:
        problems.append(f"unknown keys {unknown}")
    if problems:
        raise DeviceTrainingError(
            f"{path}: the --data file holds {sorted(arrays)}; {'; '.join(problems)} "
            f"(keys x_train, y_train and optionally x_test, y_test)"
        )
    return arrays


def _checked_split(trainer, arrays, path, split):
    x_key, y_key = f"x_{split}", f"y_{split}"
    try:
        return trainer._check_arrays(arrays[x_key], arrays[y_key])
    except DeviceTrainingError as error:
        raise DeviceTrainingError(f"{path}: {x_key}/{y_key}: {error}") from None


def _run(args):
    trainer = DeviceTrainer(
        args.model,
        runtime=args.runtime,
        num_threads=args.num_threads,
        description_path=args.description,
        quiet=not args.verbose,
    )
    arrays = _data_arrays(args.data)
    train = _checked_split(trainer, arrays, args.data, "train")
    test = _checked_split(trainer, arrays, args.data, "test") if "x_test" in arrays else None
    backend = trainer._backend
    if args.load_weights and not trainer.sets_weights:
        raise DeviceTrainingError(
            f"--load_weights: {backend.display_name} models have no set_weights (their "
            "weights live in the model); re-export from the host to change them"
        )
    if args.save_weights and not trainer.exposes_weights:
        raise DeviceTrainingError(
            f"--save_weights: {args.model} does not output its weights; {backend.weights_hint}"
        )
    if args.save_weights:
        directory = os.path.dirname(os.path.abspath(args.save_weights))
        if not os.path.isdir(directory):
            raise DeviceTrainingError(
                f"--save_weights {args.save_weights}: the directory {directory} does not exist"
            )
    print(f"runtime {trainer.runtime}, batch {trainer.batch_size}, exits {trainer.exits}")
    if args.load_weights:
        trainer.load_weights(args.load_weights)
    if test is not None:
        print("before:", trainer.evaluate(*test))
    try:
        trainer.fit(*train, epochs=args.epochs, seed=args.seed)
    except DeviceTrainingError as error:
        raise DeviceTrainingError(f"{args.data}: {error}") from None
    if test is not None:
        print("after:", trainer.evaluate(*test))
    if args.save_weights:
        trainer.save_weights(args.save_weights)
        print(f"saved weights to {args.save_weights}")


def main(argv=None):
    """Runs the command line on `argv` (default: `sys.argv[1:]`); returns the
    exit code."""
    prog = os.path.basename(sys.argv[0])
    if prog in ("cli.py", "__main__.py", "-c", ""):  # python -m keras_spela_device.cli
        prog = "keras-spela-device"
    parser = _ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="exported .tflite model")
    parser.add_argument(
        "--data", required=True, help=".npz with x_train, y_train[, x_test, y_test]"
    )
    parser.add_argument("--runtime", default="auto", choices=("auto",) + backends.RUNTIMES)
    parser.add_argument(
        "--description",
        default=None,
        help="JSON description of a micro step (default: <model stem>.json)",
    )
    parser.add_argument("--epochs", type=_positive_int, default=1)
    parser.add_argument("--seed", type=_non_negative_int, default=0)
    parser.add_argument("--num_threads", type=_positive_int, default=None)
    parser.add_argument("--load_weights", default=None)
    parser.add_argument("--save_weights", default=None)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the runtime's own (C++) log lines, normally captured",
    )
    args = parser.parse_args(argv)
    try:
        _run(args)
    except (DeviceTrainingError, RuntimeUnavailableError, NotImplementedError, OSError) as error:
        sys.stdout.flush()
        print(f"{parser.prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
