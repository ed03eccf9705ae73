"""Capping the threads of the BLAS the Numba kernels call (SciPy's OpenBLAS).

OpenBLAS spawns its own threads for a matrix product; left alone they ignore
``fastlstm.set_num_threads`` and, on a busy machine, spin against our own
threads (measured: lat_small 31 ms instead of 1 ms on two loaded cores).
``openblas_set_num_threads_local`` (OpenBLAS >= 0.3.27) sets the count for the
calling thread only, so other users of SciPy are not affected.  Where the
library or the symbol is missing, nothing is capped.
"""

import ctypes
import glob
import os


def _find_setter():
    import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS into the process)

    candidates = []
    try:
        with open("/proc/self/maps") as maps:
            candidates = [line.split()[-1] for line in maps if "openblas" in line.lower()]
    except OSError:
        pass
    scipy_dir = os.path.dirname(os.path.dirname(scipy.linalg.cython_blas.__file__))
    candidates += glob.glob(os.path.join(os.path.dirname(scipy_dir), "scipy.libs", "*openblas*"))
    for path in candidates:
        if "scipy.libs" not in path:
            continue
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes = [ctypes.c_int]
        setter.restype = ctypes.c_int
        return setter
    return None


_setter = _find_setter()


class capped:
    """``with capped(n):`` SciPy's BLAS uses at most n threads on this thread."""

    __slots__ = ("count", "previous")

    def __init__(self, count):
        self.count = count

    def __enter__(self):
        if _setter is not None:
            self.previous = _setter(self.count)
        return self

    def __exit__(self, *exc):
        if _setter is not None:
            _setter(self.previous)
        return False
