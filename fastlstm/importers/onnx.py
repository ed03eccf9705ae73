"""ONNX importer: every ``LSTM``, ``GRU`` and ``RNN`` node of a model -> a fastlstm layer.

Three steps, each with one job:
  (a) ``_Node`` reads one node: its attributes, and its weights from initializers or
      ``Constant`` nodes (through ``Identity`` chains), with shape checks naming the node;
  (b) a converter per operator, registered with ``@_converter(op_type)``, turns the
      attributes into layer keywords and the weights into a PyTorch-named state dict;
      ``_set_direction`` is the one setter doing ONNX -> PyTorch gate reorders;
  (c) ``from_onnx`` loads the model, walks the main graph and builds the layers.

Call-time inputs map as follows (fastlstm takes them when the layer is called):
  X (layout 0: (T, B, I); layout 1: (B, T, I))    -> x; layout 1 builds a batch_first layer
  sequence_lens (B,)                                -> lengths= (each in [1, T])
  initial_h, initial_c (D, B, H) (layout 1: (B, D, H)) -> hx=h0 / hx=(h0, c0), see ``onnx_hx``
  Y (T, D, B, H), Y_h, Y_c (D, B, H)                <- ``onnx_outputs(layer, out, state)``
As in onnxruntime (checked by the tests), steps past a length give zeros in Y, and Y_h/Y_c are the
states after each sequence's last valid step (for the reverse direction: after step 0).
``direction="reverse"`` gives a ``ReversedLayer`` around a one-direction layer.

Only the main graph is searched (not If/Loop/Scan bodies or model-local functions).
The ``onnx`` package is imported when ``from_onnx`` runs; it is an optional dependency.
"""

import os

import numpy as np

from ..layers import GRU, LSTM, RNN
from ._common import GATE_COUNT, reorder_gates, variant_kwargs
from ._reversed import ReversedLayer

# ONNX gate blocks in PyTorch's order: LSTM i, o, f, c -> i, f, g, o; GRU z, r, h -> r, z, n
_GATE_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2), "RNN": (0,)}
# ONNX peephole blocks i, o, f -> fastlstm's (3, H) rows i, f, o
_PEEPHOLE_ORDER = (0, 2, 1)
# default activations per direction; names compare case-insensitively
_DEFAULT_ACTIVATIONS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"),
                        "RNN": ("tanh",)}
_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}

_CONVERTERS = {}


def _converter(op_type):
    def register(function):
        _CONVERTERS[op_type] = function
        return function
    return register


# -- (a) reading a node -----------------------------------------------------------------------

class _Constants:
    """Values known at import time: initializers and Constant outputs, through Identity."""

    def __init__(self, onnx, graph):
        self._onnx = onnx
        self._tensors = {tensor.name: tensor for tensor in graph.initializer}
        self._constants = {}
        self._aliases = {}
        self._producers = {}
        for node in graph.node:
            for output in node.output:
                self._producers[output] = node.op_type
            if node.op_type == "Constant" and node.output:
                self._constants[node.output[0]] = node
            elif node.op_type == "Identity" and node.input and node.output:
                self._aliases[node.output[0]] = node.input[0]

    def get(self, name):
        """The array called ``name``, or None when it is computed by some other node."""
        seen = set()
        while name not in self._tensors and name not in self._constants and name in self._aliases:
            if name in seen:
                return None
            seen.add(name)
            name = self._aliases[name]
        if name in self._tensors:
            return self._onnx.numpy_helper.to_array(self._tensors[name])
        if name in self._constants:
            return self._constant_value(self._constants[name])
        return None

    def _constant_value(self, node):
        helper = self._onnx.helper
        for attribute in node.attribute:
            value = helper.get_attribute_value(attribute)
            if attribute.name == "value":
                return self._onnx.numpy_helper.to_array(value)
            if attribute.name in ("value_float", "value_floats", "value_int", "value_ints"):
                return np.asarray(value)
        return None

    def producer(self, name):
        """What makes ``name``, for messages: "a 'Neg' node" or "a graph input"."""
        op_type = self._producers.get(name)
        return "a graph input" if op_type is None else f"a {op_type!r} node"


