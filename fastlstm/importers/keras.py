"""Keras importer: the ``LSTM``, ``GRU``, ``SimpleRNN`` and ``Bidirectional`` layers of a
saved Keras model -> ``KerasLayer`` adapters over fastlstm layers.

Three steps, each with one job:
  (a) ``_open`` reads a file: the model config (JSON) and a ``weights(name)`` lookup
      giving each layer's cell arrays [kernel, recurrent_kernel, bias] per direction.
      ``.keras`` (Keras 3: a zip of config.json and model.weights.h5) and ``.h5``
      (legacy HDF5: attribute model_config and group model_weights) are read with h5py;
      keras itself is not needed;
  (b) a converter per layer class, registered with ``@_converter(class_name)``, checks the
      config and sets PyTorch-named weights with ``_set_direction``, the one setter doing
      Keras -> PyTorch transposes and gate reorders;
  (c) ``from_keras`` walks the top-level layers and builds the adapters.

Keras kernels are (I, G*H) and recurrent kernels (H, G*H); gates LSTM i, f, c, o (PyTorch's
order), GRU z, r, h (-> r, z, n).  Keras has one bias per gate, put in PyTorch's input bias
(the recurrent bias is zero), except GRU with reset_after=True, whose bias (2, 3H) holds
the input and the recurrent rows.
"""

import io
import json
import os
import re
import zipfile

import numpy as np

from .._arrays import as_float32
from ..layers import GRU, LSTM, RNN
from ._common import GATE_COUNT, reorder_gates, variant_kwargs

# Keras gate blocks in PyTorch's order: LSTM i, f, c, o is PyTorch's; GRU z, r, h -> r, z, n
_GATE_ORDER = {"LSTM": (0, 1, 2, 3), "GRU": (1, 0, 2), "RNN": (0,)}
_LAYER_CLASS = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}
# Keras layer class -> the mode its cell is run with
_MODES = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}
_NESTED_MODELS = ("Sequential", "Functional", "Model")
# recurrent layers without a converter: rejected rather than silently skipped
_UNSUPPORTED = ("RNN", "StackedRNNCells", "CuDNNLSTM", "CuDNNGRU")

_CONVERTERS = {}


def _converter(class_name):
    def register(function):
        _CONVERTERS[class_name] = function
        return function
    return register


# -- the adapter ------------------------------------------------------------------------------

class KerasLayer:
    """A Keras recurrent layer's call over a fastlstm layer (``.layer``, batch_first).

    ``keras_layer(x, initial_state=None)`` with x (B, T, I) returns what Keras returns:
      return_sequences: (B, T, D*H) else the last output (B, D*H);
      return_state:     [output, *states], states [h] (GRU, SimpleRNN) or [h, c] (LSTM)
                        per direction, forward first;
      go_backwards:     the sequence read from its last step, outputs in reading order;
      Bidirectional:    forward and backward outputs aligned with x, concatenated.
    ``initial_state`` is a list in the order of the returned states, each (B, H).
    Keras masks are not applied: every step of every sequence is read.  For packed
    batches call ``.layer(x, lengths=...)`` directly (PyTorch semantics).
    """

    def __init__(self, name, layer, *, return_sequences, return_state, go_backwards=False):
        self.name = name
        self.layer = layer
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)

    @property
    def _is_lstm(self):
        return isinstance(self.layer, LSTM)

    def _hx(self, initial_state):
        if initial_state is None:
            return None
        per_direction = 2 if self._is_lstm else 1
        directions = self.layer.num_directions
        states = [as_float32(s, f"initial_state[{k}]") for k, s in enumerate(initial_state)]
        if len(states) != per_direction * directions:
            raise ValueError(f"initial_state: expected {per_direction * directions} arrays "
                             f"(B, {self.layer.hidden_size}) for {self!r}, got {len(states)}")
        stacked = [np.stack(states[k::per_direction]) for k in range(per_direction)]  # (D, B, H)
        return tuple(stacked) if self._is_lstm else stacked[0]

    def __call__(self, x, initial_state=None):
        x = as_float32(x, "x")
        if x.ndim != 3:
            raise ValueError(f"x: expected a 3-D array (B, T, I) as Keras takes, got shape {x.shape}")
        if self.go_backwards:
            x = x[:, ::-1]
        out, state = self.layer(x, self._hx(initial_state))
        h_n, c_n = state if self._is_lstm else (state, None)  # (D, B, H)
        if self.return_sequences:
            output = out
        else:  # each direction's last output: its final state
            output = np.ascontiguousarray(h_n.transpose(1, 0, 2).reshape(h_n.shape[1], -1))
        if not self.return_state:
            return output
        states = []
        for d in range(self.layer.num_directions):
            states += [h_n[d], c_n[d]] if self._is_lstm else [h_n[d]]
        return [output] + states

    def __repr__(self):
        flags = "".join(f", {flag}=True" for flag in ("return_sequences", "return_state",
                                                       "go_backwards") if getattr(self, flag))
        return f"KerasLayer({self.name!r}, {self.layer!r}{flags})"


