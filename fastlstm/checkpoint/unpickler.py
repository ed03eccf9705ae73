"""A restricted unpickler for torch checkpoints, and numpy stand-ins for torch's rebuilders.

``torch.save`` pickles tensors as calls to ``torch._utils._rebuild_tensor_v2`` on
a storage given by a persistent id.  Unpickling normally imports whatever globals
the pickle names and calls them, so a checkpoint can run any code.  Here
``find_class`` looks each ``(module, name)`` up in ``ALLOWED`` below: the
tensor/parameter rebuilders, storage types, dtypes and a few inert containers,
each implemented by a function of this module (torch is never imported).  Any
other global raises ``UnsafeCheckpointError`` naming it, before it is imported.

The rebuilders return ``TensorRecord``s: nothing is read until a tensor is asked
for.  Storages are described by ``StorageRef`` (made by the format reader from a
persistent id); the reader's ``fetch_storage(ref, dtype)`` returns the storage's
elements as a 1-D numpy array.
"""

import collections
import io
import pickle

import numpy as np

from .errors import CheckpointError, CorruptCheckpointError, UnsafeCheckpointError
from .tensors import DTYPES, DType, TensorRecord, check_view, strided_copy


class _ReadOnly:
    """Objects a pickle can reach are immutable, so its BUILD opcode cannot rewire them."""

    __slots__ = ()

    def __init__(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise UnsafeCheckpointError(f"the pickle tries to set attribute {name!r} of "
                                    f"{type(self).__name__}")


# -- storages --------------------------------------------------------------------------------

class StorageType(_ReadOnly):
    """Stand-in for ``torch.FloatStorage`` & co.: only names a dtype (``UntypedStorage``: bytes)."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        super().__init__(name=name, dtype=dtype)

    def __repr__(self):
        return f"StorageType({self.name})"


_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "UntypedStorage": "uint8",
}
STORAGE_TYPES = {name: StorageType(name, DTYPES[dtype]) for name, dtype in _STORAGE_DTYPES.items()}


class StorageRef(_ReadOnly):
    """One storage of a checkpoint: ``key`` names its record, ``numel`` elements of ``dtype``;
    ``view`` is None or ``(element offset, element count)`` into the root storage (legacy
    format only)."""

    __slots__ = ("key", "dtype", "numel", "location", "view")

    def __init__(self, key, dtype, numel, location, view=None):
        super().__init__(key=key, dtype=dtype, numel=numel, location=location, view=view)

    @property
    def nbytes(self):
        return self.numel * self.dtype.itemsize


def check_storage_id(pid, expected_length):
    """Validate a ``('storage', storage_type, key, location, numel[, view])`` persistent id
    and return its fields after the tag."""
    if not isinstance(pid, tuple) or len(pid) != expected_length or pid[0] not in ("storage", b"storage"):
        raise CorruptCheckpointError(
            f"unexpected persistent id {pid!r:.120}: expected ('storage', type, key, location, numel"
            + (", view)" if expected_length == 6 else ")"))
    storage_type, key, location, numel = pid[1:5]
    if not isinstance(storage_type, StorageType):
        raise CorruptCheckpointError(f"persistent id names {storage_type!r:.80}, not a storage type")
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    if isinstance(location, bytes):
        location = location.decode("ascii", "replace")
    if not isinstance(key, str) or not isinstance(location, str) or type(numel) is not int or numel < 0:
        raise CorruptCheckpointError(f"malformed storage id {pid!r:.120}")
    return storage_type, key, location, numel, pid[5:]


# -- tensor rebuilders (torch._utils) --------------------------------------------------------

def _make_tensor(storage, offset, size, stride, dtype, metadata, fetch_storage):
    if not isinstance(storage, StorageRef):
        raise CorruptCheckpointError(f"tensor rebuild got {type(storage).__name__}, not a storage")
    if not isinstance(dtype, DType):
        raise CorruptCheckpointError(f"tensor rebuild got dtype {dtype!r:.80}")
    if isinstance(size, list):
        size = tuple(size)
    if isinstance(stride, list):
        stride = tuple(stride)
    numel = storage.nbytes // dtype.itemsize
    what = f"tensor on storage {storage.key!r}"
    check_view(numel, offset, size, stride, what)
    flags = metadata if isinstance(metadata, dict) else {}

    def fetch():
        return strided_copy(fetch_storage(storage, dtype), offset, size, stride)

    return TensorRecord(dtype, size, fetch, negate=bool(flags.get("neg")),
                        conjugate=bool(flags.get("conj")))


class _Rebuilders:
    """torch's rebuild functions, bound to one reader's ``fetch_storage``."""

    def __init__(self, fetch_storage):
        self.fetch_storage = fetch_storage

    def tensor(self, storage, storage_offset, size, stride):
        return _make_tensor(storage, storage_offset, size, stride,
                            getattr(storage, "dtype", None), None, self.fetch_storage)

    def tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                  backward_hooks=None, metadata=None):
        return _make_tensor(storage, storage_offset, size, stride,
                            getattr(storage, "dtype", None), metadata, self.fetch_storage)

    def tensor_v3(self, storage, storage_offset, size, stride, requires_grad, backward_hooks,
                  dtype, metadata=None):
        return _make_tensor(storage, storage_offset, size, stride, dtype, metadata,
                            self.fetch_storage)

    @staticmethod
    def parameter(data, requires_grad=True, backward_hooks=None, state=None):
        if not isinstance(data, TensorRecord):
            raise CorruptCheckpointError(f"parameter rebuild got {type(data).__name__}, not a tensor")
        return data

    def from_type_v2(self, func, new_type, args, state):
        if not isinstance(func, _Call) or not isinstance(new_type, _Marker) or not isinstance(args, tuple):
            raise CorruptCheckpointError("malformed _rebuild_from_type_v2 call")
        return func(*args)


class _Marker(_ReadOnly):
    """A global that is only ever compared, never called (``torch.Tensor``, ``numpy.ndarray``)."""

    __slots__ = ("name",)

    def __init__(self, name):
        super().__init__(name=name)


class _Call(_ReadOnly):
    """An allowed callable; calling errors become CorruptCheckpointError."""

    __slots__ = ("_name", "_func")

    def __init__(self, name, func):
        super().__init__(_name=name, _func=func)

    def __call__(self, *args):
        try:
            return self._func(*args)
        except (TypeError, ValueError, OverflowError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CorruptCheckpointError(f"{self._name}{args!r:.120}: {error}") from None

    def __repr__(self):
        return f"<allowed {self._name}>"


# -- inert containers and scalars ------------------------------------------------------------

class AttributeDict(dict):
    """Stand-in for Lightning's ``AttributeDict`` (a plain dict of hyper-parameters)."""


def _encode(text, encoding="latin1"):
    # protocol-2 pickles store bytes as _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CorruptCheckpointError(f"_codecs.encode{(text, encoding)!r:.80}: only latin1 strings")
    return text.encode("latin1")


def _numpy_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str):
        raise CorruptCheckpointError(f"numpy.dtype({spec!r:.60}): expected a type string")
    return np.dtype(spec)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise CorruptCheckpointError("numpy scalar: only numeric scalars are read")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_reconstruct(subtype, shape, dtype_code):
    if not isinstance(subtype, _Marker) or subtype.name != "numpy.ndarray":
        raise CorruptCheckpointError("numpy array reconstruction of a non-ndarray type")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _torch_device(kind, index=None):
    return kind if index is None else f"{kind}:{index}"


