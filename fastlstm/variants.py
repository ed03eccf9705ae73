"""The cell variants of the classic LSTM literature, as ONNX defines them.

- peephole (LSTM): i and f see c_prev, o sees c_new through per-unit weights
  P (3, H) in the order i, f, o, stored under ``weight_peephole_l{k}[_reverse]``.
- coupled_input_forget (LSTM, ONNX ``input_forget=1``): f = 1 - i.
- clip (every cell type): gate pre-activations bounded to [-clip, clip] before
  their activation functions; the cell state itself is not clipped.
- linear_before_reset (GRU): True is PyTorch's (and Keras' reset_after) GRU,
  n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); False is the original GRU,
  n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    peephole: bool = False
    coupled_input_forget: bool = False
    clip: float = None
    linear_before_reset: bool = True

    @property
    def is_pytorch(self):
        return self == Variant()


def make_variant(mode, proj_size, peephole=False, coupled_input_forget=False, clip=None,
                 linear_before_reset=True):
    """A validated Variant; combinations no reference defines raise ValueError."""
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float)):
            raise TypeError(f"clip: expected a positive number or None, got {type(clip).__name__}")
        if not (clip > 0 and math.isfinite(clip)):
            raise ValueError(f"clip: expected a positive finite number or None, got {clip}")
        clip = float(clip)
    variant = Variant(bool(peephole), bool(coupled_input_forget), clip, bool(linear_before_reset))
    if mode != "LSTM" and (variant.peephole or variant.coupled_input_forget):
        raise ValueError("peephole and coupled_input_forget are LSTM variants, "
                         f"not defined for {mode}")
    if mode != "GRU" and not variant.linear_before_reset:
        raise ValueError(f"linear_before_reset=False is a GRU variant, not defined for {mode}")
    if proj_size and not variant.is_pytorch:
        raise ValueError(f"proj_size={proj_size} cannot be combined with {variant}: "
                         "no reference (PyTorch or ONNX) defines a projection with these variants")
    return variant
