"""``load`` and ``load_all``: fastlstm layers straight from a checkpoint or state dict.

The modules are found by ``discovery.discover`` from key names and shapes; each is
built with the inferred hyper-parameters and given its weights (prefix stripped)
through ``load_state_dict``.  Everything is checked before any layer is returned,
so an error never leaves a half-loaded layer behind.
"""

import os
import warnings
from collections.abc import Mapping

import numpy as np

from ._arrays import to_numpy
from .cells import GRUCell, LSTMCell, RNNCell
from .checkpoint import open_checkpoint
from .checkpoint.errors import NonFiniteWeightWarning, StateDictError
from .checkpoint.tensors import record_from_array
from .discovery import discover, prefix_label
from .layers import GRU, LSTM, RNN

CLASSES = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN,
           "LSTMCell": LSTMCell, "GRUCell": GRUCell, "RNNCell": RNNCell}


def _normalise_prefix(prefix):
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: expected a str, got {type(prefix).__name__}")
    return prefix if prefix == "" or prefix.endswith(".") else prefix + "."


def _records(state_dict):
    """A user's {name: numpy array or torch tensor} -> {name: TensorRecord}."""
    records = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"state_dict: keys must be str, got {name!r}")
        array = np.asarray(to_numpy(value))
        try:
            records[name] = record_from_array(array)
        except TypeError:
            raise TypeError(f"state_dict[{name!r}]: expected a numeric array, got dtype "
                            f"{array.dtype}") from None
    return records


class _Source:
    """A path (opened lazily with ``open_checkpoint``) or an in-memory state dict."""

    def __init__(self, source, key):
        if isinstance(source, (str, bytes, os.PathLike)):
            self._checkpoint = open_checkpoint(source, key)
            self.tensors = self._checkpoint.tensors
            self.origin = self._checkpoint.path
        elif isinstance(source, Mapping):
            if key is not None:
                raise TypeError("key= applies to checkpoint files, not to an in-memory state dict")
            self._checkpoint = None
            self.tensors = _records(source)
            self.origin = "the state dict"
        else:
            raise TypeError(f"expected a checkpoint path or a state dict (mapping of names to "
                            f"arrays), got {type(source).__name__}")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._checkpoint is not None:
            self._checkpoint.close()


def _summary(discovery, tensors, limit=20):
    """What was found, for error messages."""
    lines = [f"{prefix_label(m.prefix)}: {m.describe()}" for m in discovery.modules]
    lines += [f"{prefix_label(p.prefix)}: invalid ({p.message})" for p in discovery.problems]
    if not lines:
        shown = [f"{name} {tuple(record.shape)}" for name, record in list(tensors.items())[:limit]]
        more = f", ... ({len(tensors) - limit} more)" if len(tensors) > limit else ""
        return "no keys named weight_ih_l0/weight_hh_l0 or weight_ih/weight_hh; tensors: " + (
            ", ".join(shown) + more if shown else "none")
    return "; ".join(lines)


def _nonlinearities(nonlinearity, modules):
    """{prefix: "tanh"/"relu"} for the RNN modules among ``modules``."""
    if nonlinearity is None or isinstance(nonlinearity, str):
        chosen = nonlinearity or "tanh"
        if chosen not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        return {m.prefix: chosen for m in modules if m.kind in ("RNN", "RNNCell")}
    if not isinstance(nonlinearity, Mapping):
        raise TypeError(f"nonlinearity: expected None, 'tanh', 'relu' or a dict "
                        f"{{prefix: 'tanh' | 'relu'}}, got {type(nonlinearity).__name__}")
    given = {_normalise_prefix(prefix): value for prefix, value in nonlinearity.items()}
    kinds = {m.prefix: m.kind for m in modules}
    for prefix, value in given.items():
        if value not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity[{prefix!r}]: expected 'tanh' or 'relu', got {value!r}")
        if prefix not in kinds:
            raise ValueError(f"nonlinearity names {prefix_label(prefix)}, which is not a module "
                             f"being loaded (found: {[m.prefix for m in modules]})")
        if kinds[prefix] not in ("RNN", "RNNCell"):
            raise ValueError(f"nonlinearity given for {prefix_label(prefix)}, an {kinds[prefix]}: "
                             f"only RNN and RNNCell have one")
    return {m.prefix: given.get(m.prefix, "tanh") for m in modules if m.kind in ("RNN", "RNNCell")}


