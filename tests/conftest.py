"""Shared fixtures. Markers (sim, slow, gpu) are registered in pyproject.toml."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# ms2core before numpy: the test process runs the OpenBLAS kernel every ms2flow process runs (ms2core.numerics),
# so in-process simulations agree bit for bit with the workers'. (zarr's pytest plugin, which imports numpy
# before any conftest, is disabled in pyproject.toml's addopts.)
import ms2core  # noqa: E402, F401

REPO_ROOT = Path(__file__).resolve().parents[1]
HAS_SIMULATOR = importlib.util.find_spec("mani_skill2") is not None and importlib.util.find_spec("sapien") is not None

# Keep the test run from writing into the user's data directory or MLflow store.
os.environ.setdefault("MS2FLOW_DISABLE_TELEMETRY", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_SIMULATOR:
        return
    skip = pytest.mark.skip(reason="mani_skill2/sapien are not installed (Python 3.11 only)")
    for item in items:
        if "sim" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs its script as ``__main__`` and leaves it there; spawned processes
    (Dask workers, simulator workers) re-import ``__main__`` and then fail to start ("Nanny failed
    to start"), so a test's outcome depended on which test ran before it in the same process."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
