"""LSTM sequence kernel (Numba): the whole time loop of one layer and direction.

Per step, gate order i, f, g, o as in PyTorch:
    gates = xproj[t] + h @ W_hh^T            (B, 4H)
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(c')               (then h' @ W_hr^T with a projection)
Variants (ONNX): peepholes add P_i*c and P_f*c to i and f, P_o*c' to o;
coupled input-forget sets f = 1 - i; clip bounds the gate pre-activations.
"""

import math

from numba import njit

from .numba_common import KERNEL_OPTIONS, blas_args, clip_value, matmul, sigmoid, step_time, zero_output


@njit(**KERNEL_OPTIONS)
def lstm_sequence(xproj, xcol, w_hh, w_hr, h0, c0, lengths, reverse,
                  out, out_col, h_n, c_n, gates, h_full, h_proj, peep, coupled, clip):
    """Run one LSTM direction over all steps.

    xproj   (T, B, X) float32 IN   input projection plus folded biases; this
                                   direction's 4H gates start at column ``xcol``
    w_hh    (H_out, 4H) float32 IN recurrent weights, transposed
    w_hr    (H, P) float32 IN      projection, transposed; (0, 0) without one
    h0      (B, H_out), c0 (B, H)  float32 IN initial state
    lengths (B,) int64 IN          valid steps per sequence, in [1, T]
    reverse bool                   run from each sequence's last valid step back
    out     (T, B, Y) float32 OUT  this direction writes columns out_col:out_col+H_out;
                                   steps past a sequence's length are zeros
    h_n     (B, H_out), c_n (B, H) float32 OUT final (and running) state
    gates   (B, 4H), h_full (B, H), h_proj (B, P) float32 scratch
                                   (h_full, h_proj may be (0, 0) without projection)
    peep    (3, H) float32 IN      peepholes i, f, o; (0, 0) without
    coupled bool                   f = 1 - i
    clip    float                  pre-activation bound; inf for none
    """
    n_steps, batch = xproj.shape[0], xproj.shape[1]
    hidden = c0.shape[1]
    hidden_out = h0.shape[1]
    has_proj = w_hr.shape[0] > 0
    has_peep = peep.shape[0] > 0
    h_n[:, :] = h0
    c_n[:, :] = c0
    ints, floats, chars = blas_args()
    for step in range(n_steps):
        t = step_time(step, n_steps, reverse)
        matmul(h_n, w_hh, gates, ints, floats, chars)
        for b in range(batch):
            if t >= lengths[b]:
                continue
            x_row = xproj[t, b]
            g_row = gates[b]
            c_row = c_n[b]
            h_row = h_full[b] if has_proj else h_n[b]
            for j in range(hidden):
                c_prev = c_row[j]
                pre_i = x_row[xcol + j] + g_row[j]
                pre_f = x_row[xcol + hidden + j] + g_row[hidden + j]
                pre_g = x_row[xcol + 2 * hidden + j] + g_row[2 * hidden + j]
                pre_o = x_row[xcol + 3 * hidden + j] + g_row[3 * hidden + j]
                if has_peep:
                    pre_i += peep[0, j] * c_prev
                    pre_f += peep[1, j] * c_prev
                gate_i = sigmoid(clip_value(pre_i, clip))
                gate_f = 1.0 - gate_i if coupled else sigmoid(clip_value(pre_f, clip))
                c_new = gate_f * c_prev + gate_i * math.tanh(clip_value(pre_g, clip))
                if has_peep:
                    pre_o += peep[2, j] * c_new
                c_row[j] = c_new
                h_row[j] = sigmoid(clip_value(pre_o, clip)) * math.tanh(c_new)
        if has_proj:
            matmul(h_full, w_hr, h_proj, ints, floats, chars)
        for b in range(batch):
            if t >= lengths[b]:
                zero_output(out, t, b, out_col, hidden_out)
                continue
            out_row = out[t, b]
            if has_proj:
                h_n[b, :] = h_proj[b]
            for j in range(hidden_out):
                out_row[out_col + j] = h_n[b, j]
