"""Where embedded defaults keep their data (one directory, overridable by MS2FLOW_DATA_DIR).

    $MS2FLOW_DATA_DIR/            (default ./ms2data)
      demos/<env_id>/<name>.{h5,json}          generated or imported demo pairs
      demos/<env_id>/<name>.<control_mode>.{h5,json}   replayed/converted pairs
      datasets/<env_id>/<dataset>.zarr         rendered Zarr datasets
      runs/<algo>/<env_id>/<run_name>/         checkpoints, resolved config, eval results
      mlflow.db, mlartifacts/                  MLflow SQLite store and artifacts
      prefect/                                 Prefect home (SQLite) for the embedded server
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    return Path(os.environ.get("MS2FLOW_DATA_DIR", "ms2data")).absolute()


def demos_dir(env_id: str | None = None) -> Path:
    base = data_dir() / "demos"
    return base / env_id if env_id else base


def datasets_dir(env_id: str | None = None) -> Path:
    base = data_dir() / "datasets"
    return base / env_id if env_id else base


def runs_dir() -> Path:
    return data_dir() / "runs"
