"""Dataset validation: the check codes (each with a fixed severity), one finding, the report written
next to a dataset, the summary recorded in a Zarr store's root attributes, and the stage config.

Where a validation result lives::

    <dir>/NAME.zarr                        the dataset (attrs["ms2flow_validation"] = ValidationRecord)
    <dir>/NAME.validation.json             the full ValidationReport (local stores)
    s3://.../NAME.zarr/validation.json     the full ValidationReport (remote stores: inside the store)
    <dir>/NAME.validation.json             beside NAME.h5 + NAME.json (demo pairs)

The record lives under its own attribute key (not inside the DatasetManifest), so re-writing the
manifest (a new render, a resumed render) drops it: a changed dataset is never "validated".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from storage_schemas.env import StrictModel

VALIDATION_ATTR = "ms2flow_validation"
REPORT_FORMAT = "ms2flow.validation"
REPORT_FORMAT_VERSION = 1
#: Bump when checks change what they accept: reports from older checkers are not reused.
CHECKER_VERSION = 4  # 2: demo pairs: env id, control mode, reset seed, float32/64 actions are errors; 3: terminated/truncated, rewards replayed; 4: chunk inventory checks, incomplete is an error

Severity = Literal["error", "warning"]

#: code -> (severity, what it means). Codes are stable: tests, dashboards and users grep for them.
CHECKS: dict[str, tuple[Severity, str]] = {
    # reading / schemas
    "unreadable": ("error", "the file or store cannot be opened or a chunk cannot be decoded"),
    "manifest_schema": ("error", "the Zarr manifest (attrs['ms2flow']) is missing or does not match DatasetManifest"),
    "json_schema": ("error", "the demo json does not match the ManiSkill2 trajectory layout"),
    "incomplete": ("error", "the manifest says rendering has not finished: episodes uncommitted or ranges pending "
                            "(only committed episodes are checked; resume the render)"),
    # chunk integrity (the inventory in the manifest, written by every commit)
    "no_inventory": ("error", "the store has no chunk inventory, so missing or altered chunks cannot be detected"),
    "missing_chunk": ("error", "a chunk or shard the inventory lists is absent (zarr would read it as fill values)"),
    "chunk_size": ("error", "a chunk or shard has another size than the inventory lists (truncated or extended)"),
    "chunk_checksum": ("error", "a chunk or shard's crc32 differs from the inventory (its bytes were altered)"),
    "uninventoried_chunk": ("error", "a chunk or shard holding committed rows is not listed in the inventory"),
    # structure
    "missing_array": ("error", "an array the manifest or the obs mode requires is absent"),
    "unexpected_array": ("warning", "an array is stored that the manifest does not list"),
    "shape": ("error", "an array's row shape differs from the manifest or from the other arrays"),
    "dtype": ("error", "an array's dtype differs from the manifest or the data contract"),
    "length": ("error", "an array's length differs from the committed row count or from the other arrays"),
    "episode_ends": ("error", "meta/episode_ends is not strictly increasing from > 0 or disagrees with the manifest"),
    "traj_id": ("error", "an h5 traj_N group and the json episode ids do not match"),
    "episode_length": ("error", "an episode's arrays disagree with its elapsed_steps or with each other"),
    # values
    "non_finite": ("error", "NaN or Inf in a float array"),
    "action_bounds": ("error", "an action lies outside the control mode's action space"),
    "rgb": ("error", "rgb is not uint8"),
    "depth": ("error", "depth is negative or not finite"),
    "point_count": ("error", "a point cloud does not have exactly n_points (+ goal points) points"),
    "obs_keys": ("error", "the observation key set does not match the obs mode"),
    "success": ("error", "the last step of an episode of a success-only dataset is not a success"),
    "success_claim": ("error", "a recorded per-episode success disagrees with the success flags"),
    "dones": ("error", "an episode's last row is not exactly one of terminated / truncated, or truncated is set "
                       "before the last row"),
    "old_layout": ("error", "the store was rendered before render version 2 (data/dones, rewards without a physics "
                            "step): re-render it"),
    "duplicate": ("warning", "two episodes have the same seed and the same actions"),
    # provenance and replay
    "provenance": ("error", "the source demo digest recorded in the manifest differs from the demos on disk"),
    "provenance_missing": ("warning", "the source demos recorded in the manifest are not on disk (not checked)"),
    "replay_state": ("error", "re-simulating an episode gives states that differ beyond the tolerance"),
    "replay_actions": ("error", "stored actions differ from the source demo's actions"),
    "replay_reward": ("error", "stored rewards differ from the re-simulated ones (bit for bit for state replays)"),
    "replay_terminated": ("error", "stored terminated/truncated flags differ from the re-simulated ones"),
    "replay_success": ("error", "re-simulating an episode gives different success flags"),
    "replay_failed": ("error", "an episode could not be re-simulated (env refuses its seed, states or actions)"),
    "replay_skipped": ("warning", "replay consistency was asked for but could not run (no env or no source)"),
    "env_unavailable": ("warning", "the env could not be built: action bounds (and replay) were not checked"),
    # demo pairs against the task
    "env_id": ("error", "the demo json's env id is not a registered task"),
    "control_mode": ("error", "a demo episode's control mode is missing or not one the task's robot supports"),
    "reset_state": ("error", "resetting with the recorded seed does not give the recorded initial env state"),
}

CheckCode = Literal[
    "unreadable", "manifest_schema", "json_schema", "incomplete", "no_inventory", "missing_chunk", "chunk_size",
    "chunk_checksum", "uninventoried_chunk", "missing_array", "unexpected_array",
    "shape", "dtype", "length", "episode_ends", "traj_id", "episode_length", "non_finite",
    "action_bounds", "rgb", "depth", "point_count", "obs_keys", "success", "success_claim", "dones",
    "old_layout", "duplicate", "provenance", "provenance_missing", "replay_state", "replay_actions",
    "replay_reward", "replay_terminated", "replay_success", "replay_failed", "replay_skipped", "env_unavailable",
    "env_id", "control_mode", "reset_state",
]


def severity_of(code: str) -> Severity:
    return CHECKS[code][0]


class Finding(StrictModel):
    """One problem: where (episode, key, step index), what was found (value) and what was expected."""

    code: CheckCode
    severity: Severity
    message: str
    episode: int | None = Field(None, description="episode id (json episode_id / manifest episode_id)")
    key: str | None = Field(None, description="array key, e.g. obs/xyz, actions, traj_3/actions")
    index: int | None = Field(None, description="step within the episode (or position, for per-episode arrays)")
    row: int | None = Field(None, description="global row of a time-major Zarr array")
    value: Any = None
    expected: Any = None


class ValidationConfig(StrictModel):
    """``ms2 validate PATH`` / ``pipelines.validate.run``."""

    path: str = Field(..., description="Zarr store (dir or s3://...) or demo pair (NAME.h5 / NAME.json / NAME)")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options (never stored)")
    replay_sample: int = Field(0, ge=0, description="re-simulate this many episodes (evenly spread) and compare")
    replay_state_atol: float = Field(
        1e-3, ge=0, description="absolute tolerance of replayed states / state obs / rewards (0: bit-exact)")
    backend: Literal["auto", "sapien", "fake"] = Field(
        "auto", description="env backend for action bounds and replay; auto: the manifest's, else sapien")
    success_only: bool = Field(True, description="every episode must end in success (demo / BC datasets)")
    action_bounds_tol: float = Field(1e-5, ge=0, description="slack on action-space bounds")
    max_findings_per_check: int = Field(
        20, gt=0, description="findings kept per (code, key); the rest are counted, not listed")
    block_target_bytes: int = Field(64 << 20, ge=1 << 20, description="bytes decoded at once per array (chunk-aligned)")
    workers: int = Field(0, ge=0, description="Dask LocalCluster workers checking arrays in parallel; 0: in-process")
    scheduler: str | None = Field(None, description="address of an existing Dask scheduler (tcp://host:port)")
    recheck: bool = Field(False, description="validate again even if a report for this exact content exists")
    write_report: bool = Field(True, description="write the report beside the dataset and record it in the store")
    progress: bool = True


class CheckCount(StrictModel):
    code: CheckCode
    severity: Severity
    count: int
    listed: int


class ValidationReport(StrictModel):
    format: Literal["ms2flow.validation"] = REPORT_FORMAT
    format_version: int = REPORT_FORMAT_VERSION
    checker_version: int = CHECKER_VERSION
    path: str
    kind: Literal["zarr", "demos"]
    fingerprint: str = Field(description="what was validated: dataset_version + committed rows, or the demo digest")
    dataset_version: str | None = None
    status: Literal["passed", "failed"]
    n_errors: int
    n_warnings: int
    n_episodes: int = 0
    n_rows: int = 0
    bytes_checked: int = Field(0, description="uncompressed bytes decoded and checked")
    replayed_episodes: list[int] = Field(default_factory=list)
    checks_run: list[str] = Field(default_factory=list)
    counts: list[CheckCount] = Field(default_factory=list, description="every finding counted, listed or not")
    findings: list[Finding] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict, description="the options that change the outcome")
    validated_at: str
    elapsed_s: float = 0.0


class ValidationRecord(StrictModel):
    """The summary kept in a Zarr store's root attrs[VALIDATION_ATTR] (training reads only this)."""

    status: Literal["passed", "failed"]
    n_errors: int
    n_warnings: int
    report_digest: str
    validated_at: str
    dataset_version: str | None
    fingerprint: str
    report_path: str | None = None


class ValidationResult(StrictModel):
    report: ValidationReport
    report_path: str | None
    reused: bool = Field(False, description="an existing report for this exact content and config was returned")
