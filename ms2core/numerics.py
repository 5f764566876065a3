"""One OpenBLAS kernel for every ms2flow process, so that the simulator's rewards are the same on any x86-64 CPU.

ManiSkill2's dense rewards take ``np.linalg.norm`` of 3-vectors (PickCube: tcp to cube, cube to goal), and
numpy computes a float vector's norm as ``sqrt(dot(x, x))`` through OpenBLAS. OpenBLAS picks its kernel for
the CPU it finds at load time (Cooperlake on this AMD EPYC, Prescott on the GPU host's virtual Xeon), and the
kernels sum in different orders: the same recorded episode rendered on the two hosts gave rewards up to 2 ulps
apart (2 of 281 steps), while states, actions and flags were identical. With one kernel everywhere they agree.

``pin_blas_kernel`` (run when ``ms2core`` is imported, before it imports numpy) sets ``OPENBLAS_CORETYPE`` to
:data:`PINNED_KERNEL` (``Haswell``: AVX2 + FMA, which every x86-64 server since 2013 has; ``Prescott``, the
SSE3 baseline, on a CPU without them) unless the user set it. The variable is read once, when numpy loads
OpenBLAS: it governs this process if numpy was not imported yet, and every process ms2flow starts (simulator
workers, Dask workers), which inherit it. ``blas_kernel()`` says what this process actually runs; datasets record
it (``versions.openblas_core``). Haswell's kernels are slower than AVX-512 ones only for large matrix products;
simulator processes multiply 3x3 and 4x4 transforms.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache

BLAS_KERNEL_ENV = "OPENBLAS_CORETYPE"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _pinned_kernel() -> str | None:
    if platform.machine() not in ("x86_64", "AMD64"):
        return None  # OpenBLAS's x86 kernel names mean nothing elsewhere; nothing to pin
    return "Haswell" if {"avx2", "fma"} <= _cpu_flags() else "Prescott"


#: the kernel ms2flow asks OpenBLAS for on this CPU (None off x86-64)
PINNED_KERNEL = _pinned_kernel()


def pin_blas_kernel() -> None:
    """Set ``OPENBLAS_CORETYPE`` for this process (if numpy is not loaded yet) and its children, unless set."""
    if PINNED_KERNEL is not None:
        os.environ.setdefault(BLAS_KERNEL_ENV, PINNED_KERNEL)


@lru_cache(maxsize=1)
def blas_kernel() -> str:
    """The OpenBLAS kernel numpy runs in this process (e.g. ``Haswell``: fixed when numpy loaded OpenBLAS), or why
    it cannot be said."""
    import ctypes

    import numpy as np

    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    try:
        names = sorted(n for n in os.listdir(libs) if n.startswith("libopenblas"))
    except OSError:
        names = []
    if not names:
        return "unknown (numpy without a bundled OpenBLAS)"
    try:
        lib = ctypes.CDLL(os.path.join(libs, names[0]))
    except OSError as exc:
        return f"unknown ({exc})"
    for symbol in ("openblas_get_corename64_", "openblas_get_corename", "scipy_openblas_get_corename64_"):
        fn = getattr(lib, symbol, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            return (fn() or b"unknown").decode(errors="replace").strip()
    return "unknown (no openblas_get_corename)"


def kernel_mismatch() -> str | None:
    """Why this process's kernel is not the pinned one (numpy imported before ms2core), or None."""
    if PINNED_KERNEL is None or "numpy" not in sys.modules:
        return None
    wanted = os.environ.get(BLAS_KERNEL_ENV, PINNED_KERNEL)
    have = blas_kernel()
    if have.lower() == wanted.lower() or have.startswith("unknown"):
        return None
    return (f"numpy's OpenBLAS runs the {have} kernel, not {wanted} ({BLAS_KERNEL_ENV}): numpy was imported "
            "before ms2core, so rewards may differ from other hosts' in the last bits")