class _Node:
    """One recurrent node: attributes with defaults, weights as float32 arrays."""

    def __init__(self, onnx, node, name, constants):
        self.op_type = node.op_type
        self.name = name
        self._inputs = list(node.input)
        self._constants = constants
        self._attributes = {attribute.name: onnx.helper.get_attribute_value(attribute)
                            for attribute in node.attribute}

    def where(self, attribute=None):
        text = f"ONNX node {self.name!r} ({self.op_type})"
        return text if attribute is None else f"{text}, attribute {attribute}"

    def attribute(self, name, default=None):
        value = self._attributes.get(name, default)
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, list):
            return [item.decode() if isinstance(item, bytes) else item for item in value]
        return value

    def has_input(self, index):
        return index < len(self._inputs) and self._inputs[index] != ""

    def weight(self, index, label, shape):
        """Input ``index`` as float32 of ``shape`` (None entries match any size); None if absent."""
        if not self.has_input(index):
            return None
        name = self._inputs[index]
        array = self._constants.get(name)
        if array is None:
            raise ValueError(f"{self.where()}: input {label} ({name!r}) comes from "
                             f"{self._constants.producer(name)}, not from an initializer or a "
                             "Constant node; fastlstm needs the weights at import time")
        if array.dtype.kind != "f":
            raise TypeError(f"{self.where()}: input {label} ({name!r}) has dtype {array.dtype}, "
                            "expected floating point")
        self.check_shape(array, label, shape)
        return np.asarray(array, dtype=np.float32)

    def check_shape(self, array, label, shape):
        if array.ndim != len(shape) or any(want is not None and want != got
                                           for want, got in zip(shape, array.shape)):
            expected = "(" + ", ".join("?" if want is None else str(want) for want in shape) + ")"
            raise ValueError(f"{self.where()}: input {label} has shape {tuple(array.shape)}, "
                             f"expected {expected}")


# -- (b) converters ---------------------------------------------------------------------------

def _check_activations(node, mode, directions):
    """The node's activations per direction, lower-cased; alpha/beta are not supported."""
    for name in ("activation_alpha", "activation_beta"):
        if node.attribute(name):
            raise NotImplementedError(f"{node.where(name)}: activation parameters are not "
                                      "supported (only the default activations are)")
    per_direction = len(_DEFAULT_ACTIVATIONS[mode])
    activations = node.attribute("activations")
    if not activations:
        return [_DEFAULT_ACTIVATIONS[mode]] * directions
    activations = [name.lower() for name in activations]
    if len(activations) == per_direction and directions == 2:
        activations = activations * 2
    if len(activations) != per_direction * directions:
        raise ValueError(f"{node.where('activations')}: expected {per_direction * directions} "
                         f"names ({per_direction} per direction), got {activations}")
    return [tuple(activations[d * per_direction:(d + 1) * per_direction])
            for d in range(directions)]


def _read_common(node, mode):
    """Attributes and weights every recurrent node has -> (direction, layer keywords, W, R, B)."""
    direction = node.attribute("direction", "forward")
    if direction not in _DIRECTIONS:
        raise ValueError(f"{node.where('direction')}: expected one of {list(_DIRECTIONS)}, "
                         f"got {direction!r}")
    layout = node.attribute("layout", 0)
    if layout not in (0, 1):
        raise ValueError(f"{node.where('layout')}: expected 0 or 1, got {layout}")
    directions = _DIRECTIONS[direction]
    gates = GATE_COUNT[mode]
    if not (node.has_input(1) and node.has_input(2)):
        raise ValueError(f"{node.where()}: inputs W and R are required")
    R = node.weight(2, "R", (directions, None, None))
    hidden = node.attribute("hidden_size", R.shape[2])
    node.check_shape(R, "R", (directions, gates * hidden, hidden))
    W = node.weight(1, "W", (directions, gates * hidden, None))
    B = node.weight(3, "B", (directions, 2 * gates * hidden))
    settings = dict(input_size=W.shape[2], hidden_size=hidden, bias=B is not None,
                    batch_first=layout == 1, bidirectional=directions == 2)
    return direction, settings, W, R, B


def _set_direction(state, suffix, mode, W, R, B):
    """One direction's ONNX W (G*H, I), R (G*H, H), B (2*G*H,) -> PyTorch keys, reordered."""
    order = _GATE_ORDER[mode]
    state[f"weight_ih_l0{suffix}"] = reorder_gates(W, order)
    state[f"weight_hh_l0{suffix}"] = reorder_gates(R, order)
    if B is not None:
        input_bias, recurrent_bias = np.split(B, 2)
        state[f"bias_ih_l0{suffix}"] = reorder_gates(input_bias, order)
        state[f"bias_hh_l0{suffix}"] = reorder_gates(recurrent_bias, order)


