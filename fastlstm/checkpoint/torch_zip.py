"""PyTorch's zip checkpoints (``torch.save`` since 1.6).

Layout: a zip whose records share one top folder ``<name>/``:
``data.pkl`` (the pickled object; tensors reference storages by persistent id
``('storage', storage_type, key, location, numel)``), ``data/<key>`` (each
storage's raw bytes), ``byteorder`` (``little`` or ``big``; little when absent),
plus version records.  TorchScript archives (``torch.jit.save``) share the layout
but add ``constants.pkl`` and ``code/``; they are refused with a hint.
"""

import zipfile

import numpy as np

from .errors import CorruptCheckpointError, UnsupportedCheckpointError
from .formats import Opened, register
from .unpickler import StorageRef, check_storage_id, restricted_load
from .zip_records import ZipRecords, is_zip


def _pickle_records(names):
    """Records named ``data.pkl`` at the top or one folder down."""
    return [name for name in names if name == "data.pkl"
            or (name.endswith("/data.pkl") and name.count("/") == 1)]


def _matches(head, path):
    if not is_zip(head):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(_pickle_records(archive.namelist()))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


@register("torch-zip", "PyTorch checkpoint (torch.save zip format)", _matches)
def open_torch_zip(path):
    records = ZipRecords(path)
    try:
        return _open(records, path)
    except BaseException:
        records.close()
        raise


def _open(records, path):
    pickles = _pickle_records(records.names)
    prefix = pickles[0][: -len("data.pkl")]
    if f"{prefix}constants.pkl" in records or any(name.startswith(f"{prefix}code/")
                                                    for name in records.names):
        raise UnsupportedCheckpointError(
            f"{path}: a TorchScript archive (torch.jit.save), not a weights checkpoint; in PyTorch, "
            f"re-save its weights: torch.save(torch.jit.load(path).state_dict(), 'weights.pt')")
    byteorder = "little"
    if f"{prefix}byteorder" in records:
        byteorder = records.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CorruptCheckpointError(f"{path}: byteorder record says {byteorder!r:.40}")

    def make_storage(pid):
        storage_type, key, location, numel, _ = check_storage_id(pid, 5)
        name = f"{prefix}data/{key}"
        if name not in records:
            raise CorruptCheckpointError(f"storage record {name!r} is missing")
        ref = StorageRef(key, storage_type.dtype, numel, location)
        if records.size(name) < ref.nbytes:
            raise CorruptCheckpointError(
                f"storage record {name!r} holds {records.size(name)} bytes, the pickle "
                f"says {numel} x {storage_type.dtype.name} ({ref.nbytes} bytes)")
        return ref

    cache = {}

    def fetch_storage(ref, dtype):
        if ref.key not in cache:
            cache[ref.key] = records.read(f"{prefix}data/{ref.key}")
        return np.frombuffer(cache[ref.key], dtype=dtype.numpy_dtype(byteorder),
                             count=ref.nbytes // dtype.itemsize)

    tree = restricted_load(records.read(f"{prefix}data.pkl"), make_storage, fetch_storage,
                           f"{path}: {prefix}data.pkl")
    return Opened(tree, flat=False, close=records.close)
