"""Finding recurrent modules in a state dict from its key names and shapes alone.

PyTorch names recurrent weights ``{prefix}weight_ih_l{k}[_reverse]`` (``nn.LSTM``,
``nn.GRU``, ``nn.RNN``; also ``weight_hh``, ``bias_ih``, ``bias_hh``, ``weight_hr``)
and ``{prefix}weight_ih`` (the cells).  For each prefix the hyper-parameters
are inferred:

* hidden H: columns of ``weight_hh_l0``, or of ``weight_hr_l0`` (P, H) with a projection
* cell type: rows of ``weight_hh_l0`` / H gates (4 LSTM, 3 GRU, 1 RNN)
* input size: columns of ``weight_ih_l0``; layers: the ``l{k}`` present (no gaps);
  bidirectional: any ``_reverse``; bias: ``bias_*`` present; proj_size: P
then every tensor is checked against the spec those imply (``params.sequence_spec``).
``nn.RNN``'s nonlinearity is not stored in its weights: callers choose it.

``discover(tensors)`` takes ``{name: array or TensorRecord}`` (only ``.shape`` and
``.dtype`` are looked at, so nothing is read) and returns a ``Discovery`` used by
``fastlstm.load``, ``fastlstm.load_all`` and ``fastlstm info``.
"""

import math
import re
from dataclasses import dataclass, field

from .params import cell_spec, sequence_spec

# matched with fullmatch: a key is exactly a prefix ("" or ending in ".") and a parameter name
_SEQUENCE_KEY = re.compile(
    r"(?P<prefix>(?:.*\.)?)(?P<param>weight_ih|weight_hh|weight_hr|bias_ih|bias_hh)"
    r"_l(?P<layer>0|[1-9][0-9]*)(?P<reverse>_reverse)?")
_CELL_KEY = re.compile(r"(?P<prefix>(?:.*\.)?)(?P<param>weight_ih|weight_hh|bias_ih|bias_hh)")

KINDS = {4: "LSTM", 3: "GRU", 1: "RNN"}
# the mode string params.py specs use for each kind (an RNN's shapes do not depend on it)
_SPEC_MODE = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "RNN_TANH"}
_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class RecurrentModule:
    """One recurrent module of a state dict.

    kind: "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell" or "RNNCell"; keys: its tensors'
    full names in PyTorch's order; num_layers is 1 and bidirectional False for cells.
    """

    prefix: str
    kind: str
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int
    bias: bool
    keys: tuple
    num_parameters: int
    dtype: str

    @property
    def is_cell(self):
        return self.kind.endswith("Cell")

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def constructor_arguments(self):
        """Keyword arguments of the fastlstm class (nonlinearity and batch_first excepted)."""
        arguments = dict(input_size=self.input_size, hidden_size=self.hidden_size, bias=self.bias)
        if not self.is_cell:
            arguments.update(num_layers=self.num_layers, bidirectional=self.bidirectional)
            if self.kind == "LSTM":
                arguments["proj_size"] = self.proj_size
        return arguments

    def describe(self):
        """One line: kind and sizes, e.g. ``LSTM(16, 32, num_layers=2, bidirectional)``."""
        parts = [f"{self.input_size}", f"{self.hidden_size}"]
        if not self.is_cell:
            parts.append(f"num_layers={self.num_layers}")
            if self.bidirectional:
                parts.append("bidirectional")
        if self.proj_size:
            parts.append(f"proj_size={self.proj_size}")
        if not self.bias:
            parts.append("bias=False")
        return f"{self.kind}({', '.join(parts)})"


@dataclass(frozen=True)
class ModuleProblem:
    """A prefix whose keys look recurrent but do not form a valid module."""

    prefix: str
    message: str
    keys: tuple


@dataclass(frozen=True)
class Discovery:
    """modules and problems in order of first appearance; others: {name: shape} of every
    tensor belonging to neither."""

    modules: tuple
    problems: tuple
    others: dict = field(default_factory=dict)


def prefix_label(prefix):
    return repr(prefix) if prefix else "'' (top level)"


def _shape(value):
    return tuple(int(dim) for dim in value.shape)


def _dtype_name(value):
    dtype = value.dtype
    return getattr(dtype, "name", str(dtype))


class _Invalid(Exception):
    """Raised inside inference; becomes a ModuleProblem."""


def _need(entries, name, prefix, ndim):
    value = entries.get(name)
    if value is None:
        raise _Invalid(f"missing {prefix + name!r}")
    if len(value.shape) != ndim:
        raise _Invalid(f"{prefix + name!r} has shape {_shape(value)}, expected {ndim} dimensions")
    return _shape(value)


