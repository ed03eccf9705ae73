"""What every backend's packing starts from: per layer and direction, the
PyTorch-layout float32 weights, with the biases folded where the equations allow.

Each backend's glue (numba_glue, cython_glue) turns these into its own layout
once, at load.
"""

import numpy as np

from .params import GATES


def fold_bias(mode, hidden_size, b_ih, b_hh):
    """Input-side bias (G*H,) and GRU's b_hn (H,) (zeros elsewhere).

    LSTM/RNN: b_ih + b_hh.  GRU: b_hr and b_hz fold into the input side, but
    b_hn stays inside the reset product r * (W_hn h + b_hn).
    """
    gates = GATES[mode] * hidden_size
    if b_ih is None:
        return np.zeros(gates, np.float32), np.zeros(hidden_size, np.float32)
    if mode == "GRU":
        folded = b_ih.copy()
        folded[: 2 * hidden_size] += b_hh[: 2 * hidden_size]
        return folded, np.ascontiguousarray(b_hh[2 * hidden_size:])
    return b_ih + b_hh, np.zeros(hidden_size, np.float32)


def _direction(params, mode, hidden_size, tag):
    bias, b_hn = fold_bias(mode, hidden_size, params.get(f"bias_ih{tag}"), params.get(f"bias_hh{tag}"))
    return {
        "w_ih": params[f"weight_ih{tag}"],   # (G*H, I)
        "w_hh": params[f"weight_hh{tag}"],   # (G*H, H_out)
        "bias": bias,                        # (G*H,)
        "b_hn": b_hn,                        # (H,)
        "w_hr": params.get(f"weight_hr{tag}"),  # (P, H) or None
        "peep": params.get(f"weight_peephole{tag}"),  # (3, H) i, f, o, or None
    }


def sequence_weights(params, mode, hidden_size, num_layers, suffixes):
    """[[direction dict, ...] per layer] from an ``nn.LSTM``/``GRU``/``RNN`` state dict."""
    return [[_direction(params, mode, hidden_size, f"_l{layer}{suffix}") for suffix in suffixes]
            for layer in range(num_layers)]


def cell_weights(params, mode, hidden_size):
    """[[direction dict]]: an ``nn.*Cell`` state dict as a one-layer, one-direction stack."""
    return [[_direction(params, mode, hidden_size, "")]]


def sort_by_length(lengths):
    """Permutation putting the longest sequences first (stable), or None when already sorted.

    With rows in that order, the rows still running at step t are a prefix, for
    the forward and the reverse direction alike.
    """
    if np.all(lengths[:-1] >= lengths[1:]):
        return None
    return np.argsort(-lengths, kind="stable")
