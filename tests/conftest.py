"""Shared fixtures. Markers (sim, slow, gpu) are registered in pyproject.toml."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

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
