# The Cython kernels compiled for avx2 (flags in setup.py).

ISA = "avx2"

include "cy_impl.pxi"
