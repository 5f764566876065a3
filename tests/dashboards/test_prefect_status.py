"""The pipeline-status page against a real (temporary) Prefect API server with real flow runs."""

from __future__ import annotations

import os

import pytest
from streamlit.testing.v1 import AppTest


@pytest.fixture
def prefect_api(tmp_path, monkeypatch):
    """A temporary Prefect server (SQLite in tmp) with one completed and one failed flow run."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect import flow
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    @flow(name="demo-to-dataset")
    def demo_to_dataset() -> int:
        return 1

    @flow(name="train-bc")
    def train_bc() -> None:
        raise RuntimeError("diverged")

    with prefect_test_harness(server_startup_timeout=120):
        demo_to_dataset()
        train_bc(return_state=True)
        yield PREFECT_API_URL.value()


def test_pipeline_page_lists_latest_flow_runs_and_states(prefect_api, monkeypatch):
    from dashboards.read_prefect import latest_flow_runs

    status = latest_flow_runs(prefect_api)
    assert status.reachable, status.error
    assert {(r["flow"], r["state"]) for r in status.runs} == {("demo-to-dataset", "COMPLETED"), ("train-bc", "FAILED")}

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    at = AppTest.from_string("from dashboards.views import pipeline\npipeline.render()\n", default_timeout=60)
    at.run()
    assert not at.exception and not at.warning
    assert {m.label: m.value for m in at.metric} == {"completed": "1", "failed": "1"}
    table = at.dataframe[0].value
    assert set(table["flow"]) == {"demo-to-dataset", "train-bc"}
    assert any("train-bc" in m.value and "FAILED" in m.value for m in at.markdown)
    assert os.environ["PREFECT_API_URL"] == prefect_api
