"""Reading Zarr datasets for display: listing, manifests, validation reports, one episode at a time.

The layout (written by pipelines.render, see DESIGN.md)::

    datasets/<env_id>/<name>.zarr/
      data/obs/<key>          (T_total, ...) time-major: state, xyz, rgb, seg, depth
      data/actions            (T_total, A) float32
      data/rewards            (T_total,) float32
      data/success, terminated, truncated     (T_total,) bool
      meta/episode_ends       (E,) int64, cumulative transition counts
      zarr.json               root attrs["ms2flow"] = DatasetManifest, optionally
                              attrs["ms2flow_validation"] = the latest validation report
    datasets/<env_id>/<name>.validation.json    the latest validation report (if written beside)

Everything here reads lazily: opening a store reads metadata only, and an
episode read touches only that episode's rows (one frame for images and point
clouds), so a many-GB dataset stays responsive. The manifest and the validation report are parsed
through their storage_schemas models (DatasetManifest, ValidationReport/ValidationRecord), so what the
pages show is what the writers store; one that does not parse is shown raw with the reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pydantic import ValidationError

from storage_schemas.dataset import EPISODE_ENDS, MANIFEST_ATTR, DatasetManifest
from storage_schemas.validation import VALIDATION_ATTR
from storage_schemas.validation import ValidationRecord as StoredRecord
from storage_schemas.validation import ValidationReport as StoredReport

FINDING_COLUMNS = ["code", "severity", "episode", "key", "index", "row", "value", "expected", "message"]
# Contract order of cameras in rgbd obs (ms2core.obs): hand_camera, base_camera, then others sorted.
DEFAULT_CAMERA_ORDER = ["hand_camera", "base_camera"]
MAX_POINTS_DEFAULT = 5000


@dataclass(frozen=True)
class DatasetEntry:
    env_id: str
    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.env_id} / {self.name}"


@dataclass
class DatasetSummary:
    entry: DatasetEntry
    manifest: DatasetManifest | None  # None: no manifest, or one that does not parse (manifest_error says why)
    raw_manifest: dict[str, Any]
    manifest_error: str | None
    num_episodes: int  # committed episodes only
    num_transitions: int
    obs_keys: dict[str, tuple[tuple[int, ...], str]]  # key -> (shape, dtype)
    other_arrays: dict[str, tuple[tuple[int, ...], str]]
    episode_lengths: np.ndarray
    episode_success: np.ndarray | None  # success at the last step of each episode
    size_bytes: int

    @property
    def task(self) -> str:
        return self.manifest.source.env_id if self.manifest else self.entry.env_id

    @property
    def control_mode(self) -> str | None:
        return self.manifest.source.control_mode if self.manifest else None

    @property
    def obs_mode(self) -> str:
        if self.manifest is not None:
            return self.manifest.options.obs.obs_mode
        if "xyz" in self.obs_keys:
            return "pointcloud"
        if "depth" in self.obs_keys:
            return "rgbd"
        return "state"

    def manifest_fields(self) -> dict[str, str]:
        """The manifest's identity card, as label -> text (empty without a parsed manifest)."""
        m = self.manifest
        if m is None:
            return {}
        src = m.source
        return {
            "task": src.env_id, "obs mode": m.options.obs.obs_mode, "obs layout": m.options.obs.obs_layout,
            "control mode": src.control_mode or "(not recorded)", "dataset version": m.dataset_version,
            "render version": str(m.render_version), "backend": m.options.backend,
            "episodes committed": f"{m.n_committed_episodes} of {len(m.episodes)} ({src.n_episodes} in the source)",
            "rows committed": str(m.n_committed_rows), "complete": "yes" if m.complete else "no",
            "source": src.path, "source digest": src.digest, "replay": src.replay,
            "demo checks": src.demo_checks + (f" ({', '.join(src.demo_check_errors)})" if src.demo_check_errors else ""),
            "chunk inventory": "recorded" if m.inventory is not None else "none (written before inventories)",
        }

    def render_option_rows(self) -> list[dict[str, str]]:
        """Every render option as one row: dotted name -> value (obs.n_points -> 1200)."""
        if self.manifest is None:
            return []
        flat = _flatten(self.manifest.options.model_dump(mode="json"))
        return [{"option": key, "value": _text(value)} for key, value in flat.items()]

    def version_rows(self) -> list[dict[str, str]]:
        if self.manifest is None:
            return []
        return [{"package": name, "version": version} for name, version in sorted(self.manifest.versions.items())]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _text(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, (list, tuple)):
        return " x ".join(map(str, value)) if all(isinstance(v, int) for v in value) else ", ".join(map(str, value))
    return str(value)


def parse_manifest(raw: Any) -> tuple[DatasetManifest | None, str | None]:
    """The stored manifest through its model: (manifest, None), or (None, why it could not be read)."""
    if not raw:
        return None, "the store has no manifest (attrs['ms2flow'])"
    try:
        return DatasetManifest.model_validate(raw), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        return None, f"the manifest does not match this version's DatasetManifest: {where}: {first['msg']}"


