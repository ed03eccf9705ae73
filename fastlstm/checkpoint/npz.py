"""numpy ``.npz`` archives (``numpy.savez``): a zip of ``<name>.npy`` records.

Read with ``numpy.load(allow_pickle=False)``, so object arrays are refused.
"""

import zipfile

import numpy as np

from .errors import CorruptCheckpointError, UnsupportedCheckpointError
from .formats import Opened, register
from .tensors import record_from_array
from .zip_records import is_zip


def _matches(head, path):
    if not is_zip(head):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False
    return bool(names) and all(name.endswith(".npy") for name in names)


@register("npz", "numpy .npz archive", _matches)
def open_npz(path):
    tensors = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name in archive.files:
                array = archive[name]
                try:
                    tensors[name] = record_from_array(array)
                except TypeError:
                    raise UnsupportedCheckpointError(
                        f"{path}: array {name!r} has dtype {array.dtype}; only numeric arrays "
                        f"are read") from None
    except UnsupportedCheckpointError:
        raise
    except ValueError as error:  # object arrays, bad .npy headers
        raise UnsupportedCheckpointError(f"{path}: {error}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CorruptCheckpointError(f"{path}: cannot read the archive ({error}); the file is "
                                     f"truncated or corrupt") from None
    return Opened(tensors, flat=True)
