"""The one error of keras_spela.datasets."""


class DatasetError(OSError):
    """A data set that cannot be read: not on this machine and not
    downloadable now, or a damaged file (the message names it and the fix)."""
