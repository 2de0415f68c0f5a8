"""Reading `.npz` archives (data, weights) with one clear error per problem."""

import os
import zipfile

import numpy as np

from keras_spela_device.errors import DeviceTrainingError
from keras_spela_device.errors import one_line


def load_npz(path, what="data file"):
    """The arrays of an `.npz` file, as a dict.

    Args:
        path: the file.
        what: how messages name it ("weights file", "--data file").

    Raises:
        DeviceTrainingError: naming the file, when it is missing or not an
            `.npz` archive of named arrays.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DeviceTrainingError(
            f"{path}: the {what} does not exist"
            if not os.path.exists(path)
            else f"{path}: the {what} is not a file"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DeviceTrainingError(
            f"{path}: the {what} is not an .npz archive written by np.savez ({one_line(error)})"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DeviceTrainingError(
            f"{path}: the {what} holds one .npy array, not an .npz archive of named arrays (np.savez)"
        )
    try:
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DeviceTrainingError(f"{path}: the {what} is damaged ({one_line(error)})") from None


def npz_path(path):
    """`path` with `.npz` appended when it lacks it (as `np.savez` writes)."""
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"
