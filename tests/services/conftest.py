"""The services tier: one topology (tests/services/topology.py) per module, always torn down."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.services.topology import Topology, postgres_unavailable_reason


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/services/" in str(item.fspath):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="module")
def topology():
    reason = postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    pytest.importorskip("psycopg2", reason="the MLflow server's PostgreSQL driver (pip install psycopg2-binary)")
    root = Path(tempfile.mkdtemp(prefix="ms2flow-services-"))
    topo = Topology(root)
    try:
        # Slow starters first, in parallel: the servers boot while Dask comes up.
        topo.start_postgres()
        topo.start_s3()
        topo.start_prefect_server()
        topo.start_mlflow()
        topo.start_dask(n_workers=2)
        topo.wait_for_servers()
        topo.start_prefect_worker("cpu")
        topo.deploy("cpu", ["flows/data.py:demo_to_dataset", "flows/train.py:train_bc"])
        yield topo
    finally:
        topo.stop()
        left = topo.leftovers()
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes outlived the topology: {left}"
