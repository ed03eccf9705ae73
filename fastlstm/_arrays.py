"""Turning user values (numpy arrays, torch tensors, lists) into float32 numpy arrays.

torch is never imported here: tensors are recognised by their type's module.
"""

import numpy as np


def is_torch_tensor(value):
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def to_numpy(value):
    """A numpy view or copy of ``value``; torch tensors are detached and moved to the CPU."""
    if is_torch_tensor(value):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(value)


_F32 = np.dtype(np.float32)


def as_float32(value, name):
    """``value`` as a float32 array; integer, boolean, complex or object data -> TypeError."""
    if type(value) is np.ndarray and value.dtype is _F32:  # the common case, first
        return value
    array = to_numpy(value)
    if array.dtype.kind != "f":
        raise TypeError(
            f"{name}: expected a floating-point array (any float dtype is cast to float32), "
            f"got dtype {array.dtype}"
        )
    return np.asarray(array, dtype=np.float32)
