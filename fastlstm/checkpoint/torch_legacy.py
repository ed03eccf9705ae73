"""PyTorch's legacy checkpoints (before 1.6, or ``_use_new_zipfile_serialization=False``).

Layout: a sequence of pickles, then raw storages:
  1. the magic number 0x1950a86a20f9469cfc6c
  2. the protocol version 1001
  3. sys info ``{"protocol_version", "little_endian", "type_sizes"}``
  4. the object, tensors referencing storages by persistent id
     ``('storage', storage_type, root_key, location, numel, view)``, ``view`` None or
     ``(view_key, element offset, element count)``
  5. the sorted list of storage keys
then for each key in that order: its element count (int64) and its raw elements.
The even older tar format (before PyTorch 0.4) is refused with a hint.
"""

import os
import struct

import numpy as np

from .errors import CorruptCheckpointError
from .formats import Opened, register
from .unpickler import StorageRef, check_storage_id, restricted_load

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
# the magic number pickled with protocols 2+: PROTO n, LONG1 of 10 bytes
_MAGIC_BYTES = b"\x8a\x0a" + MAGIC_NUMBER.to_bytes(10, "little")


def _matches(head, path):
    return head[:1] == b"\x80" and head[2:14] == _MAGIC_BYTES


def _plain_load(file, path, what):
    def no_storage(pid):
        raise CorruptCheckpointError(f"unexpected persistent id in the {what}")
    return restricted_load(file, no_storage, None, f"{path}: {what}")


@register("torch-legacy", "PyTorch checkpoint (legacy format)", _matches)
def open_torch_legacy(path):
    file = open(path, "rb")
    try:
        return _open(file, path)
    except BaseException:
        file.close()
        raise


def _open(file, path):
    file_size = os.fstat(file.fileno()).st_size
    if _plain_load(file, path, "magic number") != MAGIC_NUMBER:
        raise CorruptCheckpointError(f"{path}: bad magic number")
    version = _plain_load(file, path, "protocol version")
    if version != PROTOCOL_VERSION:
        raise CorruptCheckpointError(f"{path}: legacy protocol version {version!r:.40}, "
                                     f"expected {PROTOCOL_VERSION}")
    sys_info = _plain_load(file, path, "system info")
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    byteorder = "little" if little else "big"

    roots = {}  # root key -> StorageRef of the whole storage

    def make_storage(pid):
        storage_type, key, location, numel, (view,) = check_storage_id(pid, 6)
        root = roots.setdefault(key, StorageRef(key, storage_type.dtype, numel, location))
        if view is None:
            return root
        if (not isinstance(view, tuple) or len(view) != 3 or type(view[1]) is not int
                or type(view[2]) is not int or view[1] < 0 or view[2] < 0
                or view[1] + view[2] > root.numel):
            raise CorruptCheckpointError(f"bad storage view {view!r:.80} of {key!r}")
        return StorageRef(key, root.dtype, view[2], location, view=(view[1], view[2]))

    spans = {}  # root key -> (file offset, bytes)
    cache = {}

    def fetch_storage(ref, dtype):
        if ref.key not in cache:
            offset, nbytes = spans[ref.key]
            file.seek(offset)
            data = file.read(nbytes)
            if len(data) != nbytes:
                raise CorruptCheckpointError(f"{path}: storage {ref.key!r} is cut short; the file "
                                             f"is truncated")
            cache[ref.key] = data
        start = 0 if ref.view is None else ref.view[0] * ref.dtype.itemsize
        return np.frombuffer(cache[ref.key], dtype=dtype.numpy_dtype(byteorder),
                             count=ref.nbytes // dtype.itemsize, offset=start)

    tree = restricted_load(file, make_storage, fetch_storage, f"{path}: object pickle")
    keys = _plain_load(file, path, "storage key list")
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise CorruptCheckpointError(f"{path}: the storage key list is malformed")
    count_format = "<q" if little else ">q"
    position = file.tell()
    for key in keys:
        if key not in roots:
            raise CorruptCheckpointError(f"{path}: storage {key!r} is listed but never used")
        header = file.read(8)
        if len(header) != 8:
            raise CorruptCheckpointError(f"{path}: storage {key!r} is missing; the file is truncated")
        (count,) = struct.unpack(count_format, header)
        nbytes = count * roots[key].dtype.itemsize
        position += 8
        if count < roots[key].numel:
            raise CorruptCheckpointError(f"{path}: storage {key!r} holds {count} elements, the "
                                         f"pickle says {roots[key].numel}; the file is corrupt")
        if position + nbytes > file_size:
            raise CorruptCheckpointError(f"{path}: storage {key!r} ends at byte {position + nbytes} "
                                         f"of a {file_size}-byte file; the file is truncated")
        spans[key] = (position, nbytes)
        position += nbytes
        file.seek(position)
    unlisted = sorted(set(roots) - set(spans))
    if unlisted:
        raise CorruptCheckpointError(f"{path}: storages {unlisted} are used but not stored")
    return Opened(tree, flat=False, close=file.close)
