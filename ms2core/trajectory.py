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

Writes go through :func:`commit_pair`: the h5 is built in memory, both files are
written under temporary names, then renamed, the json last. The json is the
commit marker: a pair whose json is missing is incomplete and never read. An
existing pair is refused unless ``overwrite``, and then kept (moved aside) until
the new one is committed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

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
        recover_pair(path)  # an overwrite killed mid-swap: the old pair comes back
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
            try:
                self.check_structure()
            except (KeyError, OSError, RuntimeError) as exc:  # h5py: damaged object headers, bad checksums
                self._h5.close()
                raise DemoFileError(f"{self.h5_path} has damaged HDF5 metadata: {exc}",
                                    hint="the file is corrupt: re-download or regenerate the pair") from exc
            except BaseException:
                self._h5.close()
                raise

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
            names = [f"traj_{i}" for i in sorted(extra)]
            shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
            raise DemoFileError(
                f"{self.h5_path}: h5 groups {shown} are not listed in {self.json_path.name}"
                + (" (its episode list is empty)" if not self.meta.episodes else ""),
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
        except (OSError, RuntimeError, KeyError, TypeError) as exc:  # TypeError: a group where an array belongs
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


def h5_image(episodes: Iterable[Episode]) -> tuple[bytes, list[dict]]:
    """The h5 half of a pair built in memory (h5py's core driver): (file bytes, json episode entries).

    In memory because HDF5 crashes the process (SIGSEGV) when its own writes hit a full disk; the
    finished bytes are then written with plain file I/O, where ENOSPC is an ordinary OSError.
    """
    metas = []
    with h5py.File(f"ms2flow-pair-{id(metas)}", "w", driver="core", backing_store=False, track_order=True) as f:
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
        f.flush()
        return f.id.get_file_image(), metas


def write_demo_pair(
    path: str | os.PathLike,
    env_info: EnvInfo | dict,
    episodes: Iterable[Episode],
    extra_json: dict | None = None,
    overwrite: bool = False,
    sidecars: dict[Path, bytes] | None = None,
) -> tuple[Path, Path]:
    """Write ``episodes`` as a demo pair through :func:`commit_pair` (refuses an existing pair unless ``overwrite``).

    Episode ids are taken from each ``Episode.meta.episode_id``.
    """
    env_info = env_info if isinstance(env_info, EnvInfo) else EnvInfo.model_validate(env_info)
    image, metas = h5_image(episodes)
    payload = {"env_info": env_info.model_dump(mode="json"), **(extra_json or {}), "episodes": metas}
    return commit_pair(path, lambda f: f.write(image), json.dumps(payload, indent=2).encode(),
                       overwrite=overwrite, sidecars=sidecars)


def copy_demo_pair(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path]:
    """Copy a pair byte for byte (digest unchanged) through :func:`commit_pair`."""
    import shutil

    src_h5, src_json = pair_paths(src)

    def copy_h5(f) -> None:
        with open(src_h5, "rb") as source:
            shutil.copyfileobj(source, f, 1 << 20)

    return commit_pair(dst, copy_h5, src_json.read_bytes(), overwrite=overwrite)


# --------------------------------------------------------------------------- #
# Committing a pair: never a torn pair, never a silently replaced one
# --------------------------------------------------------------------------- #
def _staged(path: Path) -> Path:
    # ".NAME.h5.tmp-staged-PID": remove_stale_temporaries finds it by the ".tmp-" prefix and the trailing pid
    return path.with_name(f".{path.name}.tmp-staged-{os.getpid()}")


def _aside(path: Path) -> Path:
    """Where an overwritten pair waits until its replacement is complete (fixed name: found after a kill)."""
    return path.with_name(f".{path.name}.replaced")


def derived_paths(path: str | os.PathLike) -> list[Path]:
    """Files made from a pair's content that an overwrite makes stale (``NAME.validation.json``)."""
    h5_path, _ = pair_paths(path)
    return [h5_path.with_name(h5_path.name.removesuffix(".h5") + ".validation.json")]


def pair_exists(path: str | os.PathLike) -> bool:
    """A committed pair: the h5 and its json (the commit marker) are both there."""
    return all(p.exists() for p in pair_paths(path))


def recover_pair(path: str | os.PathLike) -> None:
    """Finish what a killed :func:`commit_pair` left: restore the old pair, or drop it if the new one is in."""
    h5_path, json_path = pair_paths(path)
    old_h5, old_json = _aside(h5_path), _aside(json_path)
    if json_path.exists():  # the new pair was committed (or nothing was moved aside): the old one can go
        old_h5.unlink(missing_ok=True)
        old_json.unlink(missing_ok=True)
    elif old_json.exists():  # killed mid-swap: the old pair comes back (h5 first, json, the marker, last)
        if old_h5.exists():
            os.replace(old_h5, h5_path)
        os.replace(old_json, json_path)


def refuse_existing(path: str | os.PathLike, overwrite: bool, what: str = "demo pair") -> None:
    """Raise unless ``path`` is free or ``overwrite`` is set: outputs are immutable unless asked."""
    recover_pair(path)
    h5_path, _ = pair_paths(path)
    if pair_exists(path) and not overwrite:
        raise DemoFileError(
            f"{what} {h5_path} (+ .json) already exists and was made from other inputs; nothing written",
            hint="pass --overwrite to replace it (the old pair is kept until the new one is complete), "
                 "or choose another output (-o)",
        )


def commit_pair(path: str | os.PathLike, write_h5: Callable[[IO[bytes]], None], json_bytes: bytes,
                overwrite: bool = False, sidecars: dict[Path, bytes] | None = None) -> tuple[Path, Path]:
    """Write a pair so that a kill at any moment leaves one complete pair (old or new) and nothing torn.

    1. the new h5, json and ``sidecars`` (e.g. a replay report) are written under staged temporary
       names and fsynced; a full disk fails here, with the old pair untouched;
    2. an existing pair is moved aside (``.NAME.json.replaced`` first: the pair stops being committed),
    3. the new h5 moves in, then the new json (the commit point), then the sidecars;
    4. the old pair and what was derived from it (``NAME.validation.json``) are deleted.

    A kill during 2-3 is undone by :func:`recover_pair` (run by the next writer or reader), which
    restores the old pair; after 3 it deletes it.
    """
    h5_path, json_path = pair_paths(path)
    refuse_existing(path, overwrite)
    sidecars = dict(sidecars or {})
    staged = {h5_path: _staged(h5_path), json_path: _staged(json_path), **{p: _staged(p) for p in sidecars}}
    try:
        h5_path.parent.mkdir(parents=True, exist_ok=True)
        _write_synced(staged[h5_path], write_h5)
        _write_synced(staged[json_path], lambda f: f.write(json_bytes))
        for target, data in sidecars.items():
            _write_synced(staged[target], lambda f, data=data: f.write(data))
    except OSError as exc:
        _unlink_all(staged.values())
        raise disk_error(exc, h5_path, "write the demo pair") from exc
    except BaseException:
        _unlink_all(staged.values())
        raise
    if json_path.exists():
        os.replace(json_path, _aside(json_path))
        if h5_path.exists():
            os.replace(h5_path, _aside(h5_path))
    os.replace(staged[h5_path], h5_path)
    os.replace(staged[json_path], json_path)
    for target in sidecars:
        os.replace(staged[target], target)
    _unlink_all([_aside(h5_path), _aside(json_path), *derived_paths(path)])
    return h5_path, json_path


def _write_synced(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _unlink_all(paths: Iterable[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def disk_error(exc: OSError, path: Path, doing: str) -> DemoFileError:
    """A DemoFileError saying what failed (disk full, permission, read-only) and what to do."""
    hints = {
        errno.ENOSPC: "the disk is full: free space or write elsewhere (-o); nothing was written and an "
                      "existing pair at this path is unchanged",
        errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere (-o); nothing was written",
        errno.EACCES: "the directory is not writable: choose another output (-o) or fix its permissions",
        errno.EROFS: "the file system is read-only: choose another output (-o)",
    }
    name = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return DemoFileError(f"cannot {doing} {path}: {name}", hint=hints.get(exc.errno, "check the output path"))


def read_json_extra(path: str | os.PathLike, key: str = "ms2flow") -> dict | None:
    """The ms2flow block of a committed pair's json (None if the pair is incomplete, unreadable or has none)."""
    h5_path, json_path = pair_paths(path)
    recover_pair(path)
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
