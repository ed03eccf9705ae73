"""Running packed layers: the input projection as one matrix product per layer,
then one kernel call per direction that runs the whole time loop."""

import numpy as np

from .params import GATES

_EMPTY_MATRIX = np.zeros((0, 0), dtype=np.float32)


def run_layers(backend, mode, layers, hidden_size, proj_size, x, h0, c0, lengths):
    """Run a stack of packed layers over a validated sequence.

    x       (T, B, I) float32 C-contiguous
    h0      (L*D, B, H_out) float32 C-contiguous
    c0      (L*D, B, H) float32 C-contiguous (LSTM) or None
    lengths (B,) int64, values in [1, T]
    returns out (T, B, D*H_out), h_n (L*D, B, H_out), c_n (L*D, B, H) or None
    """
    n_steps, batch = x.shape[0], x.shape[1]
    n_dirs = len(layers[0].directions)
    gate_width = GATES[mode] * hidden_size
    hidden_out = proj_size or hidden_size
    h_n = np.empty_like(h0)
    c_n = np.empty_like(c0) if c0 is not None else None
    gates = np.empty((batch, gate_width), np.float32)
    if proj_size:
        h_full = np.empty((batch, hidden_size), np.float32)
        h_proj = np.empty((batch, proj_size), np.float32)
    else:
        h_full = h_proj = _EMPTY_MATRIX
    layer_input = x
    for index, layer in enumerate(layers):
        xproj = np.matmul(layer_input.reshape(n_steps * batch, -1), layer.w_ih)
        xproj += layer.bias
        xproj = xproj.reshape(n_steps, batch, n_dirs * gate_width)
        out = np.empty((n_steps, batch, n_dirs * hidden_out), np.float32)
        for d, direction in enumerate(layer.directions):
            state = index * n_dirs + d
            xcol, out_col, reverse = d * gate_width, d * hidden_out, d == 1
            if mode == "LSTM":
                backend.lstm_sequence(xproj, xcol, direction.w_hh, direction.w_hr,
                                      h0[state], c0[state], lengths, reverse,
                                      out, out_col, h_n[state], c_n[state],
                                      gates, h_full, h_proj)
            elif mode == "GRU":
                backend.gru_sequence(xproj, xcol, direction.w_hh, direction.b_hn,
                                     h0[state], lengths, reverse, out, out_col, h_n[state], gates)
            else:
                backend.rnn_sequence(xproj, xcol, direction.w_hh, mode == "RNN_RELU",
                                     h0[state], lengths, reverse, out, out_col, h_n[state], gates)
        layer_input = out
    return layer_input, h_n, c_n
