"""The ms2flow learning core: envs, observation processing, networks, algorithms, data."""

from ms2core.numerics import pin_blas_kernel

# Before anything here imports numpy: one OpenBLAS kernel on every CPU (see ms2core.numerics).
pin_blas_kernel()

__version__ = "0.1.0"
