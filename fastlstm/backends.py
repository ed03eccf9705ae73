"""Choosing a kernel backend: the one place that knows which backends exist.

A backend is a glue module exposing ``NAME``, ``pack_layer(mode, hidden_size,
proj_size, directions)`` and ``run_layers(mode, layers, hidden_size, proj_size,
x, h0, c0, lengths)``; its kernels live in ``fastlstm.kernels``.  ``FASTLSTM_BACKEND`` forces
one for every layer built with ``backend="auto"``.
"""

import importlib
import os

# preference order for "auto"
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


def available_backends():
    """Names of the backends this installation can run, in the order ``auto`` prefers them."""
    return [name for name in _MODULES if _load(name) is not None]


def resolve_backend(name="auto"):
    """The backend module for ``name`` ("auto" or one of ``available_backends()``)."""
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a string, got {type(name).__name__}")
    if name == "auto":
        name = os.environ.get("FASTLSTM_BACKEND", "auto") or "auto"
        if name == "auto":
            available = available_backends()
            if not available:
                raise RuntimeError(f"no fastlstm backend can be loaded: {_failed}")
            return _loaded[available[0]]
    if name not in _MODULES:
        raise ValueError(f"backend: expected 'auto' or one of {list(_MODULES)}, got {name!r}")
    module = _load(name)
    if module is None:
        raise RuntimeError(f"backend {name!r} is not available in this installation: {_failed[name]}")
    return module
