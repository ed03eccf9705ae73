"""GRU sequence kernel (Numba): the whole time loop of one layer and direction.

Per step, gate order r, z, n as in PyTorch (b_hn stays inside the reset product):
    gh = h @ W_hh^T                                   (B, 3H)
    r = sigmoid(x_r + gh_r), z = sigmoid(x_z + gh_z)  (b_ih and b_hr, b_hz folded in x)
    n = tanh(x_n + r * (gh_n + b_hn))
    h' = (1 - z) * n + z * h
The original GRU (ONNX linear_before_reset=0) applies r before the product:
    n = tanh(x_n + (r * h) @ W_hn^T + b_hn)
"""

import math

from numba import njit

from .numba_common import KERNEL_OPTIONS, blas_args, clip_value, matmul, sigmoid, step_time, zero_output


@njit(**KERNEL_OPTIONS)
def gru_sequence(xproj, xcol, w_hh, b_hn, h0, lengths, reverse, out, out_col, h_n, gates,
                 w_hn, gates_n, rh, clip):
    """Run one GRU direction over all steps.

    xproj   (T, B, X) float32 IN   input projection plus folded biases; this
                                   direction's 3H gates start at column ``xcol``
    w_hh    (H, 3H) float32 IN     recurrent weights, transposed; (H, 2H) (r, z only)
                                   for the original GRU
    b_hn    (H,) float32 IN        recurrent bias of the new gate (zeros without bias)
    h0      (B, H) float32 IN      initial state
    lengths (B,) int64 IN          valid steps per sequence, in [1, T]
    reverse bool                   run from each sequence's last valid step back
    out     (T, B, Y) float32 OUT  this direction writes columns out_col:out_col+H
    h_n     (B, H) float32 OUT     final (and running) state
    gates   (B, 3H) float32        scratch ((B, 2H) for the original GRU)
    w_hn    (H, H) float32 IN      original GRU: new-gate weights, transposed; (0, 0) for
                                   PyTorch's GRU
    gates_n, rh (B, H) float32     original GRU scratch; (0, 0) otherwise
    clip    float                  pre-activation bound; inf for none
    """
    n_steps, batch = xproj.shape[0], xproj.shape[1]
    hidden = h0.shape[1]
    reset_before = w_hn.shape[0] > 0
    h_n[:, :] = h0
    ints, floats, chars = blas_args()
    for step in range(n_steps):
        t = step_time(step, n_steps, reverse)
        matmul(h_n, w_hh, gates, ints, floats, chars)
        if reset_before:
            for b in range(batch):
                for j in range(hidden):
                    pre_r = xproj[t, b, xcol + j] + gates[b, j]
                    rh[b, j] = sigmoid(clip_value(pre_r, clip)) * h_n[b, j]
            matmul(rh, w_hn, gates_n, ints, floats, chars)
        for b in range(batch):
            if t >= lengths[b]:
                zero_output(out, t, b, out_col, hidden)
                continue
            out_row = out[t, b]
            x_row = xproj[t, b]
            g_row = gates[b]
            h_row = h_n[b]
            for j in range(hidden):
                gate_z = sigmoid(clip_value(x_row[xcol + hidden + j] + g_row[hidden + j], clip))
                if reset_before:
                    pre_n = x_row[xcol + 2 * hidden + j] + gates_n[b, j] + b_hn[j]
                else:
                    gate_r = sigmoid(clip_value(x_row[xcol + j] + g_row[j], clip))
                    pre_n = x_row[xcol + 2 * hidden + j] + gate_r * (g_row[2 * hidden + j] + b_hn[j])
                gate_n = math.tanh(clip_value(pre_n, clip))
                h_new = (1.0 - gate_z) * gate_n + gate_z * h_row[j]
                h_row[j] = h_new
                out_row[out_col + j] = h_new
