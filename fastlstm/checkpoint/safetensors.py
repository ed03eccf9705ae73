"""safetensors files, parsed from their documented layout (no ``safetensors`` package).

Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
``{name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}``,
then the data; offsets are relative to the first byte after the header, data is
little-endian and C-ordered.
"""

import json
import math
import os
import struct

import numpy as np

from .errors import CorruptCheckpointError, UnsupportedCheckpointError
from .formats import Opened, register
from .tensors import DTYPES, TensorRecord

# the format's own limit on the header size
MAX_HEADER = 100 * 1024 * 1024

_CODES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
          "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64",
          "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
          "C64": "complex64", "C128": "complex128"}


def _matches(head, path):
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= MAX_HEADER and head[8:9] == b"{"


@register("safetensors", "safetensors file", _matches)
def open_safetensors(path):
    file = open(path, "rb")
    try:
        return Opened(_read_header(file, path), flat=True, close=file.close)
    except BaseException:
        file.close()
        raise


def _read_header(file, path):
    file_size = os.fstat(file.fileno()).st_size
    (length,) = struct.unpack("<Q", file.read(8))
    if 8 + length > file_size:
        raise CorruptCheckpointError(f"{path}: safetensors header of {length} bytes does not fit in "
                                     f"the file ({file_size} bytes); the file is truncated")
    try:
        header = json.loads(file.read(length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptCheckpointError(f"{path}: safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{path}: safetensors header is not a JSON object")
    data_start = 8 + length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _record(file, path, name, entry, data_start, file_size)
    return tensors


def _record(file, path, name, entry, data_start, file_size):
    where = f"{path}: tensor {name!r}"
    try:
        code, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
    except (TypeError, KeyError, ValueError):
        raise CorruptCheckpointError(f"{where}: expected dtype, shape and data_offsets, "
                                     f"got {entry!r:.120}") from None
    if code not in _CODES:
        raise UnsupportedCheckpointError(f"{where} has dtype {code!r:.20}, which fastlstm does not "
                                         f"read (readable: {sorted(_CODES)})")
    dtype = DTYPES[_CODES[code]]
    ints = [begin, end, *shape] if isinstance(shape, list) else None
    if ints is None or not all(type(value) is int and value >= 0 for value in ints):
        raise CorruptCheckpointError(f"{where}: shape and offsets must be non-negative ints")
    nbytes = math.prod(shape) * dtype.itemsize
    if end - begin != nbytes:
        raise CorruptCheckpointError(f"{where}: data_offsets [{begin}, {end}] span {end - begin} "
                                     f"bytes, shape {shape} of {code} needs {nbytes}")
    if data_start + end > file_size:
        raise CorruptCheckpointError(f"{where}: data ends at byte {data_start + end} of a "
                                     f"{file_size}-byte file; the file is truncated")

    def fetch():
        buffer = bytearray(nbytes)
        file.seek(data_start + begin)
        if file.readinto(buffer) != nbytes:
            raise CorruptCheckpointError(f"{where}: data is cut short")
        return np.frombuffer(buffer, dtype=dtype.numpy_dtype("little")).reshape(shape)

    return TensorRecord(dtype, tuple(shape), fetch)
