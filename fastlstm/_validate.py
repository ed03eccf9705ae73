"""Checks on call arguments: everything is validated here before a kernel sees it.

Errors name the argument, the expected and the received shape or dtype.
"""

import numpy as np

from ._arrays import to_numpy, as_float32


def check_sequence_input(x, input_size, batch_first):
    """x -> ((T, B, I) float32 C-contiguous, batched).

    Accepts (T, B, I), (B, T, I) with batch_first, or unbatched (T, I).
    """
    x = as_float32(x, "x")
    layout = "(B, T, I)" if batch_first else "(T, B, I)"
    if x.ndim == 2:
        batched = False
        x = x[:, None, :]
    elif x.ndim == 3:
        batched = True
        if batch_first:
            x = x.transpose(1, 0, 2)
    else:
        raise ValueError(f"x: expected a 3-D array {layout} or an unbatched 2-D array (T, I) "
                         f"with I={input_size}, got shape {x.shape}")
    if x.shape[2] != input_size:
        raise ValueError(f"x: expected feature size I={input_size} in the last dimension, "
                         f"got shape {x.shape if batched else x[:, 0].shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x: expected at least one step and one sequence, got shape "
                         f"{x.shape if batched else x[:, 0].shape}")
    return np.ascontiguousarray(x), batched


def check_cell_input(x, input_size):
    """x -> ((B, I) float32 C-contiguous, batched); accepts (B, I) or unbatched (I,)."""
    x = as_float32(x, "x")
    if x.ndim not in (1, 2):
        raise ValueError(f"x: expected a 2-D array (B, I) or an unbatched 1-D array (I,) "
                         f"with I={input_size}, got shape {x.shape}")
    batched = x.ndim == 2
    if not batched:
        x = x[None, :]
    if x.shape[1] != input_size or x.shape[0] == 0:
        raise ValueError(f"x: expected shape (B, {input_size}) with B >= 1 or ({input_size},), "
                         f"got {x.shape if batched else x[0].shape}")
    return np.ascontiguousarray(x), batched


def check_state(value, name, shape, batched):
    """A state -> float32 C-contiguous of ``shape`` (which includes B; unbatched states omit it)."""
    state = as_float32(value, name)
    expected = shape if batched else shape[:-2] + shape[-1:]
    if tuple(state.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got {tuple(state.shape)}")
    if not batched:
        state = state[..., None, :]  # (np.expand_dims costs 2.5 us a call, a quarter of a step)
    return np.ascontiguousarray(state)


def check_lengths(lengths, batch, n_steps):
    """lengths -> (B,) int64 in [1, T]; None means every sequence has T steps."""
    if lengths is None:
        return np.full(batch, n_steps, dtype=np.int64)
    array = to_numpy(lengths)
    if array.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected an integer array, got dtype {array.dtype}")
    if array.shape != (batch,):
        raise ValueError(f"lengths: expected shape ({batch},) (one length per sequence), "
                         f"got {array.shape}")
    if array.min() < 1 or array.max() > n_steps:
        raise ValueError(f"lengths: expected values in [1, T={n_steps}], "
                         f"got min {array.min()} and max {array.max()}")
    return np.ascontiguousarray(array, dtype=np.int64)


def check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)