def _sizes_from_hh(hh_shape, hr_shape, name):
    """(kind, hidden, proj) from weight_hh's shape and weight_hr's (or None)."""
    rows, columns = hh_shape
    proj = 0
    hidden = columns
    if hr_shape is not None:
        proj, hidden = hr_shape
        if columns != proj:
            raise _Invalid(f"{name} has {columns} columns but weight_hr projects to {proj}")
    if hidden == 0 or rows % hidden:
        raise _Invalid(f"{name} has {rows} rows, not a multiple of the hidden size {hidden}")
    kind = KINDS.get(rows // hidden)
    if kind is None:
        raise _Invalid(f"{name} has {rows} rows = {rows // hidden} x hidden size {hidden}: expected "
                       f"4 (LSTM), 3 (GRU) or 1 (RNN) gates")
    if proj and (kind != "LSTM" or proj >= hidden):
        raise _Invalid(f"weight_hr of shape {hr_shape} fits no module: a projection needs an LSTM "
                       f"with proj_size < hidden size")
    return kind, hidden, proj


def _check_against(spec, entries, prefix):
    """Compare {name: value} with {name: shape}: missing, unexpected and mis-shaped keys."""
    missing = [prefix + name for name in spec if name not in entries]
    unexpected = [prefix + name for name in entries if name not in spec]
    wrong = [f"{prefix + name!r} is {_shape(entries[name])}, expected {shape}"
             for name, shape in spec.items() if name in entries and _shape(entries[name]) != shape]
    messages = []
    if missing:
        messages.append(f"missing {missing}")
    if unexpected:
        messages.append(f"unexpected {unexpected}")
    if wrong:
        messages.append("; ".join(wrong))
    if messages:
        raise _Invalid("; ".join(messages))


def _infer_sequence(prefix, entries):
    layers = sorted({int(_SEQUENCE_KEY.fullmatch(name).group("layer")) for name in entries})
    if layers != list(range(len(layers))):
        missing = sorted(set(range(layers[-1] + 1)) - set(layers))
        raise _Invalid(f"layer numbering has a gap: found layers {layers}, missing {missing}")
    bidirectional = any(name.endswith("_reverse") for name in entries)
    hh = _need(entries, "weight_hh_l0", prefix, 2)
    hr = _need(entries, "weight_hr_l0", prefix, 2) if "weight_hr_l0" in entries else None
    ih = _need(entries, "weight_ih_l0", prefix, 2)
    kind, hidden, proj = _sizes_from_hh(hh, hr, f"{prefix}weight_hh_l0")
    bias = "bias_ih_l0" in entries or "bias_hh_l0" in entries
    spec = sequence_spec(_SPEC_MODE[kind], ih[1], hidden, len(layers), bidirectional, proj, bias)
    _check_against(spec, entries, prefix)
    return kind, dict(input_size=ih[1], hidden_size=hidden, num_layers=len(layers),
                      bidirectional=bidirectional, proj_size=proj, bias=bias), spec


def _infer_cell(prefix, entries):
    hh = _need(entries, "weight_hh", prefix, 2)
    ih = _need(entries, "weight_ih", prefix, 2)
    kind, hidden, _ = _sizes_from_hh(hh, None, f"{prefix}weight_hh")
    bias = "bias_ih" in entries or "bias_hh" in entries
    spec = cell_spec(_SPEC_MODE[kind], ih[1], hidden, bias)
    _check_against(spec, entries, prefix)
    return kind + "Cell", dict(input_size=ih[1], hidden_size=hidden, num_layers=1,
                               bidirectional=False, proj_size=0, bias=bias), spec


def _group(names):
    """{prefix: {"sequence": {local name: full}, "cell": {...}, "other": [full names]}} in order
    of first appearance; "other" holds unrecognised keys directly under a recurrent prefix."""
    groups = {}
    for name in names:
        for style, pattern in (("sequence", _SEQUENCE_KEY), ("cell", _CELL_KEY)):
            match = pattern.fullmatch(name)
            if match:
                group = groups.setdefault(match.group("prefix"),
                                          {"sequence": {}, "cell": {}, "other": []})
                group[style][name[len(match.group("prefix")):]] = name
                break
    for name in names:
        head, dot, local = name.rpartition(".")
        prefix = head + dot
        group = groups.get(prefix)
        if group is not None and local not in group["sequence"] and local not in group["cell"]:
            group["other"].append(name)
    return groups


def discover(tensors):
    """Recurrent modules of ``tensors`` ({name: array-like with .shape and .dtype})."""
    names = list(tensors)
    modules, problems, claimed = [], [], set()
    for prefix, group in _group(names).items():
        keys = list(group["sequence"].values()) + list(group["cell"].values())
        claimed.update(keys)
        try:
            if group["sequence"] and group["cell"]:
                raise _Invalid(f"both layer keys {sorted(group['sequence'])} and cell keys "
                               f"{sorted(group['cell'])} under one prefix")
            if group["other"]:
                raise _Invalid(f"unexpected {group['other']} next to the recurrent weights: the "
                               f"module has parameters a PyTorch RNN/LSTM/GRU does not")
            style = "sequence" if group["sequence"] else "cell"
            entries = {local: tensors[full] for local, full in group[style].items()}
            infer = _infer_sequence if style == "sequence" else _infer_cell
            kind, sizes, spec = infer(prefix, entries)
            not_float = [f"{prefix + name!r} ({_dtype_name(entries[name])})" for name in spec
                         if _dtype_name(entries[name]) not in _FLOAT_NAMES]
            if not_float:
                raise _Invalid(f"weights must be floating point: {not_float}")
        except _Invalid as problem:
            problems.append(ModuleProblem(prefix, str(problem), tuple(keys)))
            continue
        ordered = tuple(prefix + name for name in spec)
        dtypes = sorted({_dtype_name(tensors[key]) for key in ordered})
        modules.append(RecurrentModule(
            prefix=prefix, kind=kind, keys=ordered, dtype="/".join(dtypes),
            num_parameters=sum(math.prod(_shape(tensors[key])) for key in ordered), **sizes))
    others = {name: _shape(tensors[name]) for name in names if name not in claimed}
    return Discovery(tuple(modules), tuple(problems), others)
