"""Building blocks shared by the Numba sequence kernels.

Contracts, row-major throughout:
    matmul(a (M,K), b (K,N), c (M,N) OUT)   c = a @ b
    sigmoid(x), tanh via math.tanh           scalar, float32 in and out
"""

import math

import llvmlite.binding
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

from .config import BLAS_MIN_BATCH, CACHE, FASTMATH

# SciPy's BLAS sgemm bound as a named symbol (not a ctypes pointer) so that the
# kernels calling it can be cached on disk.
llvmlite.binding.add_symbol(
    "fastlstm_sgemm", get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
_sgemm = types.ExternalFunction("fastlstm_sgemm", types.void(*([types.voidptr] * 13)))

KERNEL_OPTIONS = dict(nogil=True, cache=CACHE, fastmath=FASTMATH, error_model="numpy")


@njit(**KERNEL_OPTIONS)
def sigmoid(x):
    return np.float32(1.0) / (np.float32(1.0) + math.exp(-x))


@njit(**KERNEL_OPTIONS)
def _matmul_loop(a, b, c):
    # Row of c accumulated as axpy over rows of b: contiguous, vectorisable.
    m_rows, k_dim = a.shape
    n_cols = b.shape[1]
    for m in range(m_rows):
        row = c[m]
        for n in range(n_cols):
            row[n] = 0.0
        for k in range(k_dim):
            a_mk = a[m, k]
            b_k = b[k]
            for n in range(n_cols):
                row[n] += a_mk * b_k[n]


@njit(**KERNEL_OPTIONS)
def blas_args():
    """Scratch for the pointer arguments of sgemm, allocated once per sequence."""
    return np.empty(6, np.int32), np.empty(2, np.float32), np.empty(1, np.uint8)


@njit(**KERNEL_OPTIONS)
def matmul(a, b, c, ints, floats, chars):
    """c (M,N) = a (M,K) @ b (K,N); all C-contiguous float32."""
    m_rows, k_dim = a.shape
    n_cols = b.shape[1]
    if m_rows == 0 or n_cols == 0:
        return
    if k_dim == 0:
        c[:, :] = 0.0
        return
    if m_rows < BLAS_MIN_BATCH:
        _matmul_loop(a, b, c)
        return
    # Row-major c = a @ b is column-major c^T = b^T @ a^T: swap operands.
    chars[0] = ord("N")
    ints[0] = n_cols
    ints[1] = m_rows
    ints[2] = k_dim
    ints[3] = n_cols
    ints[4] = k_dim
    ints[5] = n_cols
    floats[0] = 1.0
    floats[1] = 0.0
    _sgemm(chars.ctypes, chars.ctypes, ints[0:].ctypes, ints[1:].ctypes, ints[2:].ctypes,
           floats.ctypes, b.ctypes, ints[3:].ctypes, a.ctypes, ints[4:].ctypes,
           floats[1:].ctypes, c.ctypes, ints[5:].ctypes)


@njit(**KERNEL_OPTIONS)
def clip_value(x, clip):
    """x bounded to [-clip, clip] (clip = inf: unchanged); NaN passes through."""
    if x > clip:
        return clip
    if x < -clip:
        return -clip
    return x


@njit(**KERNEL_OPTIONS)
def project(x, w, bias, out):
    """out (N, X) = x (N, I) @ w (I, X) + bias (X,): the input projection of all steps."""
    ints, floats, chars = blas_args()
    matmul(x, w, out, ints, floats, chars)
    n_rows, n_cols = out.shape
    for n in range(n_rows):
        row = out[n]
        for j in range(n_cols):
            row[j] += bias[j]


@njit(**KERNEL_OPTIONS)
def zero_output(out, t, b, out_col, width):
    """out[t, b, out_col:out_col+width] = 0: a step past sequence b's length."""
    row = out[t, b]
    for j in range(width):
        row[out_col + j] = 0.0


@njit(**KERNEL_OPTIONS)
def step_time(step, n_steps, reverse):
    """Time index of loop iteration ``step``: forward 0..T-1, reverse T-1..0."""
    if reverse:
        return n_steps - 1 - step
    return step
