"""``ReversedLayer``: a one-direction layer run from each sequence's last valid step back
to its first, as ONNX ``direction="reverse"`` defines it.

The layer itself runs forwards on a copy of ``x`` whose first ``lengths[b]`` steps are
flipped per sequence; the outputs are flipped back the same way.  Steps past a length stay
where they are (and come out as zeros), so the result is exact for packed batches, and
the final state is the one after each sequence's first step.
"""

import numpy as np

from .. import _validate
from .._arrays import as_float32


def _flip_within_lengths(array, lengths, time_axis):
    """array (T, B, ...) or (B, T, ...) -> a copy with steps [0, lengths[b]) reversed per b."""
    n_steps = array.shape[time_axis]
    steps = np.arange(n_steps)[:, None]                                    # (T, 1)
    index = np.where(steps < lengths[None, :], lengths[None, :] - 1 - steps, steps)  # (T, B)
    if time_axis == 1:
        index = index.T                                                    # (B, T)
    index = index.reshape(index.shape + (1,) * (array.ndim - 2))
    return np.take_along_axis(array, index, axis=time_axis)


class ReversedLayer:
    """Wraps a one-direction ``LSTM``/``GRU``/``RNN`` so it reads each sequence backwards.

    Same call as the wrapped layer: ``layer(x, hx=None, lengths=None)``; ``out`` is aligned
    with ``x`` (out[t] is the state after reading steps t .. length-1), the final state is
    the one after step 0.  Other attributes (``hidden_size``, ``state_dict()``, ...) are the
    wrapped layer's; ``.layer`` is the wrapped layer itself.
    """

    def __init__(self, layer):
        if getattr(layer, "bidirectional", False):
            raise ValueError(f"layer: expected a one-direction layer, got {layer!r}")
        self.layer = layer

    def __getattr__(self, name):
        if name == "layer":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.layer, name)

    def load_state_dict(self, state_dict):
        self.layer.load_state_dict(state_dict)
        return self

    def __call__(self, x, hx=None, lengths=None):
        x = as_float32(x, "x")
        if x.ndim not in (2, 3):  # the wrapped layer reports the bad shape
            return self.layer(x, hx, lengths)
        if x.ndim == 2:  # unbatched (T, I): one sequence
            time_axis, batch = 0, 1
            lengths = None if lengths is None else np.asarray(lengths).reshape(-1)
            checked = _validate.check_lengths(lengths, batch, x.shape[0])
            x_rev = _flip_within_lengths(x[:, None], checked, 0)[:, 0]
        else:
            time_axis = 1 if self.layer.batch_first else 0
            batch = x.shape[1 - time_axis]
            checked = _validate.check_lengths(lengths, batch, x.shape[time_axis])
            x_rev = _flip_within_lengths(x, checked, time_axis)
        out, state = self.layer(x_rev, hx, lengths)
        if x.ndim == 2:
            out = _flip_within_lengths(out[:, None], checked, 0)[:, 0]
        else:
            out = _flip_within_lengths(out, checked, time_axis)
        return np.ascontiguousarray(out), state

    forward = __call__

    def __repr__(self):
        return f"ReversedLayer({self.layer!r})"
