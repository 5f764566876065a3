"""Dataset validation: streaming checks of rendered Zarr datasets and demo pairs, each
finding with a stable code and severity (storage_schemas.validation.CHECKS).

Public API::

    validate_path(cfg) -> ValidationReport        # run every check, in-process or with a task runner
    require_validated(store_url, force=False)     # training: refuse unvalidated / failed / changed data
    dataset_kind(path) -> "zarr" | "demos"

Modules: ``checks`` (pure numpy checks), ``findings`` (capped, mergeable collection),
``zarr_dataset`` (chunk-streaming store checks), ``demos`` (h5+json checks), ``replay`` (env-backed
bounds and replay consistency), ``store`` (where results live, require_validated).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from ms2core.trajectory import pair_paths
from ms2core.validation.findings import FindingSink
from ms2core.validation.store import require_validated
from ms2core.zarr_io import is_remote
from storage_schemas.validation import ValidationConfig, ValidationReport

__all__ = ["validate_path", "require_validated", "dataset_kind", "outcome_config"]


def dataset_kind(path: str) -> str:
    """Zarr store (remote URL, *.zarr, or a directory holding zarr.json) or demo pair."""
    if is_remote(path) or str(path).rstrip("/").endswith(".zarr"):
        return "zarr"
    p = Path(str(path).removeprefix("file://"))
    if p.is_dir():
        return "zarr"
    h5, js = pair_paths(p)
    return "demos" if p.suffix in (".h5", ".json") or h5.exists() or js.exists() else "zarr"


def outcome_config(cfg: ValidationConfig) -> dict:
    """The options that change a report's content (the rest: where it runs, how fast, what it shows)."""
    return cfg.model_dump(mode="json", include={"replay_sample", "replay_state_atol", "backend", "success_only",
                                                "action_bounds_tol", "max_findings_per_check"})


def validate_path(cfg: ValidationConfig, run_tasks=None, on_bytes=None, on_total=None,
                  on_episode=None) -> ValidationReport:
    """Run every check on ``cfg.path``; never raises for bad data (bad data are findings)."""
    t0 = time.perf_counter()
    sink = FindingSink(cfg.max_findings_per_check)
    kind = dataset_kind(cfg.path)
    common = dict(replay_sample=cfg.replay_sample, replay_state_atol=cfg.replay_state_atol, backend=cfg.backend,
                  success_only=cfg.success_only, action_bounds_tol=cfg.action_bounds_tol)
    from ms2core.validation.demos import DemoOutcome, validate_demo_pair
    from ms2core.validation.zarr_dataset import validate_zarr

    try:
        if kind == "zarr":
            outcome = validate_zarr(cfg.path, cfg.storage_options, sink, block_target_bytes=cfg.block_target_bytes,
                                    run_tasks=run_tasks, on_bytes=on_bytes, on_total=on_total, **common)
        else:
            outcome = validate_demo_pair(cfg.path, sink, on_episode=on_episode, **common)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: bad bytes are findings, never a crash
        sink.add("unreadable", f"validation stopped early: {type(exc).__name__}: {exc}", key=cfg.path)
        outcome = DemoOutcome(fingerprint="unreadable")
    dataset_version = getattr(outcome, "dataset_version", None)
    return ValidationReport(
        path=cfg.path, kind=kind, fingerprint=outcome.fingerprint, dataset_version=dataset_version,
        status="failed" if sink.n_errors else "passed", n_errors=sink.n_errors, n_warnings=sink.n_warnings,
        n_episodes=outcome.n_episodes, n_rows=outcome.n_rows, bytes_checked=outcome.bytes_checked,
        replayed_episodes=outcome.replayed, checks_run=sorted(set(outcome.checks_run)), counts=sink.counts(),
        findings=sink.sorted_findings(), config=outcome_config(cfg),
        validated_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        elapsed_s=round(time.perf_counter() - t0, 3),
    )