# -- (a) reading a file -----------------------------------------------------------------------

def _import_h5py():
    try:
        import h5py
    except ImportError as error:
        raise ImportError("fastlstm.from_keras needs the 'h5py' package: pip install h5py") from error
    return h5py


def _snake_case(name):
    """Keras' generic names: "SimpleRNN" -> "simple_rnn", "LSTM" -> "lstm"."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class _KerasFile:
    """``.keras`` archive: groups ``layers/<generic name>`` whose ``vars`` record the layer name."""

    def __init__(self, h5py, path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names or "model.weights.h5" not in names:
                raise ValueError(f"{path}: a .keras archive with config.json and model.weights.h5 "
                                 f"was expected, found {names}")
            self.config = json.loads(archive.read("config.json"))
            self._file = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        self._groups = {}
        layers_group = self._file.get("layers")
        if layers_group is not None:
            for key in layers_group:
                vars_group = layers_group[key].get("vars")
                name = vars_group.attrs.get("name") if vars_group is not None else None
                if name is not None:
                    self._groups[name.decode() if isinstance(name, bytes) else str(name)] = key
        # older files do not record names: Keras names the groups after the class in
        # snake case, numbered _1, _2, ... in layer order
        counts = {}
        for layer in _model_layers(self.config):
            generic = _snake_case(layer["class_name"])
            count = counts.get(generic, -1) + 1
            counts[generic] = count
            name = layer["config"].get("name")
            key = generic if count == 0 else f"{generic}_{count}"
            if name not in self._groups and layers_group is not None and key in layers_group:
                self._groups[name] = key

    def weights(self, name, bidirectional):
        group = self._file["layers"][self._groups[name]] if name in self._groups else None
        if group is None:
            raise ValueError(f"Keras layer {name!r}: no weights found in model.weights.h5")
        parts = [group["forward_layer"], group["backward_layer"]] if bidirectional else [group]
        arrays = []
        for part in parts:
            cell_vars = part["cell"]["vars"]
            arrays.append([np.asarray(cell_vars[key]) for key in sorted(cell_vars, key=int)])
        return arrays

    def close(self):
        self._file.close()


class _H5File:
    """Legacy ``.h5``: ``model_weights/<layer name>`` lists its datasets in ``weight_names``."""

    def __init__(self, h5py, path):
        self._file = h5py.File(path, "r")
        if "model_config" not in self._file.attrs or "model_weights" not in self._file:
            self._file.close()
            raise ValueError(f"{path}: expected a whole Keras model saved as HDF5 (attribute "
                             "model_config and group model_weights); weights-only files carry "
                             "no layer configuration")
        config = self._file.attrs["model_config"]
        self.config = json.loads(config.decode() if isinstance(config, bytes) else config)

    def weights(self, name, bidirectional):
        group = self._file["model_weights"].get(name)
        if group is None:
            raise ValueError(f"Keras layer {name!r}: no weights found in model_weights")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
        # one list per cell, in file order (forward before backward)
        cells = {}
        for weight_name in names:
            cells.setdefault(weight_name.rsplit("/", 1)[0], []).append(weight_name)
        cell_names = list(cells)
        if bidirectional:
            if len(cell_names) != 2:
                raise ValueError(f"Keras layer {name!r}: expected the weights of two cells "
                                 f"(forward, backward), found {cell_names}")
        elif len(cell_names) != 1:
            raise ValueError(f"Keras layer {name!r}: expected the weights of one cell, "
                             f"found {cell_names}")
        order = {"kernel": 0, "recurrent_kernel": 1, "bias": 2}
        arrays = []
        for cell in cell_names:
            by_kind = sorted(cells[cell], key=lambda n: order.get(n.rsplit("/", 1)[1].split(":")[0], 3))
            arrays.append([np.asarray(group[n]) for n in by_kind])
        return arrays

    def close(self):
        self._file.close()


def _open(h5py, path):
    if zipfile.is_zipfile(path):
        return _KerasFile(h5py, path)
    if h5py.is_hdf5(path):
        return _H5File(h5py, path)
    raise ValueError(f"{path}: neither a .keras archive nor an HDF5 file")


def _model_layers(config):
    """The top-level layer configs of a saved model's config."""
    inner = config.get("config", {})
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if layers is None:
        raise ValueError(f"Keras model config: expected a model with a 'layers' list, "
                         f"got class {config.get('class_name')!r}")
    return layers


