"""Tunables of the Numba kernels, in one place.

``fastmath`` leaves out ``nnan`` and ``ninf`` so NaN and infinity propagate
honestly through the kernels.
"""

import os

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Numba writes compiled kernels next to the module (``__pycache__``) so a second
# process loads them instead of compiling.  Set FASTLSTM_NUMBA_CACHE=0 to turn off.
CACHE = os.environ.get("FASTLSTM_NUMBA_CACHE", "1") != "0"

# Below this batch size the recurrent product is a hand-written loop, above it
# BLAS sgemm.  Per-step call overhead of sgemm dominates at batch 1.
BLAS_MIN_BATCH = 2
