"""Interop with ManiSkill2-Learn: a Zarr dataset <-> the gzip HDF5 layout its convert_state writes.

ManiSkill2-Learn's converted-demo layout (what ``export_h5`` writes and ``import_h5`` reads)::

    NAME.h5
      traj_<i>/
        obs/xyz, obs/rgb, [obs/seg], obs/state     pointcloud (T, N, ...) as in the Zarr store
        obs/rgb (T, 3C, H, W) uint8, obs/depth (T, C, H, W) float32, [obs/seg]   rgbd: channels first
        obs/state (T, S)                           state
        actions (T, A) float32, rewards (T,) float32, success (T,) bool,
        dones (T,) bool          = terminated (ManiSkill2-Learn: the env ended the episode; no bootstrap)
        episode_dones (T,) bool  True at the last step (terminated or cut)
        is_truncated (T,) bool   all False, as convert_state writes it: in ManiSkill2-Learn it marks a
                                 rollout segment cut by the sampler, not a time limit (a cut episode is
                                 episode_dones & ~dones there), so import derives truncated from those two
        worker_indices (T, 1) int32  all 0, obs_layout ml2l only (ReplayMemory adds it; import drops it)
        obs_layout ml2l: obs/ holds ManiSkill2-Learn's own keys as stored (xyz, rgb float32 in [0, 1],
        frame_related_states, to_frames, state (T, 30); rgbd rgb (T, 3C, H, W), depth float16, state (T, 38));
        per-step scalars (rewards, dones, episode_dones, is_truncated, ...) as (T, 1), as ML2L's ReplayMemory
        writes them
      attrs["ms2flow"] = the dataset manifest (JSON), so an exported file says where it came from

Stores are read through ``DatasetStore`` (chunks verified against the inventory) and imports are
written through ``write_dataset`` (the one writer). Only committed episodes are exported; the output is written under a temporary
name and renamed, so a killed export leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from ms2core.data.store import DatasetStore, write_dataset
from ms2core.errors import DatasetError
from storage_schemas.dataset import ExportConfig, ExportResult

CHANNEL_FIRST_KEYS = ("rgb", "depth", "seg")


def _to_h5_layout(key: str, values: np.ndarray, obs_mode: str) -> np.ndarray:
    # obs_mode "rgbd" means ms2flow's channels-last images; the ml2l layout is stored channels first already.
    if obs_mode == "rgbd" and key in CHANNEL_FIRST_KEYS and values.ndim == 4:
        return np.ascontiguousarray(values.transpose(0, 3, 1, 2))  # (T,H,W,C) -> (T,C,H,W)
    if obs_mode == "ml2l" and values.ndim == 1:  # ML2L's ReplayMemory stores per-step scalars as (T, 1)
        return values[:, None]
    return values


def _from_h5_layout(key: str, values: np.ndarray, obs_mode: str) -> np.ndarray:
    if obs_mode == "rgbd" and key in CHANNEL_FIRST_KEYS and values.ndim == 4:
        return np.ascontiguousarray(values.transpose(0, 2, 3, 1))
    if obs_mode == "ml2l" and values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    return values


def _image_layout(obs) -> str:
    """The obs mode, or 'ml2l' for the ml2l layout: stored as ML2L writes it (channels first, scalars (T, 1))."""
    return "ml2l" if obs.obs_layout == "ml2l" else obs.obs_mode


def export_h5(cfg: ExportConfig) -> ExportResult:
    dataset = DatasetStore.open(cfg.store, cfg.storage_options)
    manifest = dataset.manifest
    obs_mode = _image_layout(manifest.options.obs)
    ends = dataset.episode_ends
    if len(ends) == 0:
        raise DatasetError(f"{cfg.store} has no committed episodes to export", hint="finish the render first")
    out = Path(cfg.output)
    if out.exists() and not cfg.overwrite:
        raise DatasetError(f"{out} already exists", hint="choose another output or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    kwargs = dict(compression="gzip", compression_opts=4) if cfg.compression == "gzip" else {}
    starts = np.concatenate([[0], ends[:-1]])
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["ms2flow"] = json.dumps(manifest.model_dump(mode="json"))
            for i, (start, end) in enumerate(zip(starts, ends)):
                group = f.create_group(f"traj_{i}")
                for key in dataset.arrays:
                    if key == "truncated":
                        continue  # ManiSkill2-Learn has no such key: episode_dones & ~dones says it
                    values = _to_h5_layout(key.split("/")[-1], dataset.read(key, start, end), obs_mode)
                    name = "dones" if key == "terminated" else key
                    group.create_dataset(name, data=values, **(kwargs if values.ndim >= 2 else {}))
                episode_dones = np.zeros(end - start, bool)
                episode_dones[-1] = True
                group.create_dataset("episode_dones", data=_to_h5_layout("episode_dones", episode_dones, obs_mode))
                group.create_dataset("is_truncated", data=_to_h5_layout("is_truncated", np.zeros(end - start, bool),
                                                                        obs_mode))
                if obs_mode == "ml2l":  # ReplayMemory.push_batch adds it: convert_state's files hold it
                    group.create_dataset("worker_indices", data=np.zeros((end - start, 1), np.int32))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(output=str(out), n_episodes=len(ends), n_rows=int(ends[-1]), bytes=out.stat().st_size)


def import_h5(path: str, store: str) -> str:
    """Read an exported (ManiSkill2-Learn layout) HDF5 back into a Zarr dataset at ``store``.

    The file must carry the ms2flow manifest exported with it (attrs["ms2flow"]),
    which says the obs mode and options; the Zarr store gets the same layout as a render.
    """
    from storage_schemas.dataset import DatasetManifest

    with h5py.File(path, "r") as f:
        if "ms2flow" not in f.attrs:
            raise DatasetError(f"{path} has no ms2flow manifest attribute",
                               hint="only files written by `ms2 export-h5` can be imported")
        manifest = DatasetManifest.model_validate(json.loads(f.attrs["ms2flow"]))
        obs_mode = _image_layout(manifest.options.obs)
        names = sorted((k for k in f if k.startswith("traj_")), key=lambda k: int(k[5:]))
        columns: dict[str, list[np.ndarray]] = {}

        def visit(name, item):
            if isinstance(item, h5py.Dataset) and name not in ("episode_dones", "is_truncated", "worker_indices"):
                key = "terminated" if name == "dones" else name
                columns.setdefault(key, []).append(_from_h5_layout(name.split("/")[-1], item[()], obs_mode))

        lengths = []
        for name in names:
            f[name].visititems(visit)
            lengths.append(f[name]["actions"].shape[0])
            flags = {k: _from_h5_layout(k, f[name][k][()], obs_mode) for k in ("episode_dones", "dones")}
            columns.setdefault("truncated", []).append(flags["episode_dones"] & ~flags["dones"])
    data = {k: np.concatenate(v) for k, v in columns.items()}
    write_dataset(store, manifest, data, lengths)  # the one writer: arrays, episode_ends, inventory, manifest
    return store


def run(cfg: ExportConfig) -> ExportResult:
    return export_h5(cfg)
