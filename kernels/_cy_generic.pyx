# The Cython kernels compiled for generic (flags in setup.py).

ISA = "generic"

include "cy_impl.pxi"
