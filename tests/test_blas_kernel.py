"""One OpenBLAS kernel in every ms2flow process (ms2core.numerics): the rewards' np.linalg.norm sums in one order.

Each case runs a fresh interpreter (the kernel is chosen once, when numpy loads OpenBLAS) without the
variable this test process inherited from its own ``import ms2core``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ms2core.numerics import BLAS_KERNEL_ENV, PINNED_KERNEL
from ms2core.workers.interpreter import worker_environment

pytestmark = pytest.mark.skipif(PINNED_KERNEL is None, reason="OpenBLAS kernels are pinned on x86-64 only")

REPORT = ("import json, os\nimport numpy\nfrom ms2core.numerics import blas_kernel, kernel_mismatch\n"
          "print(json.dumps({'kernel': blas_kernel(), 'mismatch': kernel_mismatch(), "
          "'env': os.environ.get('OPENBLAS_CORETYPE')}))")


def _run(code: str, env: dict[str, str] | None = None) -> dict:
    base = dict(env if env is not None else os.environ)
    if env is None:
        base.pop(BLAS_KERNEL_ENV, None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base["PYTHONPATH"] = os.pathsep.join(p for p in [root, base.get("PYTHONPATH", "")] if p)
    out = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _default_kernel() -> str:
    return _run(REPORT)["kernel"]  # numpy first: what OpenBLAS picks for this CPU


def test_importing_ms2core_first_pins_the_kernel():
    got = _run("import ms2core\n" + REPORT)
    assert got["env"] == PINNED_KERNEL
    assert got["kernel"].lower() == PINNED_KERNEL.lower()
    assert got["mismatch"] is None


def test_processes_ms2flow_starts_run_the_pinned_kernel_whatever_they_import_first():
    # A simulator worker's environment (the pool's, and Dask's LocalCluster workers inherit os.environ,
    # which `import ms2core` set): numpy loads the pinned kernel even before ms2core is imported.
    env = worker_environment()
    assert env[BLAS_KERNEL_ENV] == os.environ[BLAS_KERNEL_ENV]
    got = _run(REPORT, env=env)  # numpy first
    assert got["kernel"].lower() == PINNED_KERNEL.lower()


def test_a_kernel_the_user_sets_is_kept():
    env = {k: v for k, v in os.environ.items() if k != BLAS_KERNEL_ENV}
    env[BLAS_KERNEL_ENV] = "Prescott"
    got = _run("import ms2core\n" + REPORT, env=env)
    assert got["env"] == "Prescott" and got["kernel"].lower() == "prescott"
    assert got["mismatch"] is None


def test_numpy_loaded_before_ms2core_is_reported():
    default = _default_kernel()
    if default.lower() == PINNED_KERNEL.lower():
        pytest.skip(f"this CPU's default kernel is already {default}")
    got = _run("import numpy\nimport ms2core\n" + REPORT)
    assert got["kernel"] == default
    assert default in got["mismatch"] and PINNED_KERNEL in got["mismatch"]


def test_the_test_process_runs_the_pinned_kernel_too():
    # conftest imports ms2core before numpy: in-process simulations in tests agree with the workers'
    from ms2core.numerics import blas_kernel

    if blas_kernel().startswith("unknown"):
        pytest.skip(blas_kernel())
    assert blas_kernel().lower() == os.environ.get(BLAS_KERNEL_ENV, PINNED_KERNEL).lower()
