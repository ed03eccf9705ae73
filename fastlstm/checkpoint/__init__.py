"""Reading weights saved by PyTorch (or numpy, or safetensors) without PyTorch.

``read_state_dict(path)`` -> ``{name: numpy array}``.  The format is found from the
file's first bytes, not its name:

=========================  ===========================================  ====================
format                     signature                                    module
=========================  ===========================================  ====================
PyTorch zip (torch.save)   zip with ``<folder>/data.pkl``               ``torch_zip``
PyTorch legacy             pickled magic number 0x1950a86a20f9469cfc6c  ``torch_legacy``
safetensors                u64 header length, then ``{``                ``safetensors``
numpy .npz                 zip of ``*.npy``                             ``npz``
=========================  ===========================================  ====================

Pickles are read by a restricted unpickler (``unpickler``): only tensor-rebuilding
globals and plain containers are allowed, so reading a checkpoint never runs code
from it and never imports torch.  Every failure is a ``CheckpointError``.
"""

import os

from . import torch_zip, torch_legacy, safetensors, npz  # noqa: F401  (register the formats)
from .containers import select_state_dict
from .errors import (CheckpointError, CheckpointNotFoundError, CorruptCheckpointError,
                     NonFiniteWeightWarning, StateDictError, UnsafeCheckpointError,
                     UnsupportedCheckpointError)
from .formats import HEAD_SIZE, find_format
from .tensors import TensorRecord
from .zip_records import ZipRecords, is_zip

__all__ = ["read_state_dict", "open_checkpoint", "Checkpoint", "TensorRecord",
           "CheckpointError", "CheckpointNotFoundError", "CorruptCheckpointError",
           "UnsafeCheckpointError", "UnsupportedCheckpointError", "StateDictError",
           "NonFiniteWeightWarning"]


class Checkpoint:
    """An open checkpoint: ``tensors`` ``{name: TensorRecord}`` (read on demand),
    ``format`` (a description), ``entry`` (the key path of the state dict inside the file,
    ``()`` when it is the whole file).  Use as a context manager; records cannot be read
    after ``close()``."""

    def __init__(self, path, format, entry, tensors, opened):
        self.path = path
        self.format = format
        self.entry = entry
        self.tensors = tensors
        self._opened = opened

    def close(self):
        self._opened.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _check_path(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        files = sorted(name for name in os.listdir(path)
                       if os.path.isfile(os.path.join(path, name)))
        listing = ", ".join(files[:10]) + (", ..." if len(files) > 10 else "") or "no files"
        raise CheckpointError(f"{path}: is a directory; pass the checkpoint file inside it "
                              f"(it holds: {listing})")
    return path


def _unrecognised(path, head):
    if not head:
        return CorruptCheckpointError(f"{path}: the file is empty; the save was interrupted or the "
                                      f"copy failed: re-save or re-download it")
    if is_zip(head):
        records = ZipRecords(path)  # raises CorruptCheckpointError for a damaged zip
        names = records.names
        records.close()
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return UnsupportedCheckpointError(
            f"{path}: a zip archive that is not a checkpoint (no data.pkl, not all .npy; entries: "
            f"{shown or 'none'}); expected a file written by torch.save or numpy.savez")
    if head[257:262] == b"ustar":
        return UnsupportedCheckpointError(
            f"{path}: a tar archive: the tar checkpoint format of PyTorch < 0.4 is not read; "
            f"load it in PyTorch and re-save it with torch.save(obj, path)")
    if head[:6] == b"\x93NUMPY":
        return UnsupportedCheckpointError(
            f"{path}: a single .npy array, not a state dict; save named arrays with "
            f"numpy.savez(path, **state_dict)")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return UnsupportedCheckpointError(
            f"{path}: a pickle that is not a torch checkpoint (no torch magic number); save "
            f"tensors with torch.save, safetensors or numpy.savez")
    return UnsupportedCheckpointError(
        f"{path}: not a recognised checkpoint (expected a PyTorch checkpoint, a safetensors file "
        f"or a numpy .npz archive); it starts with bytes {head[:16]!r}")


def open_checkpoint(path, key=None):
    """Open ``path`` and find its state dict -> ``Checkpoint`` (close it, or use ``with``).

    key: None to find the weights (the whole file, or an entry such as ``state_dict``,
    ``model_state_dict`` or ``model``), a str naming a top-level entry, or a sequence of
    keys for a nested one.  Only the container structure is read here; tensor data is read
    when a record is.
    """
    path = _check_path(path)
    with open(path, "rb") as file:
        head = file.read(HEAD_SIZE)
    found = find_format(head, path)
    if found is None:
        raise _unrecognised(path, head)
    opened = found.open(path)
    try:
        if opened.flat and key is not None:
            raise CheckpointError(f"{path}: key={key!r} selects an entry of a pickled checkpoint, "
                                  f"but a {found.description} is a flat list of tensors")
        tensors, entry = select_state_dict(opened.tree, key)
    except BaseException:
        opened.close()
        raise
    return Checkpoint(path, found.description, entry, tensors, opened)


def read_state_dict(path, key=None, *, dtype=None):
    """The tensors of a checkpoint as ``{name: numpy.ndarray}``, in the file's order.

    path: a PyTorch checkpoint (zip or legacy format), a safetensors file or a .npz.
    key: the entry holding the weights in a pickled container (see ``open_checkpoint``).
    dtype: None keeps float16/float32/float64 as saved; e.g. ``numpy.float32`` casts every
    floating-point tensor; integer and boolean tensors always keep their type.  bfloat16
    (which numpy lacks) is always widened to float32, exactly.
    torch is neither needed nor imported; a pickle never runs code (``UnsafeCheckpointError``).
    """
    with open_checkpoint(path, key) as checkpoint:
        return {name: record.read(dtype) for name, record in checkpoint.tensors.items()}
