"""Glue of the Numba backend: packing into the Numba kernels' layout and
calling them layer by layer.

Layout: per layer, input weights of all directions transposed side by side
(I, D*G*H), so one matrix product projects every step and direction; per
direction, recurrent weights transposed (H_out, G*H) for the kernels' axpy loop.
"""

from dataclasses import dataclass

import numpy as np

from ._aligned import aligned
from .kernels.blas_threads import capped
from .kernels.numba_common import project
from .kernels.numba_gru import gru_sequence
from .kernels.numba_lstm import lstm_sequence
from .kernels.numba_rnn import rnn_sequence
from .params import GATES
from .threads import get_num_threads
from .variants import Variant

NAME = "numba"
_EMPTY_MATRIX = np.zeros((0, 0), dtype=np.float32)


@dataclass(frozen=True)
class NumbaDirection:
    w_hh: np.ndarray  # (H_out, G*H); (H, 2H) r, z only for the original GRU
    w_hr: np.ndarray  # (H, P), or (0, 0)
    b_hn: np.ndarray  # (H,)
    peep: np.ndarray  # (3, H) peepholes i, f, o, or (0, 0)
    w_hn: np.ndarray  # (H, H) original GRU's new-gate weights, transposed, or (0, 0)


@dataclass(frozen=True)
class NumbaLayer:
    w_ih: np.ndarray  # (I, D*G*H)
    bias: np.ndarray  # (D*G*H,)
    directions: tuple
    variant: Variant


def _transposed(weight):
    return aligned(np.ascontiguousarray(weight.T, dtype=np.float32))


def _pack_direction(mode, hidden_size, direction, variant):
    w_hh, w_hn = direction["w_hh"], None
    if mode == "GRU" and not variant.linear_before_reset:
        w_hh, w_hn = w_hh[: 2 * hidden_size], w_hh[2 * hidden_size:]
    return NumbaDirection(
        w_hh=_transposed(w_hh),
        w_hr=_EMPTY_MATRIX if direction["w_hr"] is None else _transposed(direction["w_hr"]),
        b_hn=np.ascontiguousarray(direction["b_hn"], dtype=np.float32),
        peep=(_EMPTY_MATRIX if direction["peep"] is None
              else np.ascontiguousarray(direction["peep"], dtype=np.float32)),
        w_hn=_EMPTY_MATRIX if w_hn is None else _transposed(w_hn),
    )


def pack_layer(mode, hidden_size, proj_size, directions, variant, precision="fp32"):
    """One layer from ``layout`` direction dicts (float32 weights only)."""
    if precision != "fp32":
        raise ValueError(f"precision={precision!r}: the numba backend runs fp32 weights only; "
                         "use backend='cython' (or 'auto') for bf16 and int8")
    return NumbaLayer(
        w_ih=_transposed(np.concatenate([d["w_ih"] for d in directions], axis=0)),
        bias=np.ascontiguousarray(np.concatenate([d["bias"] for d in directions]), dtype=np.float32),
        directions=tuple(_pack_direction(mode, hidden_size, d, variant) for d in directions),
        variant=variant,
    )


def run_layers(mode, layers, hidden_size, proj_size, x, h0, c0, lengths):
    """Run packed layers over a validated sequence (see ``_run_layers``), with the
    BLAS the kernels call capped at ``fastlstm.get_num_threads()`` threads."""
    with capped(get_num_threads()):
        return _run_layers(mode, layers, hidden_size, proj_size, x, h0, c0, lengths)


def _run_layers(mode, layers, hidden_size, proj_size, x, h0, c0, lengths):
    """Run packed layers over a validated sequence.

    x       (T, B, I) float32 C-contiguous
    h0      (L*D, B, H_out) float32 C-contiguous, or None for zeros
    c0      (L*D, B, H) float32 C-contiguous for LSTM, or None for zeros
    lengths (B,) int64 in [1, T], or None when every sequence has T steps
    returns out (T, B, D*H_out), h_n (L*D, B, H_out), c_n (L*D, B, H) or None
    """
    n_steps, batch = x.shape[0], x.shape[1]
    if lengths is None:
        lengths = np.full(batch, n_steps, np.int64)
    n_dirs = len(layers[0].directions)
    gate_width = GATES[mode] * hidden_size
    hidden_out = proj_size or hidden_size
    n_states = len(layers) * n_dirs
    if h0 is None:
        h0 = np.zeros((n_states, batch, hidden_out), np.float32)
    if mode == "LSTM" and c0 is None:
        c0 = np.zeros((n_states, batch, hidden_size), np.float32)
    variant = layers[0].variant
    clip = np.inf if variant.clip is None else variant.clip
    h_n = np.empty_like(h0)
    c_n = np.empty_like(c0) if mode == "LSTM" else None
    reset_before = mode == "GRU" and not variant.linear_before_reset
    gates = np.empty((batch, 2 * hidden_size if reset_before else gate_width), np.float32)
    if reset_before:
        gates_n = np.empty((batch, hidden_size), np.float32)
        rh = np.empty((batch, hidden_size), np.float32)
    else:
        gates_n = rh = _EMPTY_MATRIX
    if proj_size:
        h_full = np.empty((batch, hidden_size), np.float32)
        h_proj = np.empty((batch, proj_size), np.float32)
    else:
        h_full = h_proj = _EMPTY_MATRIX
    layer_input = x
    for index, layer in enumerate(layers):
        xproj = np.empty((n_steps * batch, n_dirs * gate_width), np.float32)
        project(layer_input.reshape(n_steps * batch, -1), layer.w_ih, layer.bias, xproj)
        xproj = xproj.reshape(n_steps, batch, n_dirs * gate_width)
        out = np.empty((n_steps, batch, n_dirs * hidden_out), np.float32)
        for d, direction in enumerate(layer.directions):
            state = index * n_dirs + d
            xcol, out_col, reverse = d * gate_width, d * hidden_out, d == 1
            if mode == "LSTM":
                lstm_sequence(xproj, xcol, direction.w_hh, direction.w_hr, h0[state], c0[state],
                              lengths, reverse, out, out_col, h_n[state], c_n[state],
                              gates, h_full, h_proj, direction.peep, variant.coupled_input_forget,
                              clip)
            elif mode == "GRU":
                gru_sequence(xproj, xcol, direction.w_hh, direction.b_hn, h0[state], lengths,
                             reverse, out, out_col, h_n[state], gates, direction.w_hn, gates_n,
                             rh, clip)
            else:
                rnn_sequence(xproj, xcol, direction.w_hh, mode == "RNN_RELU", h0[state], lengths,
                             reverse, out, out_col, h_n[state], gates, clip)
        layer_input = out
    return layer_input, h_n, c_n
