"""Choosing a kernel backend: the one place that knows which backends exist.

A backend is a glue module exposing ``NAME``, ``pack_layer(mode, hidden_size,
proj_size, directions)`` and ``run_layers(mode, layers, hidden_size, proj_size,
x, h0, c0, lengths)`` (h0, c0 None: zeros); its kernels live in ``fastlstm.kernels``.  ``FASTLSTM_BACKEND`` forces
one for every layer built with ``backend="auto"``.
"""

import importlib
import os

_MODULES = {
    "cython": "fastlstm.cython_glue",
    "numba": "fastlstm.numba_glue",
}
_loaded = {}
_failed = {}


def _load(name):
    if name not in _loaded and name not in _failed:
        try:
            _loaded[name] = importlib.import_module(_MODULES[name])
        except ImportError as error:  # a backend whose compiler/runtime is missing
            _failed[name] = error
    return _loaded.get(name)


def _preference(precision="fp32"):
    """Backend names in the order "auto" prefers them for ``precision``: the measured rule.

    The Cython kernels built for AVX-512 or AVX2 beat the Numba ones on every config of
    the bench table (``fastlstm bench --configs all``; AVX-512 Xeon: lat_med 1.2 vs
    3.9 ms, thr_med 39 vs 168 ms; AVX2 Zen 3: the README's table), and only they run
    bf16/int8.  Built for the x86-64 baseline (no AVX2, or ``FASTLSTM_ISA=generic``)
    they are slower than Numba (lat_med 5.8 ms vs 3.3 ms), so there fp32 goes to Numba.
    """
    cython = _load("cython")
    if precision != "fp32" or cython is None or cython.ISA != "generic":
        return ["cython", "numba"]
    return ["numba", "cython"]


def available_backends():
    """Names of the backends this installation can run, in the order ``auto`` prefers them
    for fp32 weights."""
    return [name for name in _preference() if _load(name) is not None]


# Backends that run reduced-precision (bf16, int8) weights.
REDUCED_PRECISION = ("cython",)


def _auto_choice(precision):
    """The first backend of ``_preference(precision)`` that loads and runs ``precision``."""
    for name in _preference(precision):
        if (precision == "fp32" or name in REDUCED_PRECISION) and _load(name) is not None:
            return name
    raise RuntimeError(f"no fastlstm backend can run precision={precision!r} here "
                       f"(failed to load: {_failed})")


def resolve_backend(name="auto", precision="fp32"):
    """The backend module for ``name`` ("auto" or one of ``available_backends()``).

    With a reduced ``precision``, "auto" only considers backends that run it.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a string, got {type(name).__name__}")
    if name == "auto":
        name = os.environ.get("FASTLSTM_BACKEND", "auto") or "auto"
        if name == "auto":
            return _loaded[_auto_choice(precision)]
    if name not in _MODULES:
        raise ValueError(f"backend: expected 'auto' or one of {list(_MODULES)}, got {name!r}")
    module = _load(name)
    if module is None:
        raise RuntimeError(f"backend {name!r} is not available in this installation: {_failed[name]}")
    return module
