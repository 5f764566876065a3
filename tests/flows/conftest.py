"""Flows run against a real (temporary) Prefect server and a real SQLite MLflow store."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh MS2FLOW_DATA_DIR with its own MLflow store."""
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "ms2data"))
    uri = f"sqlite:///{tmp_path / 'ms2data' / 'mlflow.db'}"
    (tmp_path / "ms2data").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MS2FLOW_MLFLOW_ARTIFACTS", (tmp_path / "ms2data" / "mlartifacts").as_uri())
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield tmp_path / "ms2data"
    mlflow.set_tracking_uri(None)


def build_fake_dataset(obs_mode: str = "state", num_episodes: int = 6, n_points: int = 32) -> str:
    """The real data path (generate -> replay -> render -> validate) on the fake backend; returns the store."""
    from pipelines import demos, render, replay, validate
    from storage_schemas.dataset import ObsProcessConfig, RenderConfig, RenderOptions
    from storage_schemas.demos import GenerateDemosConfig, ReplayConfig
    from storage_schemas.validation import ValidationConfig

    generated = demos.run(GenerateDemosConfig(num_episodes=num_episodes, backend="fake", progress=False))
    converted = replay.run(ReplayConfig(input=generated.h5_path, backend="fake", progress=False))
    options = RenderOptions(backend="fake", obs=ObsProcessConfig(obs_mode=obs_mode, n_points=n_points))
    rendered = render.run(RenderConfig(source=converted.h5_path, options=options, workers=0, progress=False))
    report = validate.run(ValidationConfig(path=rendered.store, progress=False)).report
    assert report.status == "passed", report.findings[:3]
    return rendered.store
