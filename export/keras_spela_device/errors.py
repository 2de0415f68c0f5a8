"""The errors of the device side: one line each, naming the problem and the fix."""


class DeviceTrainingError(ValueError):
    """Something DeviceTrainer refuses: a batch, a weight set, a data file or
    a model file. Raised before anything changed (a batch the model itself
    rejected changed nothing either)."""


class ModelFileError(DeviceTrainingError):
    """A file that is not a model DeviceTrainer can run (or a TFLite Micro
    description that does not belong to the model). The message names the
    file and the problem."""


class RuntimeUnavailableError(ImportError):
    """The runtime that the model (or `runtime=`) needs is not installed."""


def one_line(error):
    """An exception's message on one line (its type name if it has none)."""
    return " ".join(str(error).split()) or type(error).__name__
