"""What every example does with its flags: absl's parsing, checked before TensorFlow
is imported, so that a bad flag is one `error:` line at once (no import of seconds).

    from example_flags import check_flags, parse_flags, require_positive

    flags.DEFINE_integer("epochs", 20, "Training epochs.", lower_bound=1)
    check_flags(__name__)  # a bad flag ends here, before TensorFlow is imported

    from example_setup import keras, keras_spela  # TensorFlow, quietly
    ...
    app.run(main, flags_parser=parse_flags)

A bad flag value (absl's bounds, types, enums, `require_positive` and the other
registered validators) ends with one line, `<script>: error: ...`, and exit
code 2, as argparse does. No TensorFlow here: absl only.
"""

import math
import pathlib
import sys

from absl import app
from absl import flags


def require_positive(*names):
    """Registers absl validators: each named number flag is finite and > 0 (or None).

    Example:

    >>> require_positive("learning_rate")  # doctest: +SKIP
    """
    for name in names:
        flags.register_validator(
            name,
            lambda value: value is None or (math.isfinite(value) and value > 0),
            message="must be a positive number",
        )


def parse_flags(argv):
    """absl's flag parsing; a bad flag is one line, `<script>: error: ...`, exit code 2.

    `--help` and `--helpfull` print the flags and exit, as under `app.run`.

    Args:
        argv: The command line, `sys.argv`.

    Returns:
        The arguments that are not flags (`app.run` passes them to `main`).

    Example:

    >>> app.run(main, flags_parser=parse_flags)  # doctest: +SKIP
    """
    app.define_help_flags()
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        message = " ".join(str(error).split())
        sys.stderr.write(f"{pathlib.Path(argv[0]).name}: error: {message} (see --helpfull)\n")
        sys.exit(2)


def check_flags(module_name, *checks):
    """Parses the command line now when the example runs as a script.

    Called after the example's flags are defined and before it imports
    TensorFlow; `app.run` parses the same command line again later. Does
    nothing when the example is imported as a module.

    Args:
        module_name: the caller's `__name__`.
        *checks: functions of no argument run after the parsing, for what
            involves several flags; each ends a bad combination with
            `SystemExit("error: ...")`.
    """
    if module_name == "__main__":
        parse_flags(sys.argv)
        for check in checks:
            check()


__all__ = ["check_flags", "parse_flags", "require_positive"]