def _contains_recurrent(layer_config):
    if layer_config.get("class_name") in _CONVERTERS or layer_config.get("class_name") in _UNSUPPORTED:
        return True
    inner = layer_config.get("config", {})
    return any(_contains_recurrent(child) for child in inner.get("layers", []) or [])


# -- (b) converters ---------------------------------------------------------------------------

def _activation(config, key):
    value = config.get(key)
    if isinstance(value, dict):  # a serialized activation object
        value = value.get("config", {}).get("name", value.get("class_name"))
    return value


def _check_config(name, mode, config):
    """The cell settings Keras has and fastlstm runs; anything else raises."""
    activation = _activation(config, "activation") or "tanh"
    if mode == "RNN":
        if activation not in ("tanh", "relu"):
            raise NotImplementedError(f"Keras layer {name!r}: activation={activation!r}; "
                                      "SimpleRNN supports 'tanh' or 'relu'")
    else:
        recurrent = _activation(config, "recurrent_activation") or "sigmoid"
        if (activation, recurrent) != ("tanh", "sigmoid"):
            raise NotImplementedError(f"Keras layer {name!r}: activation={activation!r}, "
                                      f"recurrent_activation={recurrent!r}; only 'tanh' and "
                                      "'sigmoid' are supported")
    if config.get("time_major"):
        raise NotImplementedError(f"Keras layer {name!r}: time_major=True is not supported")
    return activation


def _cell_weights(name, mode, arrays, use_bias, reset_after, hidden):
    """[kernel (I, G*H), recurrent (H, G*H), bias] -> checked (kernel, recurrent, bias or None)."""
    gates = GATE_COUNT[mode] * hidden
    expected = 3 if use_bias else 2
    if len(arrays) != expected:
        raise ValueError(f"Keras layer {name!r}: expected {expected} weight arrays, got {len(arrays)}")
    kernel, recurrent = arrays[0], arrays[1]
    bias_shape = (2, gates) if reset_after else (gates,)
    shapes = [(kernel.shape, (kernel.shape[0], gates), "kernel"),
              (recurrent.shape, (hidden, gates), "recurrent_kernel")]
    if use_bias:
        shapes.append((arrays[2].shape, bias_shape, "bias"))
    for got, want, label in shapes:
        if tuple(got) != tuple(want):
            raise ValueError(f"Keras layer {name!r}: {label} has shape {tuple(got)}, "
                             f"expected {want}")
    return kernel, recurrent, (arrays[2] if use_bias else None)


def _set_direction(state, suffix, mode, kernel, recurrent, bias, reset_after):
    """One Keras cell -> PyTorch keys: kernels transposed, gates reordered, biases split."""
    order = _GATE_ORDER[mode]
    state[f"weight_ih_l0{suffix}"] = reorder_gates(np.asarray(kernel).T, order)
    state[f"weight_hh_l0{suffix}"] = reorder_gates(np.asarray(recurrent).T, order)
    if bias is not None:
        if reset_after:  # rows: input bias, recurrent bias
            input_bias, recurrent_bias = bias[0], bias[1]
        else:
            input_bias, recurrent_bias = bias, np.zeros_like(bias)
        state[f"bias_ih_l0{suffix}"] = reorder_gates(input_bias, order)
        state[f"bias_hh_l0{suffix}"] = reorder_gates(recurrent_bias, order)


