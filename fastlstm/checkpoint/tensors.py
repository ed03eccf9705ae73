"""Tensors not yet read: a dtype table shared by every format, and ``TensorRecord``.

A format reader describes each tensor as a ``TensorRecord`` (dtype, shape, and a
function returning its elements), so a checkpoint can be listed, and a single
module selected, without reading every byte.  ``TensorRecord.read`` is the one
place that turns stored elements into the numpy array a caller gets:
native byte order, owned memory, bfloat16 widened to float32 (numpy has no
bfloat16), floats optionally cast.
"""

import math
from dataclasses import dataclass

import numpy as np

from .errors import CorruptCheckpointError


@dataclass(frozen=True)
class DType:
    """An element type as stored: ``name`` as torch spells it, ``code`` the numpy type of
    one stored element (little-endian; bfloat16 is stored as its raw 16 bits)."""

    name: str
    code: str

    @property
    def itemsize(self):
        return np.dtype(self.code).itemsize

    @property
    def is_float(self):
        return self.name in ("float16", "bfloat16", "float32", "float64")

    def numpy_dtype(self, byteorder="little"):
        dtype = np.dtype(self.code)
        return dtype.newbyteorder("<" if byteorder == "little" else ">") if dtype.itemsize > 1 else dtype


_DTYPES = [
    DType("float32", "<f4"), DType("float64", "<f8"), DType("float16", "<f2"),
    DType("bfloat16", "<u2"), DType("complex64", "<c8"), DType("complex128", "<c16"),
    DType("int64", "<i8"), DType("int32", "<i4"), DType("int16", "<i2"), DType("int8", "i1"),
    DType("uint64", "<u8"), DType("uint32", "<u4"), DType("uint16", "<u2"), DType("uint8", "u1"),
    DType("bool", "?"),
]
DTYPES = {dtype.name: dtype for dtype in _DTYPES}

# numpy dtype name -> DType, for arrays that come from numpy (npz, user state dicts)
_FROM_NUMPY = {np.dtype(dtype.code).name: dtype for dtype in _DTYPES if dtype.name != "bfloat16"}


def dtype_of_array(array):
    """The ``DType`` of a numpy array; object and string arrays -> None."""
    return _FROM_NUMPY.get(array.dtype.name)


def bfloat16_to_float32(bits):
    """uint16 bfloat16 bit patterns (any shape) -> float32 with the same values (exact)."""
    widened = bits.astype(np.uint32) << np.uint32(16)
    return widened.view(np.float32)


def _check_int_tuple(value, what):
    if not isinstance(value, tuple) or not all(type(item) is int for item in value):
        raise CorruptCheckpointError(f"{what}: expected a tuple of ints, got {value!r:.80}")
    return value


def check_view(numel, offset, size, stride, what):
    """Check that a strided view lies inside a storage of ``numel`` elements.

    ``offset`` (int), ``size`` and ``stride`` (tuples of ints, same length) as torch
    records them.  A view reaching outside its storage would read foreign memory, so a
    file asking for one is corrupt or hostile -> CorruptCheckpointError.
    """
    if type(offset) is not int or offset < 0:
        raise CorruptCheckpointError(f"{what}: storage offset must be an int >= 0, got {offset!r:.80}")
    size = _check_int_tuple(size, f"{what}: size")
    stride = _check_int_tuple(stride, f"{what}: stride")
    if len(size) != len(stride):
        raise CorruptCheckpointError(f"{what}: size {size} and stride {stride} differ in length")
    if any(dim < 0 for dim in size) or any(step < 0 for step in stride):
        raise CorruptCheckpointError(f"{what}: negative size or stride ({size}, {stride})")
    if 0 in size:
        return
    last = offset + sum((dim - 1) * step for dim, step in zip(size, stride))
    if last >= numel:
        raise CorruptCheckpointError(
            f"{what}: view (offset {offset}, size {size}, stride {stride}) reaches element {last} "
            f"of a storage of {numel} elements: the file is corrupt")
    # zero strides (expanded tensors) can ask for far more elements than are stored
    if math.prod(size) > max(16 * numel, 1 << 28):
        raise CorruptCheckpointError(
            f"{what}: view of {math.prod(size)} elements over a storage of {numel}: refusing to "
            f"materialise it (save a contiguous tensor, e.g. tensor.contiguous())")


def strided_copy(elements, offset, size, stride):
    """An owned C-contiguous copy of the view ``(offset, size, stride)`` of 1-D ``elements``.

    The caller has checked the view with ``check_view`` against ``elements.size``.
    """
    if 0 in size:
        return np.empty(size, dtype=elements.dtype)
    itemsize = elements.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        elements[offset:], shape=size, strides=tuple(step * itemsize for step in stride),
        writeable=False)
    return np.array(view, order="C", copy=True)


class TensorRecord:
    """A tensor of a checkpoint, read on demand.

    dtype: ``DType`` as stored; shape: tuple of ints; ``read()`` -> numpy array.
    ``fetch`` is a function returning the stored elements as a numpy array of ``shape``
    in the stored dtype and byte order; ``negate``/``conjugate`` apply torch's lazy
    neg/conj bits.
    """

    __slots__ = ("dtype", "shape", "_fetch", "_negate", "_conjugate")

    def __init__(self, dtype, shape, fetch, negate=False, conjugate=False):
        for name, value in (("dtype", dtype), ("shape", tuple(shape)), ("_fetch", fetch),
                            ("_negate", negate), ("_conjugate", conjugate)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        # immutable: a pickle's BUILD opcode must not be able to rewire a record
        raise AttributeError(f"TensorRecord is read-only (setting {name!r})")

    @property
    def size(self):
        return math.prod(self.shape)

    def read(self, dtype=None):
        """The values as a numpy array in native byte order.

        bfloat16 -> float32 always; ``dtype`` (e.g. ``np.float32``) casts floating-point
        tensors only, integer and boolean tensors keep their type.
        """
        stored = self._fetch()
        if self.dtype.name == "bfloat16":
            array = bfloat16_to_float32(stored.astype(np.dtype("=u2"), copy=False))
        else:
            array = stored.astype(stored.dtype.newbyteorder("="), copy=False)
        if self._negate:
            array = np.negative(array)
        if self._conjugate:
            array = np.conjugate(array)
        if tuple(array.shape) != self.shape:
            raise CorruptCheckpointError(f"tensor data has shape {array.shape}, expected {self.shape}")
        if dtype is not None and self.dtype.is_float:
            array = array.astype(dtype, copy=False)
        return array

    def __repr__(self):
        return f"TensorRecord({self.dtype.name}, {self.shape})"


def record_from_array(array):
    """A ``TensorRecord`` wrapping an in-memory numpy array (npz files, user dicts)."""
    dtype = dtype_of_array(array)
    if dtype is None:
        raise TypeError(f"expected a numeric array, got dtype {array.dtype}")
    return TensorRecord(dtype, array.shape, lambda: array)
