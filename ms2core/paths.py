"""Where embedded defaults keep their data (one directory, overridable by MS2FLOW_DATA_DIR).

    $MS2FLOW_DATA_DIR/            (default ./ms2data)
      demos/<env_id>/<name>.{h5,json}          generated or imported demo pairs
      demos/<env_id>/<name>.<control_mode>.{h5,json}   replayed/converted pairs
      datasets/<env_id>/<dataset>.zarr         rendered Zarr datasets
      runs/<algo>/<env_id>/<run_name>/         checkpoints, resolved config, eval results
      mlflow.db, mlartifacts/                  MLflow SQLite store and artifacts
      prefect/                                 Prefect home (SQLite) for the embedded server

The data directory is a file system path (shared between hosts when scaled out: demo
pairs are HDF5 files and checkpoints are written in place). Datasets alone may live in
an object store: MS2FLOW_DATASETS_URL=s3://bucket/prefix puts rendered stores there
(credentials and endpoint from the usual AWS_* variables, read by s3fs).
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    raw = os.environ.get("MS2FLOW_DATA_DIR", "ms2data")
    if "://" in raw and not raw.startswith("file://"):
        from ms2core.errors import ConfigError

        raise ConfigError(f"MS2FLOW_DATA_DIR={raw} is a URL; the data directory must be a file system path",
                          hint="keep MS2FLOW_DATA_DIR on a (shared) disk and put datasets in the object store "
                               "with MS2FLOW_DATASETS_URL=s3://bucket/datasets")
    return Path(raw.removeprefix("file://")).absolute()


def demos_dir(env_id: str | None = None) -> Path:
    base = data_dir() / "demos"
    return base / env_id if env_id else base


def datasets_dir(env_id: str | None = None) -> Path:
    base = data_dir() / "datasets"
    return base / env_id if env_id else base


def datasets_url(env_id: str | None = None) -> str:
    """Where rendered datasets go by default: $MS2FLOW_DATASETS_URL (local path or s3://...) or datasets_dir()."""
    base = os.environ.get("MS2FLOW_DATASETS_URL", "").rstrip("/")
    if not base:
        return str(datasets_dir(env_id))
    return f"{base}/{env_id}" if env_id else base


def runs_dir() -> Path:
    return data_dir() / "runs"
