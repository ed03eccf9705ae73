"""Picking the Cython kernel module built for the best instruction set this CPU has.

_cy_generic runs anywhere (x86-64 baseline); it is imported first to ask the
CPU, and the AVX-512 or AVX2 module is imported only when the CPU supports it,
because their code (module set-up included) may use those instructions.
``FASTLSTM_ISA=avx512|avx2|generic`` caps the choice, so the portable paths can
be tested on any machine.
"""

import importlib
import os

ORDER = ("avx512", "avx2", "generic")


def load():
    """The best usable kernel module; ImportError when none is built."""
    cap = os.environ.get("FASTLSTM_ISA", "avx512") or "avx512"
    if cap not in ORDER:
        raise ValueError(f"FASTLSTM_ISA: expected one of {ORDER}, got {cap!r}")
    generic = importlib.import_module("fastlstm.kernels._cy_generic")
    supported = {"avx512": generic.cpu_supports_avx512(), "avx2": generic.cpu_supports_avx2(),
                 "generic": True}
    for isa in ORDER[ORDER.index(cap):]:
        if supported[isa]:
            try:
                return importlib.import_module(f"fastlstm.kernels._cy_{isa}")
            except ImportError:
                continue
    return generic
