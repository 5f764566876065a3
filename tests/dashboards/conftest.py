"""A real small data directory (Zarr datasets, SQLite MLflow store, registered model), built once per session."""

from __future__ import annotations

import pytest

from tests.dashboards.sample_data import SampleData, build_in_subprocess

SERVICE_VARS = ("MS2FLOW_DATA_DIR", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")
CLOSED_PORT_API = "http://127.0.0.1:9/api"  # nothing listens on the discard port: refused at once


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> SampleData:
    return build_in_subprocess(tmp_path_factory.mktemp("ms2data"))


@pytest.fixture
def dashboard_env(sample_data, monkeypatch) -> SampleData:
    """Point the dashboard at the sample data; the Prefect API is a closed port."""
    for key in SERVICE_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(sample_data.root))
    monkeypatch.setenv("PREFECT_API_URL", CLOSED_PORT_API)
    return sample_data