@dataclass
class ValidationReport:
    """The latest validation of a dataset as the page shows it."""

    source: str  # file path or "store attrs"
    status: str | None  # passed | failed | None (unreadable)
    n_errors: int = 0
    n_warnings: int = 0
    validated_at: str | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # the stored JSON, for the "full report" view
    error: str | None = None  # why it could not be read
    full_report: bool = True  # False: only the summary record in the store's attrs


@dataclass
class EpisodeSeries:
    """Per-step scalars/vectors of one episode (small: T rows)."""

    index: int
    start: int
    end: int
    actions: np.ndarray | None
    rewards: np.ndarray | None
    success: np.ndarray | None
    terminated: np.ndarray | None
    truncated: np.ndarray | None

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class Frame:
    """One step's images and point cloud."""

    rgb_by_camera: dict[str, np.ndarray]  # (H, W, 3) uint8
    depth_by_camera: dict[str, np.ndarray]  # (H, W) float32
    xyz: np.ndarray | None  # (n, 3) subsampled
    point_rgb: np.ndarray | None  # (n, 3) uint8
    point_seg: np.ndarray | None  # (n,) int segment label, -1 = none
    num_points_total: int
    state: np.ndarray | None


def list_datasets(root: Path) -> list[DatasetEntry]:
    if not root.is_dir():
        return []
    found = []
    for env_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for store in sorted(env_dir.glob("*.zarr")):
            if (store / "zarr.json").is_file():
                found.append(DatasetEntry(env_id=env_dir.name, name=store.name[: -len(".zarr")], path=store))
    return found


def _directory_size_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _array_info(arr: Any) -> tuple[tuple[int, ...], str]:
    return tuple(int(s) for s in arr.shape), str(arr.dtype)


def open_store(path: Path) -> zarr.Group:
    return zarr.open_group(str(path), mode="r")


def episode_bounds(episode_ends: np.ndarray, episode: int) -> tuple[int, int]:
    if not 0 <= episode < len(episode_ends):
        raise IndexError(f"episode {episode} is out of range: the dataset has {len(episode_ends)} episodes (0..{len(episode_ends) - 1})")
    start = int(episode_ends[episode - 1]) if episode > 0 else 0
    return start, int(episode_ends[episode])


def committed_episode_ends(root: zarr.Group, manifest: DatasetManifest | None = None) -> np.ndarray:
    """The dashboard's one reader of episode boundaries: cut to the manifest's committed episodes, like
    ms2core's DatasetStore (which this layer may not import). Chunks are not verified here: the
    dashboard shows a store's validation report, ``ms2 validate`` checks the inventory."""
    if EPISODE_ENDS not in root:
        return np.zeros(0, np.int64)
    ends = np.asarray(root[EPISODE_ENDS][:], dtype=np.int64)
    if manifest is None:
        manifest, _ = parse_manifest(root.attrs.get(MANIFEST_ATTR))
    return ends[: manifest.n_committed_episodes] if manifest is not None else ends


def summarize(entry: DatasetEntry, with_size: bool = True) -> DatasetSummary:
    root = open_store(entry.path)
    raw = dict(root.attrs.get(MANIFEST_ATTR) or {})
    manifest, manifest_error = parse_manifest(raw)
    ends = committed_episode_ends(root, manifest)
    lengths = np.diff(np.concatenate([[0], ends])) if len(ends) else np.zeros(0, np.int64)
    data = root["data"] if "data" in root else None
    obs_keys: dict[str, tuple[tuple[int, ...], str]] = {}
    other: dict[str, tuple[tuple[int, ...], str]] = {}
    success_at_end = None
    if data is not None:
        if "obs" in data:
            for key, arr in sorted(data["obs"].arrays()):
                obs_keys[key] = _array_info(arr)
        for key, arr in sorted(data.arrays()):
            other[key] = _array_info(arr)
        if "success" in data and len(ends):
            # One element per episode: the success flag at its last step.
            success_at_end = np.asarray(data["success"].get_coordinate_selection(ends - 1), dtype=bool)
    return DatasetSummary(
        entry=entry, manifest=manifest, raw_manifest=raw, manifest_error=manifest_error,
        num_episodes=int(len(ends)),
        num_transitions=int(ends[-1]) if len(ends) else 0,
        obs_keys=obs_keys,
        other_arrays=other,
        episode_lengths=lengths,
        episode_success=success_at_end,
        size_bytes=_directory_size_bytes(entry.path) if with_size else -1,
    )


def _finding_rows(report: StoredReport) -> list[dict[str, Any]]:
    rows = []
    for finding in report.findings:
        row = finding.model_dump(mode="json")
        rows.append({col: _text(row[col]) if col in ("value", "expected") and row[col] is not None else row[col]
                     for col in FINDING_COLUMNS})
    return rows