def _state_dict(mode, settings, W, R, B):
    suffixes = ("", "_reverse") if settings["bidirectional"] else ("",)
    state = {}
    for d, suffix in enumerate(suffixes):
        _set_direction(state, suffix, mode, W[d], R[d], None if B is None else B[d])
    return state


def _clip_kwargs(node, layer_class):
    clip = node.attribute("clip")
    return variant_kwargs(layer_class, "clip", None if clip is None else float(clip), None,
                          node.where(f"clip={clip}"))


def _finish(layer, direction):
    return ReversedLayer(layer) if direction == "reverse" else layer


@_converter("LSTM")
def _lstm(node, backend):
    direction, settings, W, R, B = _read_common(node, "LSTM")
    for activations in _check_activations(node, "LSTM", 1 + settings["bidirectional"]):
        if activations != _DEFAULT_ACTIVATIONS["LSTM"]:
            raise NotImplementedError(f"{node.where('activations')}: only Sigmoid, Tanh, Tanh "
                                      f"is supported, got {list(activations)}")
    hidden = settings["hidden_size"]
    directions = 1 + settings["bidirectional"]
    P = node.weight(7, "P", (directions, 3 * hidden))
    peephole = P is not None and bool(np.any(P))  # all-zero peepholes are no peepholes
    coupled = bool(node.attribute("input_forget", 0))
    kwargs = dict(settings, backend=backend, **_clip_kwargs(node, LSTM))
    kwargs.update(variant_kwargs(LSTM, "peephole", peephole, False, node.where("P (peepholes)")))
    kwargs.update(variant_kwargs(LSTM, "coupled_input_forget", coupled, False,
                                 node.where("input_forget=1")))
    state = _state_dict("LSTM", settings, W, R, B)
    if peephole:
        for d, suffix in enumerate(("", "_reverse")[:directions]):
            state[f"weight_peephole_l0{suffix}"] = reorder_gates(P[d].reshape(3, hidden),
                                                                 _PEEPHOLE_ORDER)
    return _finish(LSTM(**kwargs).load_state_dict(state), direction)


@_converter("GRU")
def _gru(node, backend):
    direction, settings, W, R, B = _read_common(node, "GRU")
    for activations in _check_activations(node, "GRU", 1 + settings["bidirectional"]):
        if activations != _DEFAULT_ACTIVATIONS["GRU"]:
            raise NotImplementedError(f"{node.where('activations')}: only Sigmoid, Tanh is "
                                      f"supported, got {list(activations)}")
    linear_before_reset = bool(node.attribute("linear_before_reset", 0))
    kwargs = dict(settings, backend=backend, **_clip_kwargs(node, GRU))
    kwargs.update(variant_kwargs(GRU, "linear_before_reset", linear_before_reset, True,
                                 node.where("linear_before_reset=0")))
    state = _state_dict("GRU", settings, W, R, B)
    return _finish(GRU(**kwargs).load_state_dict(state), direction)


@_converter("RNN")
def _rnn(node, backend):
    direction, settings, W, R, B = _read_common(node, "RNN")
    activations = {names[0] for names in _check_activations(node, "RNN", 1 + settings["bidirectional"])}
    if len(activations) != 1 or not activations <= {"tanh", "relu"}:
        raise NotImplementedError(f"{node.where('activations')}: only Tanh or Relu, the same "
                                  f"for both directions, is supported, got {sorted(activations)}")
    kwargs = dict(settings, nonlinearity=activations.pop(), backend=backend,
                  **_clip_kwargs(node, RNN))
    state = _state_dict("RNN", settings, W, R, B)
    return _finish(RNN(**kwargs).load_state_dict(state), direction)


# -- (c) the model ----------------------------------------------------------------------------

def _import_onnx():
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401  (submodule used by _Constants)
    except ImportError as error:
        raise ImportError("fastlstm.from_onnx needs the 'onnx' package: pip install onnx") from error
    return onnx


def _load_model(onnx, path_or_model):
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    if isinstance(path_or_model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(path_or_model))
    if isinstance(path_or_model, (str, os.PathLike)):
        return onnx.load(os.fspath(path_or_model))
    raise TypeError(f"path_or_model: expected a path, serialized bytes or an onnx.ModelProto, "
                    f"got {type(path_or_model).__name__}")


