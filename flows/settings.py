"""Embedded defaults vs servers: one environment variable each points a service elsewhere.

| service | embedded default (no setup)                   | point at a server with          |
|---------|-----------------------------------------------|---------------------------------|
| Prefect | local SQLite under $MS2FLOW_DATA_DIR/prefect   | PREFECT_API_URL                 |
| MLflow  | sqlite:///$MS2FLOW_DATA_DIR/mlflow.db          | MLFLOW_TRACKING_URI             |
| Dask    | LocalCluster                                  | MS2FLOW_DASK_SCHEDULER          |
| datasets| $MS2FLOW_DATA_DIR/datasets                    | MS2FLOW_DATASETS_URL=s3://b/..  |
| files   | $MS2FLOW_DATA_DIR (demos, runs)               | a shared path in MS2FLOW_DATA_DIR |
| MLflow artifacts | $MS2FLOW_DATA_DIR/mlartifacts        | the server's --artifacts-destination |
"""

from __future__ import annotations

import os

from ms2core.paths import data_dir


def mlflow_tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{data_dir() / 'mlflow.db'}"


def mlflow_artifact_root() -> str | None:
    """Where new experiments keep artifacts; None: the tracking server decides (its --artifacts-destination,
    e.g. the object store), which every client of that server can then reach."""
    explicit = os.environ.get("MS2FLOW_MLFLOW_ARTIFACTS")
    if explicit:
        return explicit
    if mlflow_tracking_uri().startswith(("http://", "https://")):
        return None
    return (data_dir() / "mlartifacts").as_uri()


def configure_embedded_defaults() -> None:
    """Must run before prefect is imported: Prefect reads its settings at import."""
    data = data_dir()
    data.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(data / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # Dask's INFO lines (nannies starting, comms closing at shutdown) drown the flow's own progress.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The ephemeral API server's start-up (migrations of a new SQLite db) took over the default 20 s on a
    # busy 2-core machine, and the first flow then failed with "Timed out ... ephemeral Prefect API server".
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    # MLflow's model logging otherwise warns about / probes things that are not available offline.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_TRACKING_URI", mlflow_tracking_uri())
