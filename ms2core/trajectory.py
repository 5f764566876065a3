"""Read and write demo pairs in ManiSkill2's trajectory format (``NAME.h5`` + ``NAME.json``).

On-disk layout (identical to ManiSkill2 0.5's RecordEpisode, so official demos
and ours are interchangeable)::

    NAME.h5
      traj_<episode_id>/
        actions         (T, A) float32
        success         (T,)   bool
        env_states      (T+1, S) float32   rigid-body tasks
        env_init_state  (S,)   float32     soft-body tasks (replayed from seed + actions)
        obs/...         optional, (T+1, ...) per key
    NAME.json
      {"env_info": {"env_id", "max_episode_steps", "env_kwargs"},
       "episodes": [{"episode_id", "episode_seed", "reset_kwargs", "control_mode",
                     "elapsed_steps", "info"}, ...]}

Writes are atomic: the h5 is written under a temporary name and renamed, then
the json likewise. The json is the commit marker: a pair whose json is missing
is incomplete and never read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pydantic import ValidationError

from ms2core.errors import DemoFileError
from storage_schemas.demos import EnvInfo, EpisodeMeta, TrajectoryJson

REQUIRED_KEYS = ("actions", "success")


def pair_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``x.h5`` / ``x.json`` / ``x`` -> (x.h5, x.json)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".h5", ".json") else path
    # Not with_suffix: ManiSkill2 names hold dots ("trajectory.none.pd_joint_pos.h5").
    return stem.with_name(stem.name + ".h5"), stem.with_name(stem.name + ".json")


@dataclass
class Episode:
    """One demo episode in memory."""

    meta: EpisodeMeta
    actions: np.ndarray
    success: np.ndarray
    env_states: np.ndarray | None = None
    env_init_state: np.ndarray | None = None
    obs: dict[str, np.ndarray] | np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. rewards, dones

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])


def _read_group(group: h5py.Group) -> dict[str, Any]:
    out = {}
    for key, item in group.items():
        out[key] = _read_group(item) if isinstance(item, h5py.Group) else item[()]
    return out


class DemoPair:
    """A validated, read-only view of a demo pair. Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike, check_episodes: bool = True):
        self.h5_path, self.json_path = pair_paths(path)
        for p in (self.h5_path, self.json_path):
            if not p.exists():
                raise DemoFileError(f"demo file {p} does not exist", hint="a demo pair is NAME.h5 + NAME.json side by side")
        try:
            raw = json.loads(self.json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DemoFileError(f"{self.json_path} is not valid JSON: {exc}") from exc
        try:
            self.meta = TrajectoryJson.model_validate(raw)
        except ValidationError as exc:
            raise DemoFileError(
                f"{self.json_path} does not follow the ManiSkill2 trajectory json layout: {exc.errors()[0]['loc']}: "
                f"{exc.errors()[0]['msg']}",
                hint="expected {'env_info': {'env_id', ...}, 'episodes': [{'episode_id', 'elapsed_steps', ...}]}",
            ) from exc
        try:
            self._h5 = h5py.File(self.h5_path, "r")
        except OSError as exc:
            raise DemoFileError(f"{self.h5_path} is not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
        if check_episodes:
            self.check_structure()

    # -- structure ------------------------------------------------------------
    def check_structure(self) -> None:
        """Every json episode has a consistent ``traj_N`` group (cheap: shapes only)."""
        h5_ids = set()
        for name in self._h5.keys():
            if not name.startswith("traj_"):
                continue
            try:
                h5_ids.add(int(name[5:]))
            except ValueError:
                continue
        for ep in self.meta.episodes:
            where = f"{self.h5_path} episode {ep.episode_id}"
            name = f"traj_{ep.episode_id}"
            if ep.episode_id not in h5_ids:
                raise DemoFileError(f"{where}: the json lists it but the h5 has no group {name}",
                                    hint="h5 and json were written by different runs, or the h5 is truncated")
            group = self._h5[name]
            if not isinstance(group, h5py.Group):
                raise DemoFileError(f"{where}: {name} is a dataset, not a group of arrays",
                                    hint="this file is not in the ManiSkill2 0.5 trajectory layout")
            not_arrays = [k for k in (*REQUIRED_KEYS, "env_states", "env_init_state")
                          if k in group and not isinstance(group[k], h5py.Dataset)]
            if not_arrays:
                raise DemoFileError(
                    f"{where}: {', '.join(not_arrays)} in {name} is a group of per-object arrays, not one array",
                    hint="this is a newer ManiSkill (ManiSkill3) trajectory layout; ms2flow reads ManiSkill2 0.5 "
                         "files (env_states as one (T+1, S) array)",
                )
            missing = [k for k in REQUIRED_KEYS if k not in group]
            if "env_states" not in group and "env_init_state" not in group:
                missing.append("env_states or env_init_state")
            if missing:
                raise DemoFileError(
                    f"{where}: group {name} lacks {', '.join(missing)} (keys: {sorted(group.keys())})",
                    hint="this file is not in the ManiSkill2 0.5 trajectory layout",
                )
            try:
                n_actions = group["actions"].shape[0]
                n_success = group["success"].shape[0]
                n_states = group["env_states"].shape[0] if "env_states" in group else None
            except (OSError, RuntimeError) as exc:
                raise DemoFileError(f"{where}: cannot read {name}: {exc}") from exc
            if n_actions != ep.elapsed_steps or n_success != n_actions:
                raise DemoFileError(
                    f"{where}: json says elapsed_steps={ep.elapsed_steps} but h5 has {n_actions} actions "
                    f"and {n_success} success flags",
                )
            if n_states is not None and n_states != n_actions + 1:
                raise DemoFileError(f"{where}: env_states has {n_states} rows, expected actions+1 = {n_actions + 1}")
        extra = h5_ids - {ep.episode_id for ep in self.meta.episodes}
        if extra:
            raise DemoFileError(
                f"{self.h5_path}: h5 groups {sorted(f'traj_{i}' for i in extra)[:5]} are not listed in {self.json_path.name}",
                hint="h5 and json were written by different runs",
            )

    # -- access ---------------------------------------------------------------
    @property
    def env_info(self) -> EnvInfo:
        return self.meta.env_info

    @property
    def episodes(self) -> list[EpisodeMeta]:
        return self.meta.episodes

    def __len__(self) -> int:
        return len(self.meta.episodes)

    def read_episode(self, index: int, with_obs: bool = False) -> Episode:
        """Episode at position ``index`` of the json episode list."""
        meta = self.meta.episodes[index]
        group = self._h5[f"traj_{meta.episode_id}"]
        try:
            episode = Episode(
                meta=meta,
                actions=group["actions"][()],
                success=group["success"][()],
                env_states=group["env_states"][()] if "env_states" in group else None,
                env_init_state=group["env_init_state"][()] if "env_init_state" in group else None,
            )
            if with_obs and "obs" in group:
                item = group["obs"]
                episode.obs = _read_group(item) if isinstance(item, h5py.Group) else item[()]
            for key in ("rewards", "dones", "terminated", "truncated"):
                if key in group:
                    episode.extras[key] = group[key][()]
        except (OSError, RuntimeError, KeyError) as exc:
            raise DemoFileError(f"{self.h5_path} episode {meta.episode_id}: cannot read data: {exc}") from exc
        return episode

    def iter_episodes(self, with_obs: bool = False) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self.read_episode(i, with_obs=with_obs)

    def digest(self) -> str:
        return demo_digest(self.h5_path)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> DemoPair:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def demo_digest(path: str | os.PathLike) -> str:
    """sha256 over the h5 and json bytes: the cache key of everything derived from a demo pair."""
    h = hashlib.sha256()
    for p in pair_paths(path):
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _write_tree(group: h5py.Group, key: str, value, compress: bool) -> None:
    if isinstance(value, dict):
        sub = group.create_group(key, track_order=True)
        for k, v in value.items():
            _write_tree(sub, k, v, compress)
        return
    value = np.asarray(value)
    kwargs = dict(compression="gzip", compression_opts=5) if compress and value.ndim >= 3 else {}
    group.create_dataset(key, data=value, dtype=value.dtype, **kwargs)


def write_demo_pair(
    path: str | os.PathLike,
    env_info: EnvInfo | dict,
    episodes: Iterable[Episode],
    extra_json: dict | None = None,
) -> tuple[Path, Path]:
    """Write ``episodes`` as a demo pair, atomically (temporary names, then rename; json last).

    Episode ids are taken from each ``Episode.meta.episode_id``.
    """
    h5_path, json_path = pair_paths(path)
    h5_path.parent.mkdir(parents=True, exist_ok=True)
    env_info = env_info if isinstance(env_info, EnvInfo) else EnvInfo.model_validate(env_info)
    tmp_h5 = h5_path.with_name(f".{h5_path.name}.tmp-{os.getpid()}")
    tmp_json = json_path.with_name(f".{json_path.name}.tmp-{os.getpid()}")
    metas = []
    try:
        # An old json beside a new h5 would look complete: remove the commit marker first.
        json_path.unlink(missing_ok=True)
        with h5py.File(tmp_h5, "w", track_order=True) as f:
            for ep in episodes:
                group = f.create_group(f"traj_{ep.meta.episode_id}", track_order=True)
                if ep.obs is not None:
                    _write_tree(group, "obs", ep.obs, compress=True)
                group.create_dataset("actions", data=np.asarray(ep.actions, np.float32))
                group.create_dataset("success", data=np.asarray(ep.success, bool))
                if ep.env_states is not None:
                    group.create_dataset("env_states", data=np.asarray(ep.env_states, np.float32))
                if ep.env_init_state is not None:
                    group.create_dataset("env_init_state", data=np.asarray(ep.env_init_state, np.float32))
                for key, value in ep.extras.items():
                    group.create_dataset(key, data=np.asarray(value))
                metas.append(ep.meta.model_dump(mode="json"))
        _fsync(tmp_h5)
        os.replace(tmp_h5, h5_path)
        payload = {"env_info": env_info.model_dump(mode="json"), **(extra_json or {}), "episodes": metas}
        with open(tmp_json, "w") as f:
            json.dump(payload, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_json, json_path)
    except BaseException:
        for p in (tmp_h5, tmp_json):
            p.unlink(missing_ok=True)
        raise
    return h5_path, json_path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_demo_pair(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[Path, Path]:
    """Copy a pair byte for byte (digest unchanged), atomically: h5 then json (the commit marker), via temp names."""
    import shutil

    (src_h5, src_json), (dst_h5, dst_json) = pair_paths(src), pair_paths(dst)
    dst_h5.parent.mkdir(parents=True, exist_ok=True)
    tmps = [p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in (dst_h5, dst_json)]
    try:
        dst_json.unlink(missing_ok=True)
        for s, tmp, d in zip((src_h5, src_json), tmps, (dst_h5, dst_json)):
            shutil.copyfile(s, tmp)
            _fsync(tmp)
            os.replace(tmp, d)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
    return dst_h5, dst_json


def read_json_extra(path: str | os.PathLike, key: str = "ms2flow") -> dict | None:
    """The ms2flow block of a committed pair's json (None if the pair is incomplete, unreadable or has none)."""
    h5_path, json_path = pair_paths(path)
    if not (h5_path.exists() and json_path.exists()):
        return None
    try:
        value = json.loads(json_path.read_text()).get(key)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return value if isinstance(value, dict) else None


def jsonable_info(info: dict) -> dict:
    """The scalar entries of a step's ``info`` as plain JSON types (for the episode json)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            out[key] = int(value)
        elif isinstance(value, (float, np.floating)):
            out[key] = float(value)
    return out
