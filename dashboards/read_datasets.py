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
clouds), so a many-GB dataset stays responsive. The manifest is read as a plain
dict because its schema evolves; known keys are picked out when present.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from storage_schemas.dataset import EPISODE_ENDS, MANIFEST_ATTR

# Manifest keys shown as a summary when present; (label, candidate keys in order of preference).
MANIFEST_SUMMARY_KEYS: list[tuple[str, tuple[str, ...]]] = [
    ("task", ("env_id", "task")),
    ("obs mode", ("obs_mode",)),
    ("control mode", ("control_mode",)),
    ("render options", ("render_options", "render", "options")),
    ("episodes (manifest)", ("num_episodes", "n_episodes")),
    ("versions", ("versions", "software_versions")),
    ("source digest", ("source_digest", "demo_digest", "source")),
    ("created", ("created_at", "created")),
]
FINDING_COLUMNS = ["code", "severity", "episode", "key", "message"]
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
    manifest: dict[str, Any]
    num_episodes: int
    num_transitions: int
    obs_keys: dict[str, tuple[tuple[int, ...], str]]  # key -> (shape, dtype)
    other_arrays: dict[str, tuple[tuple[int, ...], str]]
    episode_lengths: np.ndarray
    episode_success: np.ndarray | None  # success at the last step of each episode
    size_bytes: int

    def known_manifest_fields(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for label, keys in MANIFEST_SUMMARY_KEYS:
            for key in keys:
                if key in self.manifest and self.manifest[key] not in (None, "", {}):
                    found[label] = self.manifest[key]
                    break
        return found

    @property
    def obs_mode(self) -> str:
        mode = self.manifest.get("obs_mode")
        if mode:
            return str(mode)
        if "xyz" in self.obs_keys:
            return "pointcloud"
        if "depth" in self.obs_keys:
            return "rgbd"
        return "state"


@dataclass
class ValidationReport:
    source: str  # file path or "store attrs"
    report: dict[str, Any]
    findings: list[dict[str, Any]] = field(default_factory=list)


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


def committed_episode_ends(root: zarr.Group) -> np.ndarray:
    """The dashboard's one reader of episode boundaries: cut to the manifest's committed episodes, like
    ms2core's DatasetStore (which this layer may not import). Chunks are not verified here: the
    dashboard shows a store's validation report, ``ms2 validate`` checks the inventory."""
    if EPISODE_ENDS not in root:
        return np.zeros(0, np.int64)
    ends = np.asarray(root[EPISODE_ENDS][:], dtype=np.int64)
    committed = (root.attrs.get(MANIFEST_ATTR) or {}).get("n_committed_episodes")
    return ends[:committed] if isinstance(committed, int) else ends


def summarize(entry: DatasetEntry, with_size: bool = True) -> DatasetSummary:
    root = open_store(entry.path)
    manifest = dict(root.attrs.get(MANIFEST_ATTR) or {})
    ends = committed_episode_ends(root)
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
        entry=entry,
        manifest=manifest,
        num_episodes=int(len(ends)),
        num_transitions=int(ends[-1]) if len(ends) else 0,
        obs_keys=obs_keys,
        other_arrays=other,
        episode_lengths=lengths,
        episode_success=success_at_end,
        size_bytes=_directory_size_bytes(entry.path) if with_size else -1,
    )


def _findings_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    raw = report.get("findings") or report.get("issues") or []
    rows = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            rows.append({col: item.get(col) for col in FINDING_COLUMNS} | {k: v for k, v in item.items() if k not in FINDING_COLUMNS})
        else:
            rows.append({"code": None, "severity": None, "episode": None, "key": None, "message": str(item)})
    return rows


def validation_report_path(entry: DatasetEntry) -> Path:
    return entry.path.parent / f"{entry.name}.validation.json"


def read_validation_report(entry: DatasetEntry) -> ValidationReport | None:
    """The latest report: the JSON file beside the store wins over one stored in the store's attrs."""
    path = validation_report_path(entry)
    if path.is_file():
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return ValidationReport(source=str(path), report={"error": f"unreadable report: {exc}"})
        if isinstance(report, dict):
            return ValidationReport(source=str(path), report=report, findings=_findings_of(report))
    attrs_report = open_store(entry.path).attrs.get("ms2flow_validation")
    if isinstance(attrs_report, dict):
        return ValidationReport(source="store attrs['ms2flow_validation']", report=attrs_report, findings=_findings_of(attrs_report))
    return None


def read_episode_series(entry: DatasetEntry, episode: int) -> EpisodeSeries:
    root = open_store(entry.path)
    start, end = episode_bounds(committed_episode_ends(root), episode)
    data = root["data"]

    def rows(name: str) -> np.ndarray | None:
        return np.asarray(data[name][start:end]) if name in data else None

    return EpisodeSeries(episode, start, end, rows("actions"), rows("rewards"), rows("success"),
                         rows("terminated"), rows("truncated"))


def camera_names(manifest: dict[str, Any], count: int) -> list[str]:
    for key in ("cameras", "camera_names"):
        names = manifest.get(key)
        if isinstance(names, list) and len(names) == count:
            return [str(n) for n in names]
    options = manifest.get("render_options") or {}
    if isinstance(options, dict):
        names = options.get("cameras") or options.get("camera_names")
        if isinstance(names, list) and len(names) == count:
            return [str(n) for n in names]
    if count <= len(DEFAULT_CAMERA_ORDER):
        return DEFAULT_CAMERA_ORDER[:count]
    return DEFAULT_CAMERA_ORDER + [f"camera_{i}" for i in range(len(DEFAULT_CAMERA_ORDER), count)]


def subsample_indices(num_points: int, max_points: int, seed: int = 0) -> np.ndarray:
    """A fixed random subset (same points every frame for the same seed), sorted for cache-friendly reads."""
    if num_points <= max_points:
        return np.arange(num_points)
    return np.sort(np.random.default_rng(seed).choice(num_points, size=max_points, replace=False))


def read_frame(entry: DatasetEntry, episode: int, step: int, manifest: dict[str, Any] | None = None, max_points: int = MAX_POINTS_DEFAULT) -> Frame:
    """Images and point cloud of one step (only that row is read from disk)."""
    root = open_store(entry.path)
    start, end = episode_bounds(committed_episode_ends(root), episode)
    if not 0 <= step < end - start:
        raise IndexError(f"step {step} is out of range for episode {episode} of length {end - start}")
    row = start + step
    obs = root["data/obs"]
    manifest = manifest if manifest is not None else dict(root.attrs.get("ms2flow") or {})
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
        names = camera_names(manifest, count)
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
