# The Cython kernels compiled for avx512 (flags in setup.py).

ISA = "avx512"

include "cy_impl.pxi"