def validation_report_path(entry: DatasetEntry) -> Path:
    return entry.path.parent / f"{entry.name}.validation.json"


def _model_error(what: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{what} does not match this version's schema: {'.'.join(map(str, first['loc'])) or '(root)'}: {first['msg']}"


def read_validation_report(entry: DatasetEntry) -> ValidationReport | None:
    """The latest report: the JSON file beside the store (the full report, pipelines.validate writes it) wins
    over the summary record in the store's attrs."""
    path = validation_report_path(entry)
    if path.is_file():
        try:
            raw = json.loads(path.read_text())
            report = StoredReport.model_validate(raw)
        except (OSError, json.JSONDecodeError) as exc:
            return ValidationReport(source=str(path), status=None, error=f"unreadable report: {exc}")
        except ValidationError as exc:
            return ValidationReport(source=str(path), status=None, report=raw, error=_model_error("the report", exc))
        return ValidationReport(source=str(path), status=report.status, n_errors=report.n_errors,
                                n_warnings=report.n_warnings, validated_at=report.validated_at,
                                findings=_finding_rows(report), report=raw)
    raw = open_store(entry.path).attrs.get(VALIDATION_ATTR)
    if raw is None:
        return None
    source = f"store attrs['{VALIDATION_ATTR}']"
    try:
        record = StoredRecord.model_validate(raw)
    except ValidationError as exc:
        return ValidationReport(source=source, status=None, report=dict(raw), error=_model_error("the record", exc))
    return ValidationReport(source=source, status=record.status, n_errors=record.n_errors,
                            n_warnings=record.n_warnings, validated_at=record.validated_at, report=dict(raw),
                            full_report=False)


def read_episode_series(entry: DatasetEntry, episode: int) -> EpisodeSeries:
    root = open_store(entry.path)
    start, end = episode_bounds(committed_episode_ends(root), episode)
    data = root["data"]

    def rows(name: str) -> np.ndarray | None:
        return np.asarray(data[name][start:end]) if name in data else None

    return EpisodeSeries(episode, start, end, rows("actions"), rows("rewards"), rows("success"),
                         rows("terminated"), rows("truncated"))


def camera_names(count: int) -> list[str]:
    """Cameras of stacked rgbd channels in the contract order (ms2core.obs); manifests do not name them."""
    if count <= len(DEFAULT_CAMERA_ORDER):
        return DEFAULT_CAMERA_ORDER[:count]
    return DEFAULT_CAMERA_ORDER + [f"camera_{i}" for i in range(len(DEFAULT_CAMERA_ORDER), count)]


def subsample_indices(num_points: int, max_points: int, seed: int = 0) -> np.ndarray:
    """A fixed random subset (same points every frame for the same seed), sorted for cache-friendly reads."""
    if num_points <= max_points:
        return np.arange(num_points)
    return np.sort(np.random.default_rng(seed).choice(num_points, size=max_points, replace=False))


def read_frame(entry: DatasetEntry, episode: int, step: int, max_points: int = MAX_POINTS_DEFAULT) -> Frame:
    """Images and point cloud of one step (only that row is read from disk)."""
    root = open_store(entry.path)
    start, end = episode_bounds(committed_episode_ends(root), episode)
    if not 0 <= step < end - start:
        raise IndexError(f"step {step} is out of range for episode {episode} of length {end - start}")
    row = start + step
    obs = root["data/obs"]
    rgb_by_camera: dict[str, np.ndarray] = {}
    depth_by_camera: dict[str, np.ndarray] = {}
    xyz = point_rgb = point_seg = None
    num_points = 0
    if "xyz" in obs:
        xyz_all = np.asarray(obs["xyz"][row])
        num_points = int(xyz_all.shape[0])
        keep = subsample_indices(num_points, max_points)
        xyz = xyz_all[keep]
        if "rgb" in obs and obs["rgb"].ndim == 3:
            point_rgb = np.asarray(obs["rgb"][row])[keep]
        if "seg" in obs and obs["seg"].ndim == 3:
            seg = np.asarray(obs["seg"][row])[keep].astype(bool)
            point_seg = np.where(seg.any(axis=1), seg.argmax(axis=1), -1)
    elif "depth" in obs or ("rgb" in obs and obs["rgb"].ndim == 4):
        depth = np.asarray(obs["depth"][row]) if "depth" in obs else None
        rgb = np.asarray(obs["rgb"][row]) if "rgb" in obs else None
        count = depth.shape[-1] if depth is not None else rgb.shape[-1] // 3
        names = camera_names(count)
        for i, name in enumerate(names):
            if rgb is not None:
                rgb_by_camera[name] = rgb[..., 3 * i : 3 * i + 3]
            if depth is not None:
                depth_by_camera[name] = depth[..., i]
    state = np.asarray(obs["state"][row]) if "state" in obs else None
    return Frame(rgb_by_camera, depth_by_camera, xyz, point_rgb, point_seg, num_points, state)


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