def _allowed(rebuilders):
    """{(module, name): object} for one unpickler; everything else is refused."""
    calls = {
        ("torch._utils", "_rebuild_tensor"): rebuilders.tensor,
        ("torch._utils", "_rebuild_tensor_v2"): rebuilders.tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): rebuilders.tensor_v3,
        ("torch._utils", "_rebuild_parameter"): rebuilders.parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): rebuilders.parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): rebuilders.from_type_v2,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch", "Size"): tuple,
        ("torch", "device"): _torch_device,
        ("_codecs", "encode"): _encode,
        ("numpy", "dtype"): _numpy_dtype,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    }
    for module in ("builtins", "__builtin__"):
        calls.update({(module, "set"): set, (module, "frozenset"): frozenset,
                      (module, "complex"): complex})
    allowed = {key: _Call(f"{key[0]}.{key[1]}", func) for key, func in calls.items()}
    for name, storage_type in STORAGE_TYPES.items():
        allowed[("torch", name)] = storage_type
    allowed[("torch.storage", "UntypedStorage")] = STORAGE_TYPES["UntypedStorage"]
    allowed[("torch.storage", "TypedStorage")] = STORAGE_TYPES["UntypedStorage"]
    for name, dtype in DTYPES.items():
        allowed[("torch", name)] = dtype
    for alias, name in (("float", "float32"), ("double", "float64"), ("half", "float16"),
                        ("long", "int64"), ("int", "int32"), ("short", "int16")):
        allowed[("torch", alias)] = DTYPES[name]
    for key in (("torch", "Tensor"), ("torch.nn.parameter", "Parameter"),
                ("torch.nn.parameter", "Buffer"), ("numpy", "ndarray")):
        allowed[key] = _Marker(".".join(key))
    # classes: pickle's NEWOBJ needs a real type; these are inert dict subclasses
    for module in ("lightning_fabric.utilities.data", "lightning.fabric.utilities.data",
                   "pytorch_lightning.utilities.parsing"):
        allowed[(module, "AttributeDict")] = AttributeDict
    return allowed