def _build(module, tensors, nonlinearity, batch_first, backend, origin, stacklevel,
           precision="fp32"):
    """A fastlstm layer for ``module`` with its weights (float32) loaded; warnings point
    ``stacklevel`` frames up (at the user's call)."""
    state = {}
    for key in module.keys:
        array = tensors[key].read(np.float32)
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            warnings.warn(f"{key!r} in {origin} has {bad} NaN/Inf value(s) of {array.size}; "
                          f"the layer will produce NaN/Inf", NonFiniteWeightWarning, stacklevel=stacklevel)
        state[key[len(module.prefix):]] = array
    arguments = module.constructor_arguments()
    if module.kind in ("RNN", "RNNCell"):
        arguments["nonlinearity"] = nonlinearity
    if not module.is_cell:
        arguments["batch_first"] = batch_first
    layer = CLASSES[module.kind](**arguments, backend=backend, precision=precision)
    return layer.load_state_dict(state)


def load(path_or_state_dict, prefix=None, backend="auto", *, batch_first=False,
         nonlinearity=None, key=None, precision="fp32"):
    """The one recurrent module of a checkpoint (or the one under ``prefix``) as a fastlstm layer.

    path_or_state_dict: a checkpoint path (see ``read_state_dict``) or a mapping of names to
    numpy arrays / torch tensors.  prefix: the module's key prefix as saved, e.g. ``"encoder."``
    or ``"model.lstm"`` (the dot is optional; ``""`` for a bare module's state dict); None
    when there is exactly one recurrent module.  nonlinearity: for an ``nn.RNN``/``RNNCell``,
    which PyTorch does not store: "tanh" (default) or "relu", or ``{prefix: value}``.
    batch_first: passed to sequence layers.  key: the entry of a checkpoint holding the weights.
    precision: "fp32", "bf16" or "int8" weights (converted once, see ``fastlstm.precision``).
    Returns an ``LSTM``, ``GRU``, ``RNN``, ``LSTMCell``, ``GRUCell`` or ``RNNCell``.
    None, several, or a broken module -> ``StateDictError`` (a ``ValueError``) listing what
    was found.  NaN/Inf weights load with a ``NonFiniteWeightWarning`` naming the tensor.
    """
    with _Source(path_or_state_dict, key) as source:
        found = discover(source.tensors)
        candidates = list(found.modules) + list(found.problems)
        if prefix is None:
            if len(candidates) != 1:
                what = "no recurrent module" if not candidates else f"{len(candidates)} recurrent modules"
                raise StateDictError(f"{source.origin}: {what} found ({_summary(found, source.tensors)})"
                                     + ("; choose one with prefix=" if candidates else ""))
            chosen = candidates[0]
        else:
            wanted = _normalise_prefix(prefix)
            matching = [item for item in candidates if item.prefix == wanted]
            if not matching:
                raise StateDictError(f"{source.origin}: no recurrent module under prefix "
                                     f"{wanted!r} (found: {_summary(found, source.tensors)})")
            chosen = matching[0]
        if chosen in found.problems:
            raise StateDictError(f"{source.origin}: {prefix_label(chosen.prefix)} does not form a "
                                 f"recurrent module: {chosen.message}")
        rnn_nonlinearity = _nonlinearities(nonlinearity, [chosen]).get(chosen.prefix)
        return _build(chosen, source.tensors, rnn_nonlinearity, batch_first, backend,
                      source.origin, stacklevel=3, precision=precision)


def load_all(path_or_state_dict, backend="auto", *, batch_first=False, nonlinearity=None,
             key=None, precision="fp32"):
    """Every recurrent module of a checkpoint -> ``{prefix: layer}`` in the file's order.

    Arguments as for ``load``.  Any key set that looks recurrent but is broken (gap in layer
    numbering, missing/extra/mis-shaped weight), or no recurrent module at all ->
    ``StateDictError`` listing what was found; no layer is returned then.
    """
    with _Source(path_or_state_dict, key) as source:
        found = discover(source.tensors)
        if found.problems or not found.modules:
            raise StateDictError(f"{source.origin}: "
                                 + ("no recurrent module found" if not (found.problems or found.modules)
                                    else "cannot load every recurrent module")
                                 + f" ({_summary(found, source.tensors)})")
        chosen = _nonlinearities(nonlinearity, found.modules)
        layers = {}
        for module in found.modules:
            layers[module.prefix] = _build(module, source.tensors, chosen.get(module.prefix),
                                           batch_first, backend, source.origin, stacklevel=3,
                                           precision=precision)
        return layers
