"""Where the dashboard reads from, re-derived from the environment (dashboards may not import flows).

| source   | default (embedded)                          | override                |
|----------|---------------------------------------------|-------------------------|
| data dir | ./ms2data                                   | MS2FLOW_DATA_DIR        |
| datasets | $MS2FLOW_DATA_DIR/datasets/<env_id>/*.zarr  | (follows the data dir)  |
| MLflow   | sqlite:///$MS2FLOW_DATA_DIR/mlflow.db       | MLFLOW_TRACKING_URI     |
| Prefect  | http://127.0.0.1:4200/api (local server)    | PREFECT_API_URL         |

The same rules as flows/settings.py, so the dashboard and the flows agree on
where things are without the dashboard depending on the flows layer.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PREFECT_API_URL = "http://127.0.0.1:4200/api"


def data_dir() -> Path:
    return Path(os.environ.get("MS2FLOW_DATA_DIR", "ms2data")).absolute()


def datasets_dir() -> Path:
    return data_dir() / "datasets"


def mlflow_tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{data_dir() / 'mlflow.db'}"


def prefect_api_url() -> tuple[str, bool]:
    """The Prefect API to ask, and whether it was configured (False: the local-server default)."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url.rstrip("/"), True
    return DEFAULT_PREFECT_API_URL, False