def _build(name, mode, configs, cells, backend):
    """A fastlstm layer from one (or two: forward, backward) Keras cell configs and weights."""
    config = configs[0]
    hidden = int(config["units"])
    use_bias = bool(config.get("use_bias", True))
    reset_after = mode == "GRU" and bool(config.get("reset_after", False))
    activation = _check_config(name, mode, config)
    kwargs = dict(hidden_size=hidden, bias=use_bias, batch_first=True,
                  bidirectional=len(cells) == 2, backend=backend)
    if mode == "RNN":
        kwargs["nonlinearity"] = activation
    if mode == "GRU":
        kwargs.update(variant_kwargs(GRU, "linear_before_reset", reset_after, True,
                                     f"Keras layer {name!r}, reset_after=False"))
    state = {}
    for d, (suffix, arrays) in enumerate(zip(("", "_reverse"), cells)):
        kernel, recurrent, bias = _cell_weights(name, mode, arrays, use_bias, reset_after, hidden)
        kwargs["input_size"] = kernel.shape[0]
        _set_direction(state, suffix, mode, kernel, recurrent, bias, reset_after)
    return _LAYER_CLASS[mode](**kwargs).load_state_dict(state)


def _plain(mode):
    def convert(name, config, weights, backend):
        layer = _build(name, mode, [config], weights(name, False), backend)
        return KerasLayer(name, layer, return_sequences=config.get("return_sequences", False),
                          return_state=config.get("return_state", False),
                          go_backwards=config.get("go_backwards", False))
    return convert


for _class_name, _mode in _MODES.items():
    _converter(_class_name)(_plain(_mode))


@_converter("Bidirectional")
def _bidirectional(name, config, weights, backend):
    merge_mode = config.get("merge_mode", "concat")
    if merge_mode != "concat":
        raise NotImplementedError(f"Keras layer {name!r}: Bidirectional merge_mode={merge_mode!r}; "
                                  "only 'concat' is supported")
    forward = config["layer"]
    backward = config.get("backward_layer") or {"class_name": forward["class_name"],
                                                "config": dict(forward["config"], go_backwards=True)}
    if forward["class_name"] not in _MODES:
        raise NotImplementedError(f"Keras layer {name!r}: Bidirectional around "
                                  f"{forward['class_name']} is not supported")
    fc, bc = forward["config"], backward["config"]
    if fc.get("go_backwards", False) or not bc.get("go_backwards", True):
        raise NotImplementedError(f"Keras layer {name!r}: expected a forward layer "
                                  "(go_backwards=False) and a backward layer (go_backwards=True)")
    same = ("units", "activation", "recurrent_activation", "use_bias", "reset_after",
            "return_sequences", "return_state")
    if backward["class_name"] != forward["class_name"] or any(fc.get(k) != bc.get(k) for k in same):
        raise NotImplementedError(f"Keras layer {name!r}: forward and backward layers differ "
                                  f"({forward['class_name']} vs {backward['class_name']}, or in "
                                  f"one of {list(same)})")
    layer = _build(name, _MODES[forward["class_name"]], [fc, bc], weights(name, True), backend)
    return KerasLayer(name, layer, return_sequences=fc.get("return_sequences", False),
                      return_state=fc.get("return_state", False))


# -- (c) the model ----------------------------------------------------------------------------

def from_keras(path, backend="auto"):
    """``{layer name: KerasLayer}`` for the recurrent layers of a saved Keras model.

    path: a ``.keras`` archive (Keras 3) or a whole-model ``.h5`` file.  Top-level
    ``LSTM``, ``GRU``, ``SimpleRNN`` and ``Bidirectional`` (merge_mode "concat") layers are
    converted, in model order; other layers are skipped.  Non-default activations, GRU
    reset_after=False without the linear_before_reset variant, the generic
    ``keras.layers.RNN`` and recurrent layers inside nested models raise
    NotImplementedError naming the layer.  Each ``KerasLayer`` computes what the Keras
    layer returns; its ``.layer`` is the fastlstm layer (batch_first, PyTorch semantics).
    """
    path = os.fspath(path)
    h5py = _import_h5py()
    source = _open(h5py, path)
    try:
        layers = {}
        for layer_config in _model_layers(source.config):
            class_name = layer_config.get("class_name")
            config = layer_config.get("config", {})
            name = config.get("name", layer_config.get("name"))
            if class_name in _CONVERTERS:
                layers[name] = _CONVERTERS[class_name](name, config, source.weights, backend)
            elif class_name in _UNSUPPORTED:
                raise NotImplementedError(f"Keras layer {name!r}: {class_name} is not supported "
                                          "(only LSTM, GRU, SimpleRNN and Bidirectional)")
            elif class_name in _NESTED_MODELS and _contains_recurrent(layer_config):
                raise NotImplementedError(f"Keras layer {name!r}: recurrent layers inside a nested "
                                          f"{class_name} are not supported; save the inner model "
                                          "on its own")
        return layers
    finally:
        source.close()
