"""Packing PyTorch-layout weights once, at load, into what the kernels read.

Per layer: all directions' input weights side by side, transposed, so the input
projection of every step and direction is one matrix product, with the biases
folded in where the equations allow.  Per direction: the recurrent weights in
the backend's layout.
"""

from dataclasses import dataclass

import numpy as np

from .params import GATES

_EMPTY_MATRIX = np.zeros((0, 0), dtype=np.float32)
_EMPTY_VECTOR = np.zeros((0,), dtype=np.float32)


@dataclass(frozen=True)
class PackedDirection:
    w_hh: np.ndarray  # backend layout of (G*H, H_out); numba: (H_out, G*H)
    w_hr: np.ndarray  # (H, P) projection transposed, or (0, 0)
    b_hn: np.ndarray  # (H,) GRU's recurrent new-gate bias, or (0,)


@dataclass(frozen=True)
class PackedLayer:
    w_ih: np.ndarray  # (I, D*G*H) input weights of all directions, transposed
    bias: np.ndarray  # (D*G*H,) folded biases
    directions: tuple


def _folded_bias(mode, hidden_size, b_ih, b_hh):
    """Input-side bias (G*H,) and GRU's b_hn (H,); GRU's b_hn cannot be folded."""
    gates = GATES[mode] * hidden_size
    if b_ih is None:
        b_ih = np.zeros(gates, np.float32)
        b_hh = np.zeros(gates, np.float32)
    if mode == "GRU":
        folded = b_ih.copy()
        folded[: 2 * hidden_size] += b_hh[: 2 * hidden_size]
        return folded, np.ascontiguousarray(b_hh[2 * hidden_size:])
    return b_ih + b_hh, _EMPTY_VECTOR


def pack_layer(backend, mode, hidden_size, weights):
    """One layer's packed weights.

    weights: per direction a dict with ``w_ih`` (G*H, I), ``w_hh`` (G*H, H_out),
    ``b_ih``/``b_hh`` (G*H,) or None, ``w_hr`` (P, H) or None; float32.
    """
    w_ih_columns, bias_columns, directions = [], [], []
    for direction in weights:
        bias, b_hn = _folded_bias(mode, hidden_size, direction["b_ih"], direction["b_hh"])
        w_hr = direction["w_hr"]
        w_ih_columns.append(direction["w_ih"].T)
        bias_columns.append(bias)
        directions.append(PackedDirection(
            w_hh=backend.pack_recurrent(direction["w_hh"]),
            w_hr=_EMPTY_MATRIX if w_hr is None else np.ascontiguousarray(w_hr.T),
            b_hn=b_hn,
        ))
    return PackedLayer(
        w_ih=np.ascontiguousarray(np.concatenate(w_ih_columns, axis=1), dtype=np.float32),
        bias=np.ascontiguousarray(np.concatenate(bias_columns), dtype=np.float32),
        directions=tuple(directions),
    )


def pack_sequence_params(backend, mode, params, hidden_size, num_layers, suffixes):
    """Packed layers of an ``nn.LSTM``/``GRU``/``RNN`` state dict (validated float32)."""
    layers = []
    for layer in range(num_layers):
        weights = []
        for suffix in suffixes:
            tag = f"l{layer}{suffix}"
            weights.append({
                "w_ih": params[f"weight_ih_{tag}"],
                "w_hh": params[f"weight_hh_{tag}"],
                "b_ih": params.get(f"bias_ih_{tag}"),
                "b_hh": params.get(f"bias_hh_{tag}"),
                "w_hr": params.get(f"weight_hr_{tag}"),
            })
        layers.append(pack_layer(backend, mode, hidden_size, weights))
    return tuple(layers)


def pack_cell_params(backend, mode, params, hidden_size):
    """The single packed layer of an ``nn.LSTMCell``/``GRUCell``/``RNNCell`` state dict."""
    weights = [{
        "w_ih": params["weight_ih"],
        "w_hh": params["weight_hh"],
        "b_ih": params.get("bias_ih"),
        "b_hh": params.get("bias_hh"),
        "w_hr": None,
    }]
    return (pack_layer(backend, mode, hidden_size, weights),)
