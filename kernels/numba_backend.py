"""The Numba backend: packing plus the three sequence kernels, under one name."""

import numpy as np

from .numba_gru import gru_sequence
from .numba_lstm import lstm_sequence
from .numba_rnn import rnn_sequence

NAME = "numba"


def pack_recurrent(weight):
    """(N, K) torch-layout weight -> (K, N) float32 C-contiguous, the kernels' layout."""
    return np.ascontiguousarray(np.asarray(weight, dtype=np.float32).T)


__all__ = ["NAME", "pack_recurrent", "lstm_sequence", "gru_sequence", "rnn_sequence"]
