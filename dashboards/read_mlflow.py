"""Reading MLflow for display: runs per task, metric histories, parameters, registry, eval artifacts.

Conventions written by flows/tracking.py and flows/registry.py:
one experiment per task (named by env id); runs carry an ``algo`` tag or param;
metrics such as train/loss (BC) or mean_return/success_rate (online RL) with step = the
algorithm's own counter: gradient updates for BC, env steps for the RL algorithms (step_unit), and
eval/success_rate etc. of the final evaluation; registered models ``ms2-<task>-<algo>`` with aliases
candidate/champion and a version tag ``eval_success_rate``; evaluation results
as JSON under an ``eval`` artifact directory and videos as .mp4 artifacts.

The embedded SQLite store is never created from here: if the file does not
exist the dashboard says so instead of running MLflow's migrations.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

SUCCESS_TAG = "eval_success_rate"
ALIASES = ("champion", "candidate")
EVAL_DIR = "eval"
# Metrics drawn by default when present (others can be picked in the page).
PREFERRED_METRICS = ["eval/success_rate", "success_rate", "mean_return", "train/loss"]
#: What a metric's step counts, per algorithm (ms2core.algos: BC's sink.log(..., updates), RL's (..., env_steps)).
STEP_UNITS = {"bc": "updates"}
DEFAULT_STEP_UNIT = "env steps"
MAX_ARTIFACT_DEPTH = 4
RUN_COLUMNS = ["run_id", "run_name", "task", "algo", "status", "start_time"]


class StoreMissing(Exception):
    """The embedded SQLite file does not exist yet (nothing was tracked)."""


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


# Set by dashboards.server for the dashboard process: a tracking server that is down must give a
# message within seconds, not after MLflow's default minutes of retries with backoff, and a
# progress bar per downloaded artifact would only clutter the server log.
MLFLOW_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def client_for(uri: str):
    """An MlflowClient, refusing to create an embedded store that does not exist."""
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise StoreMissing(str(path))
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _algo_of(run) -> str:
    return run.data.tags.get("algo") or run.data.params.get("algo") or "?"


def step_unit(algo: str) -> str:
    return STEP_UNITS.get(algo, DEFAULT_STEP_UNIT)


def runs_table(client) -> pd.DataFrame:
    """One row per run across all experiments (task = experiment name)."""
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    rows = []
    if not experiments:
        return pd.DataFrame(columns=RUN_COLUMNS)
    for run in client.search_runs(list(experiments), max_results=5000, order_by=["attributes.start_time DESC"]):
        row = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name or run.info.run_id[:8],
            "task": experiments.get(run.info.experiment_id, run.info.experiment_id),
            "algo": _algo_of(run),
            "status": run.info.status,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms") if run.info.start_time else None,
        }
        for key, value in run.data.metrics.items():
            row[key] = value  # latest value of each metric
        rows.append(row)
    return pd.DataFrame(rows)


def metric_histories(client, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    """Long table run_id, metric, step, value (step as logged: see step_unit)."""
    rows = []
    for run_id in run_ids:
        for key in keys:
            for m in client.get_metric_history(run_id, key):
                rows.append({"run_id": run_id, "metric": key, "step": m.step, "value": m.value, "timestamp": m.timestamp})
    frame = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value", "timestamp"])
    return frame.sort_values(["run_id", "metric", "step"]) if len(frame) else frame


def params_side_by_side(client, run_ids: list[str], labels: dict[str, str]) -> pd.DataFrame:
    """Index = parameter name, one column per run (run label)."""
    columns = {}
    for run_id in run_ids:
        run = client.get_run(run_id)
        columns[labels.get(run_id, run_id)] = pd.Series(run.data.params | {"algo (tag)": run.data.tags.get("algo", "")})
    frame = pd.DataFrame(columns)
    return frame.sort_index().fillna("")


def differing_rows(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.shape[1] < 2:
        return frame
    return frame[frame.nunique(axis=1, dropna=False) > 1]


@dataclass
class ModelVersionRow:
    name: str
    version: str
    aliases: list[str]
    success_rate: float | None
    run_id: str | None
    source: str
    created: Any
    status: str


def registered_models(client) -> list[tuple[str, dict[str, str], str]]:
    """(name, aliases -> version, description) of every registered model."""
    found = []
    for model in client.search_registered_models(max_results=1000):
        aliases = {str(a): str(v) for a, v in (getattr(model, "aliases", {}) or {}).items()}
        found.append((model.name, aliases, model.description or ""))
    return sorted(found)


def model_versions(client, name: str) -> list[ModelVersionRow]:
    model = client.get_registered_model(name)
    alias_of: dict[str, list[str]] = {}
    for alias, version in (getattr(model, "aliases", {}) or {}).items():
        alias_of.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{name}'"):
        tag = mv.tags.get(SUCCESS_TAG)
        try:
            rate = float(tag) if tag is not None else None
        except ValueError:
            rate = None
        rows.append(
            ModelVersionRow(
                name=name,
                version=str(mv.version),
                aliases=sorted(alias_of.get(str(mv.version), [])),
                success_rate=rate,
                run_id=mv.run_id,
                source=mv.source,
                created=pd.to_datetime(mv.creation_timestamp, unit="ms") if mv.creation_timestamp else None,
                status=str(mv.status),
            )
        )
    return sorted(rows, key=lambda r: int(r.version) if r.version.isdigit() else 0, reverse=True)


def list_artifacts_recursive(client, run_id: str, path: str | None = None, depth: int = 0) -> list[str]:
    files = []
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            if depth < MAX_ARTIFACT_DEPTH:
                files += list_artifacts_recursive(client, run_id, info.path, depth + 1)
        else:
            files.append(info.path)
    return files


def eval_json_paths(artifacts: list[str]) -> list[str]:
    return [p for p in artifacts if p.endswith(".json") and (p.split("/")[0] == EVAL_DIR or f"/{EVAL_DIR}/" in p)]


def video_paths(artifacts: list[str]) -> list[str]:
    return [p for p in artifacts if p.lower().endswith(".mp4")]


def download_artifact_bytes(client, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="ms2dash-") as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return Path(local).read_bytes()


def read_eval_results(client, run_id: str, artifacts: list[str]) -> dict[str, dict[str, Any]]:
    """Every eval JSON of the run, by artifact path (unreadable ones carry an 'error' entry)."""
    results = {}
    for path in eval_json_paths(artifacts):
        try:
            value = json.loads(download_artifact_bytes(client, run_id, path))
            results[path] = value if isinstance(value, dict) else {"value": value}
        except Exception as exc:  # a corrupt artifact must not take the page down
            results[path] = {"error": f"could not read {path}: {exc}"}
    return results


def eval_headline(result: dict[str, Any]) -> dict[str, str]:
    """Headline numbers of an ms2 EvaluationResult (storage_schemas.training), label -> text with the 95%
    interval; empty for JSON that is not one (the page then shows it raw)."""
    from pydantic import ValidationError

    from storage_schemas.training import EvaluationResult

    try:
        ev = EvaluationResult.model_validate(result)
    except ValidationError:
        return {}

    def stat(s, digits: int = 2) -> str:
        return f"{s.mean:.{digits}f} ({s.ci95_low:.{digits}f}–{s.ci95_high:.{digits}f})"

    return {"success once": stat(ev.success_once), "success at end": stat(ev.success_at_end),
            "mean return": stat(ev.episode_return), "mean episode length": stat(ev.episode_length, 1),
            "episodes": str(ev.num_episodes)}
