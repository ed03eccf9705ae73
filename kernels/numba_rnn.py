"""Elman RNN sequence kernel (Numba): h' = act(xproj[t] + h @ W_hh^T), act tanh or relu."""

import math

from numba import njit

from .numba_common import KERNEL_OPTIONS, blas_args, clip_value, matmul, step_time, zero_output


@njit(**KERNEL_OPTIONS)
def rnn_sequence(xproj, xcol, w_hh, relu, h0, lengths, reverse, out, out_col, h_n, gates, clip):
    """Run one RNN direction over all steps.

    xproj   (T, B, X) float32 IN   input projection plus folded biases; this
                                   direction's H pre-activations start at column ``xcol``
    w_hh    (H, H) float32 IN      recurrent weights, transposed (pack_recurrent)
    relu    bool                   relu instead of tanh
    h0      (B, H) float32 IN      initial state
    lengths (B,) int64 IN          valid steps per sequence, in [1, T]
    reverse bool                   run from each sequence's last valid step back
    out     (T, B, Y) float32 OUT  this direction writes columns out_col:out_col+H
    h_n     (B, H) float32 OUT     final (and running) state
    gates   (B, H) float32         scratch
    clip    float                  pre-activation bound; inf for none
    """
    n_steps, batch = xproj.shape[0], xproj.shape[1]
    hidden = h0.shape[1]
    h_n[:, :] = h0
    ints, floats, chars = blas_args()
    for step in range(n_steps):
        t = step_time(step, n_steps, reverse)
        matmul(h_n, w_hh, gates, ints, floats, chars)
        for b in range(batch):
            if t >= lengths[b]:
                zero_output(out, t, b, out_col, hidden)
                continue
            out_row = out[t, b]
            x_row = xproj[t, b]
            g_row = gates[b]
            h_row = h_n[b]
            for j in range(hidden):
                pre = clip_value(x_row[xcol + j] + g_row[j], clip)
                if relu:
                    h_new = pre if pre > 0.0 else 0.0
                else:
                    h_new = math.tanh(pre)
                h_row[j] = h_new
                out_row[out_col + j] = h_new