# what to tell a user whose file names a global we refuse
_HINTS = {
    "_rebuild_qtensor": "quantized tensors are not read: dequantize before saving",
    "_rebuild_sparse_tensor": "sparse tensors are not read: save tensor.to_dense()",
    "_rebuild_wrapper_subclass": "tensor subclasses are not read: save plain tensors",
    "_rebuild_meta_tensor_no_storage": "meta tensors hold no values: save real weights",
}


def _refusal(module, name):
    full = f"{module}.{name}"
    hint = _HINTS.get(name) or (
        "the file pickles other Python objects (a whole model, an optimizer, a custom class?): "
        "re-save only the weights, e.g. torch.save(model.state_dict(), path), or export them "
        "to safetensors")
    return UnsafeCheckpointError(
        f"refusing to load global {full!r}: only tensors, storages, dtypes and plain containers "
        f"are allowed; {hint}")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves globals through the allow-list only.

    ``persistent_load`` -> ``make_storage(pid)`` (a ``StorageRef``) supplied by the reader;
    tensors come out as ``TensorRecord``s reading through ``fetch_storage(ref, dtype)``.
    """

    def __init__(self, file, make_storage, fetch_storage):
        super().__init__(file)
        self._make_storage = make_storage
        self._allowed = _allowed(_Rebuilders(fetch_storage))

    def find_class(self, module, name):
        found = self._allowed.get((module, name))
        if found is None:
            raise _refusal(module, name)
        return found

    def persistent_load(self, pid):
        return self._make_storage(pid)


def restricted_load(data, make_storage, fetch_storage, what):
    """Unpickle ``data`` (bytes or a binary file positioned at a pickle) with the allow-list.

    Errors of a malformed pickle -> CorruptCheckpointError naming ``what``; refused
    globals -> UnsafeCheckpointError.
    """
    file = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    unpickler = RestrictedUnpickler(file, make_storage, fetch_storage)
    try:
        return unpickler.load()
    except (UnsafeCheckpointError, CorruptCheckpointError) as error:
        raise type(error)(f"{what}: {error}") from None
    except RecursionError:
        raise CorruptCheckpointError(f"{what}: pickle nests too deeply") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, OverflowError, MemoryError, UnicodeDecodeError) as error:
        raise CorruptCheckpointError(
            f"{what}: not a valid pickle ({type(error).__name__}: {error}); the file is truncated "
            f"or corrupt") from None