def _recurrent_nodes(graph):
    """[(name, node)] of the main graph's LSTM/GRU/RNN nodes; unnamed ones get OpType_index."""
    found = []
    for index, node in enumerate(graph.node):
        if node.domain in ("", "ai.onnx") and node.op_type in _CONVERTERS:
            found.append((node.name or f"{node.op_type}_{index}", node))
    names = [name for name, _ in found]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"ONNX model: several recurrent nodes are named {duplicates}")
    return found


def from_onnx(path_or_model, node=None, backend="auto"):
    """Layers for the ``LSTM``/``GRU``/``RNN`` nodes of an ONNX model.

    path_or_model: a file path, serialized bytes or an ``onnx.ModelProto``.
    node:     None -> ``{node name: layer}`` for every such node of the main graph (in
              graph order; an unnamed node is called ``"{op_type}_{index}"``);
              a name -> that node's layer alone (KeyError listing the names if absent).
    backend:  as for the layer constructors.

    Each layer is one ONNX node: single-layer, bidirectional for ``direction=
    "bidirectional"``, a ``ReversedLayer`` for ``"reverse"``, batch_first for ``layout=1``.
    Unsupported attributes raise NotImplementedError naming the node and the attribute.
    See the module docstring for sequence_lens, initial states and output shapes.
    """
    onnx = _import_onnx()
    graph = _load_model(onnx, path_or_model).graph
    nodes = _recurrent_nodes(graph)
    if node is not None:
        chosen = [(name, proto) for name, proto in nodes if name == node]
        if not chosen:
            raise KeyError(f"node: no LSTM/GRU/RNN node named {node!r} in the ONNX model "
                           f"(found {[name for name, _ in nodes]})")
        nodes = chosen
    constants = _Constants(onnx, graph)
    layers = {name: _CONVERTERS[proto.op_type](_Node(onnx, proto, name, constants), backend)
              for name, proto in nodes}
    return layers[node] if node is not None else layers


# -- ONNX-shaped inputs and outputs ------------------------------------------------------------

def onnx_hx(layer, initial_h=None, initial_c=None):
    """ONNX initial_h/initial_c -> the layer's ``hx``: (D, B, H) each, layout 1's (B, D, H)
    transposed; a missing one of an LSTM's two is zeros; both missing -> None."""
    def to_layer(state):
        state = np.asarray(state, dtype=np.float32)
        return np.ascontiguousarray(state.transpose(1, 0, 2)) if layer.batch_first else state
    if not isinstance(_base(layer), LSTM):
        if initial_c is not None:
            raise ValueError(f"initial_c: only LSTM has a cell state, got one for {layer!r}")
        return None if initial_h is None else to_layer(initial_h)
    if initial_h is None and initial_c is None:
        return None
    h0 = None if initial_h is None else to_layer(initial_h)
    c0 = None if initial_c is None else to_layer(initial_c)
    return (np.zeros_like(c0) if h0 is None else h0), (np.zeros_like(h0) if c0 is None else c0)


def onnx_outputs(layer, out, state):
    """A layer's ``out, state`` -> ONNX's (Y, Y_h) or (Y, Y_h, Y_c) for the node's layout.

    layout 0: Y (T, D, B, H), Y_h and Y_c (D, B, H);
    layout 1 (batch_first): Y (B, T, D, H), Y_h and Y_c (B, D, H).  Batched inputs only.
    """
    directions, hidden = layer.num_directions, layer.hidden_size
    out = np.asarray(out)
    if out.ndim != 3:
        raise ValueError(f"out: expected the 3-D output of a batched call, got shape {out.shape}")
    states = tuple(state) if isinstance(state, (tuple, list)) else (state,)
    if layer.batch_first:
        batch, steps = out.shape[:2]
        Y = out.reshape(batch, steps, directions, hidden)
        states = tuple(np.ascontiguousarray(s.transpose(1, 0, 2)) for s in states)
    else:
        steps, batch = out.shape[:2]
        Y = np.ascontiguousarray(out.reshape(steps, batch, directions, hidden).transpose(0, 2, 1, 3))
    return (Y,) + states


def _base(layer):
    return layer.layer if isinstance(layer, ReversedLayer) else layer
