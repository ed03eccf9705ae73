"""Finding the state dict inside what a checkpoint holds.

``torch.save`` files often wrap the weights: ``{"state_dict": ..., "epoch": ...}``
(Lightning), ``{"model_state_dict": ..., "optimizer_state_dict": ...}``, or
``{"model": ...}``.  ``select_state_dict`` picks the weights, or the entry the
user names with ``key=``, and says which entry it took.
"""

from collections.abc import Mapping

from .errors import CheckpointError
from .tensors import TensorRecord

# entries that hold model weights, most specific first
WELL_KNOWN_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network",
                   "weights", "params")


def is_state_dict(value):
    """A non-empty mapping of str keys to tensors only."""
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(name, str) and isinstance(item, TensorRecord)
                    for name, item in value.items()))


def _describe(value):
    if isinstance(value, TensorRecord):
        return f"tensor {value.dtype.name}{list(value.shape)}"
    if isinstance(value, Mapping):
        tensors = sum(isinstance(item, TensorRecord) for item in value.values())
        return f"dict of {len(value)} entries ({tensors} tensors)"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _entries(mapping, limit=12):
    names = [f"{name!r} ({_describe(item)})" for name, item in list(mapping.items())[:limit]]
    more = f", ... ({len(mapping) - limit} more)" if len(mapping) > limit else ""
    return ", ".join(names) + more


def _tensors_only(mapping, where):
    tensors = {name: item for name, item in mapping.items()
               if isinstance(name, str) and isinstance(item, TensorRecord)}
    if not tensors:
        raise CheckpointError(f"{where} holds no tensors: {_entries(mapping)}")
    return tensors


def select_state_dict(tree, key=None):
    """-> ({name: TensorRecord}, entry) where ``entry`` is the key path taken (a tuple).

    key: None to search, a str naming a top-level entry, or a sequence of keys for a
    nested one (``("model", "state_dict")``).  Non-tensor values of the chosen entry
    are left out.  Nothing that looks like weights -> CheckpointError listing entries.
    """
    if key is not None:
        path = (key,) if isinstance(key, str) else tuple(key)
        node, taken = tree, ()
        for part in path:
            if not isinstance(node, Mapping) or part not in node:
                at = f"entry {list(taken)}" if taken else "the checkpoint"
                listing = _entries(node) if isinstance(node, Mapping) else _describe(node)
                raise CheckpointError(f"key {part!r} not found in {at}; it holds: {listing}")
            node, taken = node[part], taken + (part,)
        if not isinstance(node, Mapping):
            raise CheckpointError(f"entry {list(taken)} is a {_describe(node)}, not a state dict")
        return _tensors_only(node, f"entry {list(taken)}"), taken

    if not isinstance(tree, Mapping):
        raise CheckpointError(f"the checkpoint holds a {_describe(tree)}, not a dict of tensors")
    if is_state_dict(tree):
        return dict(tree), ()
    for name in WELL_KNOWN_KEYS:
        if is_state_dict(tree.get(name)):
            return dict(tree[name]), (name,)
    nested = [name for name, item in tree.items() if is_state_dict(item)]
    if len(nested) == 1:
        return dict(tree[nested[0]]), (nested[0],)
    if len(nested) > 1:
        raise CheckpointError(f"the checkpoint holds several dicts of tensors {nested}; "
                              f"choose one with key=")
    if any(isinstance(item, TensorRecord) for item in tree.values()):
        return _tensors_only(tree, "the checkpoint"), ()
    raise CheckpointError(f"no state dict found in the checkpoint; it holds: {_entries(tree)}; "
                          f"name the entry with key=")
