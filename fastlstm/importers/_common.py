"""Setters shared by the importers: gate reorders and the variant keywords a layer class takes.

Every importer turns its source's arrays into PyTorch-named state dicts with these, so a
gate order is written down once per source format (a tuple of block indices) and the
reorder itself exists once.
"""

import inspect

import numpy as np

# the layer class a PyTorch mode is built with, and its gates per hidden unit
GATE_COUNT = {"LSTM": 4, "GRU": 3, "RNN": 1}


def reorder_gates(array, order):
    """Stacked gate blocks along axis 0 -> the same blocks in PyTorch's order, as float32.

    ``order[k]`` is the source block that becomes PyTorch block k:
    (G*H, ...) -> (G*H, ...) C-contiguous.
    """
    array = np.asarray(array, dtype=np.float32)
    blocks = np.split(array, len(order), axis=0)
    return np.ascontiguousarray(np.concatenate([blocks[k] for k in order], axis=0))


def accepts(layer_class, keyword):
    """Whether the layer constructor takes ``keyword`` (the variants landed in this install)."""
    return keyword in inspect.signature(layer_class).parameters


def variant_kwargs(layer_class, keyword, value, default, where):
    """{keyword: value} when ``value`` is not the layer's default, checking the class takes it.

    The LSTM/GRU variants (peephole, coupled input-forget, clip, linear_before_reset)
    are keywords of the layer constructors; an installation whose layers lack one
    raises NotImplementedError naming ``where`` (the source node or layer and attribute).
    """
    if value == default:
        return {}
    if not accepts(layer_class, keyword):
        raise NotImplementedError(f"{where}: needs fastlstm.{layer_class.__name__}({keyword}=...), "
                                  f"which this version of fastlstm does not have")
    return {keyword: value}
