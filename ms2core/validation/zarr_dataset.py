"""Validating a rendered Zarr dataset by streaming it chunk by chunk (memory stays bounded).

Order of work: the manifest (schema), meta/episode_ends, every array's metadata (presence, shape,
dtype, length against the manifest, the obs mode and each other), the chunk inventory (every listed
object present with its size and crc32, every chunk of the committed rows listed; raw bytes are
streamed one object at a time), then one streaming pass per array
(:func:`check_array`, a picklable unit that a Dask worker can run), then the per-episode pass over
success/terminated/truncated, duplicates, provenance and replay of a sample. Only committed rows
(``meta/episode_ends`` cut to the manifest's ``n_committed_episodes``) are checked.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from pydantic import ValidationError

from ms2core.validation.checks import (
    CONTRACT_ALSO_DTYPES, CONTRACT_DTYPES, CORE_KEYS, LEGACY_DONES_KEY, RowLocator, check_block, check_duplicates, check_episode_ends,
    check_last_steps, check_truncated_rows,
    expected_obs_keys, rules_for,
)
from ms2core.validation.findings import FindingSink
from ms2core.validation.replay import (
    Bounds, action_bounds, env_error_text, replay_dataset_episode, replay_env_obs_mode, sample_positions,
)
from ms2core.validation.inventory import INTEGRITY_CHECKS, check_inventory
from ms2core.validation.store import open_root
from ms2core.zarr_io import EPISODE_ENDS, is_remote, read_episode_ends
from storage_schemas.dataset import MANIFEST_ATTR, RENDER_VERSION, DatasetManifest



@dataclass
class ArrayTask:
    """Check every committed row of one array (run in-process or on a Dask worker)."""

    url: str
    storage_options: dict[str, Any]
    key: str
    n_rows: int
    ends: np.ndarray | None
    episode_ids: list[int] | None
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    bounds_tol: float = 0.0
    block_target_bytes: int = 64 << 20
    max_per_check: int = 20
    hash_episodes: bool = False  # per-episode action digests (duplicates)


@dataclass
class ArrayOutcome:
    key: str
    sink: FindingSink
    bytes_checked: int = 0
    episode_digests: list[str | None] | None = None
    seconds: float = 0.0


def block_rows_for(array: zarr.Array, target_bytes: int) -> int:
    """Rows decoded at once: a multiple of the chunk (or shard) rows near ``target_bytes``."""
    align = (array.shards or array.chunks)[0]
    row_bytes = max(1, math.prod(array.shape[1:]) * array.dtype.itemsize)
    return max(align, (target_bytes // row_bytes) // align * align)


def _read_rows(array: zarr.Array, start: int, stop: int, sink: FindingSink, key: str,
               locator: RowLocator) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start_row, rows) for [start, stop); a block that fails to decode is re-read chunk by
    chunk so every unreadable chunk becomes one finding and the readable ones are still checked."""
    try:
        yield start, np.asarray(array[start:stop])
        return
    except Exception:  # noqa: BLE001 - corrupt bytes raise codec-specific errors of every kind
        pass
    chunk = array.chunks[0]
    for a in range(start, stop, chunk):
        b = min(a + chunk, stop)
        try:
            rows = np.asarray(array[a:b])
        except Exception as exc:  # noqa: BLE001
            episode, step = locator.locate(a)
            sink.add("unreadable", f"rows {a}-{b - 1} of {key} cannot be decoded: {type(exc).__name__}: {exc}",
                     episode=episode, key=key, index=step, row=a, value=f"chunk {a // chunk}",
                     expected="a decodable chunk")
            yield a, None
            continue
        yield a, rows


def check_array(task: ArrayTask, on_bytes: Callable[[int], None] | None = None) -> ArrayOutcome:
    t0 = time.perf_counter()
    sink = FindingSink(task.max_per_check)
    outcome = ArrayOutcome(task.key, sink)
    locator = RowLocator(task.ends, task.episode_ids)
    try:
        array = open_root(task.url, task.storage_options)["data"][task.key]
    except Exception as exc:  # noqa: BLE001
        sink.add("unreadable", f"cannot open data/{task.key}: {exc}", key=task.key)
        return outcome
    rules = rules_for(task.key, array.dtype, task.low, task.high, task.bounds_tol)
    hashers = None
    if task.hash_episodes and task.ends is not None:
        hashers = [hashlib.sha256() for _ in range(len(task.ends))]
        broken = np.zeros(len(task.ends), bool)
    step = block_rows_for(array, task.block_target_bytes)
    for block_start in range(0, task.n_rows, step):
        block_stop = min(block_start + step, task.n_rows)
        for start, rows in _read_rows(array, block_start, block_stop, sink, task.key, locator):
            n = (min(start + array.chunks[0], block_stop) - start) if rows is None else len(rows)
            if hashers is not None:
                _update_hashes(hashers, broken, task.ends, start, n, rows)
            if rows is None:
                continue
            check_block(sink, rules, rows, start, locator)
            outcome.bytes_checked += rows.nbytes
            if on_bytes is not None:
                on_bytes(rows.nbytes)
    if hashers is not None:
        outcome.episode_digests = [None if broken[i] else h.hexdigest() for i, h in enumerate(hashers)]
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _update_hashes(hashers, broken, ends: np.ndarray, start: int, n: int, rows: np.ndarray | None) -> None:
    """Feed rows [start, start+n) to the digests of the episodes they belong to."""
    stop = start + n
    first = int(np.searchsorted(ends, start, side="right"))
    last = min(int(np.searchsorted(ends, stop - 1, side="right")), len(ends) - 1)
    for e in range(first, last + 1):
        e_start = int(ends[e - 1]) if e > 0 else 0
        a, b = max(start, e_start), min(stop, int(ends[e]))
        if a >= b:
            continue
        if rows is None:
            broken[e] = True
        else:
            hashers[e].update(np.ascontiguousarray(rows[a - start:b - start]).tobytes())


@dataclass
class ZarrOutcome:
    fingerprint: str
    dataset_version: str | None = None
    n_episodes: int = 0
    n_rows: int = 0
    bytes_checked: int = 0
    replayed: list[int] = field(default_factory=list)
    checks_run: list[str] = field(default_factory=list)


TaskRunner = Callable[[list[ArrayTask]], Iterable[ArrayOutcome]]


def _run_in_process(tasks: list[ArrayTask], on_bytes=None) -> Iterator[ArrayOutcome]:
    for task in tasks:
        yield check_array(task, on_bytes)


def _list_arrays(group: zarr.Group, sink: FindingSink, prefix: str = "") -> dict[str, zarr.Array]:
    """Every readable array below ``group``; a node whose metadata cannot be read is a finding."""
    out = {}
    try:
        names = sorted(group.array_keys()) + sorted(group.group_keys())
    except Exception as exc:  # noqa: BLE001 - broken child metadata raise json/zarr/unicode errors
        names = None
        sink.add("unreadable", f"cannot list data/{prefix}: {type(exc).__name__}: {exc}",
                 key=prefix.rstrip("/") or "data")
    for name in names or []:
        path = f"{prefix}{name}"
        try:
            member = group[name]
        except Exception as exc:  # noqa: BLE001
            sink.add("unreadable", f"cannot open data/{path}: {type(exc).__name__}: {exc}", key=path)
            continue
        if isinstance(member, zarr.Array):
            out[path] = member
        else:
            out.update(_list_arrays(member, sink, f"{path}/"))
    return dict(sorted(out.items()))


def _node(root: zarr.Group, path: str, sink: FindingSink):
    """root[path], None if absent; unreadable metadata become a finding (and None)."""
    try:
        return root[path]
    except KeyError:
        return None
    except Exception as exc:  # noqa: BLE001
        sink.add("unreadable", f"cannot open {path}: {type(exc).__name__}: {exc}", key=path)
        return None


def manifest_fingerprint(raw_manifest: Any, ends: np.ndarray | None) -> str:
    """What a validation result is valid for: the manifest as stored (with its chunk inventory, so any
    re-written chunk changes it) plus the committed ends."""
    h = hashlib.sha256(json.dumps(raw_manifest, sort_keys=True, default=str).encode())
    if ends is not None:
        h.update(np.ascontiguousarray(ends, np.int64).tobytes())
    return h.hexdigest()[:16]


def validate_zarr(url: str, storage_options: Mapping[str, Any], sink: FindingSink, *, replay_sample: int = 0,
                  replay_state_atol: float = 1e-3, backend: str = "auto", success_only: bool = True,
                  action_bounds_tol: float = 1e-5, block_target_bytes: int = 64 << 20,
                  run_tasks: TaskRunner | None = None, on_bytes: Callable[[int], None] | None = None,
                  on_total: Callable[[int], None] | None = None) -> ZarrOutcome:
    storage_options = dict(storage_options)
    try:
        root = open_root(url, storage_options)
    except Exception as exc:  # noqa: BLE001
        sink.add("unreadable", f"cannot open a Zarr store at {url}: {env_error_text(exc)}", key=url)
        return ZarrOutcome(fingerprint="unreadable")
    outcome = ZarrOutcome(fingerprint="")
    checks = outcome.checks_run

    # -- manifest ---------------------------------------------------------------------------------
    checks.append("manifest_schema")
    raw_manifest = root.attrs.get(MANIFEST_ATTR)
    manifest: DatasetManifest | None = None
    if raw_manifest is None:
        sink.add("manifest_schema", f"the store has no manifest (attrs[{MANIFEST_ATTR!r}])", key=MANIFEST_ATTR,
                 expected="a DatasetManifest written by ms2 render")
    else:
        try:
            manifest = DatasetManifest.model_validate(raw_manifest)
        except ValidationError as exc:
            for err in exc.errors()[:10]:
                where = ".".join(str(p) for p in err["loc"])
                sink.add("manifest_schema", f"manifest field {where}: {err['msg']}", key=f"{MANIFEST_ATTR}.{where}",
                         value=repr(err.get("input"))[:200], expected=err["msg"])
    if manifest is not None:
        outcome.dataset_version = manifest.dataset_version
        if manifest.render_version != RENDER_VERSION:
            sink.add("old_layout", f"the manifest says render version {manifest.render_version}; this ms2flow reads "
                     f"render version {RENDER_VERSION} (see storage_schemas.dataset.RENDER_VERSION)",
                     key=f"{MANIFEST_ATTR}.render_version", value=manifest.render_version, expected=RENDER_VERSION)
        _check_complete(sink, manifest)

    # -- episode ends -----------------------------------------------------------------------------
    checks.append("episode_ends")
    ends = _read_all_ends(root, sink)
    n_committed_rows = None
    if manifest is not None and ends is not None:
        if len(ends) < manifest.n_committed_episodes:
            sink.add("episode_ends", f"{EPISODE_ENDS} has {len(ends)} entries but the manifest says "
                     f"{manifest.n_committed_episodes} episodes are committed", key=EPISODE_ENDS,
                     value=len(ends), expected=manifest.n_committed_episodes)
        ends = ends[: manifest.n_committed_episodes]
        n_committed_rows = manifest.n_committed_rows
    outcome.fingerprint = manifest_fingerprint(raw_manifest, ends)
    locate_ok = ends is not None and check_episode_ends(sink, ends, n_committed_rows)
    if ends is not None and not locate_ok:  # keep locating rows roughly; per-episode checks are skipped
        ends = np.maximum.accumulate(np.maximum(ends, 0)) if ends.ndim == 1 else None
    n_rows = int(n_committed_rows if n_committed_rows is not None else (ends[-1] if ends is not None and len(ends)
                                                                        else 0))
    outcome.n_rows = n_rows
    episode_ids = list(range(len(ends))) if ends is not None else None
    seeds: list[int | None] = [None] * (len(ends) if ends is not None else 0)
    claimed: list[bool | None] | None = None
    if manifest is not None and ends is not None:
        committed = [ep for ep in manifest.episodes if ep.committed][: len(ends)]
        if len(committed) == len(ends):
            episode_ids = [ep.episode_id for ep in committed]
            seeds = [ep.seed for ep in committed]
            claimed = [ep.success for ep in committed]
            lengths = np.diff(np.concatenate([[0], ends]))
            for ep, n in zip(committed, lengths):
                if ep.n_steps != int(n):
                    sink.add("episode_length", f"the manifest says {ep.n_steps} steps, episode_ends give {int(n)}",
                             episode=ep.episode_id, key=EPISODE_ENDS, value=int(n), expected=ep.n_steps)
        else:
            sink.add("episode_ends", f"the manifest lists {len(committed)} committed episodes, episode_ends "
                     f"{len(ends)}", key=EPISODE_ENDS, value=len(ends), expected=len(committed))
    outcome.n_episodes = 0 if ends is None else len(ends)
    locator = RowLocator(ends, episode_ids)

    # -- array metadata ---------------------------------------------------------------------------
    checks += ["missing_array", "old_layout", "shape", "dtype", "length", "obs_keys", "point_count", "rgb"]
    n_before = sink.total["unreadable"]
    data_group = _node(root, "data", sink)
    arrays = _list_arrays(data_group, sink) if isinstance(data_group, zarr.Group) else {}
    if data_group is None and sink.total["unreadable"] == n_before:
        sink.add("missing_array", "the store has no data/ group", key="data")
    bounds = _bounds(manifest, backend, sink)
    checkable = _check_metadata(sink, arrays, manifest, bounds, n_rows)

    # -- chunk inventory --------------------------------------------------------------------------
    checks += INTEGRITY_CHECKS
    if manifest is not None:
        check_inventory(root.store, manifest, arrays, n_rows, sink, locator)

    # -- streaming value pass ---------------------------------------------------------------------
    checks += ["unreadable", "non_finite", "action_bounds", "depth"]
    tasks = [
        ArrayTask(url=url, storage_options=storage_options, key=key, n_rows=n_rows, ends=ends, episode_ids=episode_ids,
                  low=bounds.low if (key == "actions" and bounds) else None,
                  high=bounds.high if (key == "actions" and bounds) else None, bounds_tol=action_bounds_tol,
                  block_target_bytes=block_target_bytes, max_per_check=sink.max_per_check,
                  hash_episodes=key == "actions" and locate_ok)
        for key in checkable
    ]
    if on_total is not None:
        on_total(sum(n_rows * math.prod(arrays[k].shape[1:]) * arrays[k].dtype.itemsize for k in checkable))
    runner = run_tasks or (lambda ts: _run_in_process(ts, on_bytes))
    digests = None
    for done in runner(tasks):
        sink.merge(done.sink)
        outcome.bytes_checked += done.bytes_checked
        if done.episode_digests is not None:
            digests = done.episode_digests

    # -- per-episode pass -------------------------------------------------------------------------
    if ends is not None and len(ends) and locate_ok:
        checks += ["success", "success_claim", "dones", "duplicate"]
        lengths = np.diff(np.concatenate([[0], ends]))
        last_success, last_end = _episode_flags(arrays, checkable, ends, n_rows, sink, locator)
        check_last_steps(sink, episode_ids, last_success, last_end, lengths, success_only, claimed)
        if digests is not None:
            check_duplicates(sink, episode_ids, seeds, digests)

    # -- provenance and replay --------------------------------------------------------------------
    if manifest is not None:
        checks.append("provenance")
        source_ok = _check_provenance(sink, manifest)
        if replay_sample > 0 and ends is not None and locate_ok:
            checks += ["replay_state", "replay_actions", "replay_reward", "replay_success", "replay_terminated"]
            outcome.replayed = _replay_sample(root, sink, manifest, ends, episode_ids, replay_sample,
                                              replay_state_atol, backend, source_ok, arrays)
    return outcome


def _read_all_ends(root: zarr.Group, sink: FindingSink) -> np.ndarray | None:
    """Every entry of meta/episode_ends (the caller cuts it to the committed count); problems are findings."""
    ends = None
    n_before = sink.total["unreadable"]
    meta_group = _node(root, "meta", sink)  # its own metadata must be readable too, not only the array's
    ends_array = _node(root, EPISODE_ENDS, sink) if meta_group is not None else None
    if ends_array is None and sink.total["unreadable"] == n_before:
        sink.add("missing_array", f"{EPISODE_ENDS} is missing", key=EPISODE_ENDS)
    if ends_array is not None and not isinstance(ends_array, zarr.Array):
        sink.add("missing_array", f"{EPISODE_ENDS} is a group, not an array", key=EPISODE_ENDS)
        ends_array = None
    if ends_array is not None:
        if ends_array.dtype != np.int64:
            sink.add("dtype", f"{EPISODE_ENDS} has dtype {ends_array.dtype}", key=EPISODE_ENDS,
                     value=str(ends_array.dtype), expected="int64")
        try:
            ends = read_episode_ends(root, {})
        except TypeError:  # not an integer dtype: reported above
            ends = None
        except Exception as exc:  # noqa: BLE001
            sink.add("unreadable", f"{EPISODE_ENDS} cannot be decoded: {exc}", key=EPISODE_ENDS)
    return ends


def _check_complete(sink: FindingSink, manifest: DatasetManifest) -> None:
    pending = [r.index for r in manifest.ranges if r.status != "committed"]
    if not manifest.complete or manifest.n_committed_episodes < len(manifest.episodes) or pending:
        sink.add("incomplete", f"rendering is not finished ({manifest.n_committed_episodes} of "
                 f"{len(manifest.episodes)} episodes committed, {len(pending)} ranges pending): resume it by "
                 "running the same `ms2 render` again", key=MANIFEST_ATTR,
                 value=manifest.n_committed_episodes, expected=len(manifest.episodes))


def _bounds(manifest: DatasetManifest | None, backend: str, sink: FindingSink) -> Bounds | None:
    if manifest is None:
        return None
    backend = manifest.options.backend if backend == "auto" else backend
    try:
        return action_bounds(manifest.source.env_id, manifest.source.control_mode, backend)
    except Exception as exc:  # noqa: BLE001
        sink.add("env_unavailable", f"cannot build {manifest.source.env_id} ({manifest.source.control_mode}, "
                 f"{backend}): {env_error_text(exc)}", key="actions")
        return None


def _check_metadata(sink: FindingSink, arrays: dict[str, zarr.Array], manifest: DatasetManifest | None,
                    bounds: Bounds | None, n_rows: int) -> list[str]:
    """Presence, shape, dtype and length of every array; returns the keys whose values can be streamed."""
    expected: dict[str, Any] = dict(manifest.arrays) if manifest is not None else {}
    required = set(CORE_KEYS)
    if LEGACY_DONES_KEY in arrays and "terminated" not in arrays:
        sink.add("old_layout", f"data/{LEGACY_DONES_KEY} and no data/terminated: rendered before render version 2 "
                 "(rewards without a physics step, dones = success | last step)", key=LEGACY_DONES_KEY,
                 expected="data/success, data/terminated, data/truncated; re-render the store (ms2 render)")
        required -= {"terminated", "truncated"}  # one finding says it, not two more
    obs = manifest.options.obs if manifest is not None else None
    if obs is not None:
        required |= expected_obs_keys(obs.obs_mode, obs.include_rgb, obs.include_depth, obs.include_seg)
    for key in sorted((required | set(expected)) - set(arrays)):
        sink.add("missing_array", f"data/{key} is missing", key=key,
                 expected="listed in the manifest" if key in expected else "required by the obs mode")
    for key in sorted(set(arrays) - set(expected)):
        if manifest is not None:
            sink.add("unexpected_array", f"data/{key} is not listed in the manifest", key=key)
    if obs is not None:
        for key in sorted(k for k in arrays if k.startswith("obs/") and k not in required):
            sink.add("obs_keys", f"data/{key} does not belong to obs mode {obs.obs_mode!r}", key=key,
                     expected=sorted(k for k in required if k.startswith("obs/")))
    checkable = []
    for key, array in arrays.items():
        row_shape = list(array.shape[1:])
        spec = expected.get(key)
        ok = True
        if spec is not None and row_shape != list(spec.row_shape):
            sink.add("shape", f"data/{key} rows have shape {row_shape}, the manifest says {spec.row_shape}", key=key,
                     value=row_shape, expected=list(spec.row_shape))
        if spec is not None and array.dtype.name != spec.dtype:
            sink.add("dtype", f"data/{key} has dtype {array.dtype.name}, the manifest says {spec.dtype}", key=key,
                     value=array.dtype.name, expected=spec.dtype)
        contract = CONTRACT_DTYPES.get(key)
        if contract and array.dtype.name != contract and array.dtype.name not in CONTRACT_ALSO_DTYPES.get(key, ()):
            code = "rgb" if key == "obs/rgb" else "dtype"
            sink.add(code, f"data/{key} has dtype {array.dtype.name}, the data contract says {contract}", key=key,
                     value=array.dtype.name, expected=contract)
            ok = key != "obs/rgb" and array.dtype.kind in "fiub"
        if array.ndim == 0:
            sink.add("shape", f"data/{key} is a scalar, not time-major", key=key, value=[], expected="(T, ...)")
            continue
        if array.shape[0] < n_rows:
            sink.add("length", f"data/{key} has {array.shape[0]} rows, {n_rows} are committed", key=key,
                     value=array.shape[0], expected=n_rows)
            ok = False
        if key == "actions" and bounds is not None and tuple(row_shape) != bounds.shape:
            sink.add("shape", f"actions have {row_shape}, the control mode's action space {list(bounds.shape)}",
                     key=key, value=row_shape, expected=list(bounds.shape))
            ok = False
        if key in ("success", "terminated", "truncated", "rewards") and row_shape:
            sink.add("shape", f"data/{key} must hold one value per row, rows have shape {row_shape}", key=key,
                     value=row_shape, expected=[])
            ok = False
        if ok:
            checkable.append(key)
    if obs is not None:
        _check_obs_shapes(sink, arrays, obs, manifest)
    return checkable


def _check_obs_shapes(sink: FindingSink, arrays: dict[str, zarr.Array], obs, manifest: DatasetManifest) -> None:
    if obs.obs_mode == "pointcloud":
        n_expected = obs.n_points + obs.n_goal_points
        for key in ("obs/xyz", "obs/rgb", "obs/seg"):
            if key not in arrays:
                continue
            shape = list(arrays[key].shape[1:])
            if not shape or shape[0] != n_expected:
                sink.add("point_count", f"data/{key} has {shape[:1]} points per frame", key=key,
                         value=shape[0] if shape else None, expected=n_expected)
            want_cols = {"obs/xyz": 3, "obs/rgb": 3}.get(key)
            if want_cols is not None and shape[1:] != [want_cols]:
                sink.add("shape", f"data/{key} rows are {shape}", key=key, value=shape,
                         expected=[n_expected, want_cols])
    elif obs.obs_mode == "rgbd":
        rgb = list(arrays["obs/rgb"].shape[1:]) if "obs/rgb" in arrays else None
        depth = list(arrays["obs/depth"].shape[1:]) if "obs/depth" in arrays else None
        if manifest.options.camera_size is not None:
            w, h = manifest.options.camera_size
            for key, shape in (("obs/rgb", rgb), ("obs/depth", depth)):
                if shape is not None and shape[:2] != [h, w]:
                    sink.add("shape", f"data/{key} pictures are {shape[:2]} (H, W)", key=key, value=shape[:2],
                             expected=[h, w])
        if rgb is not None and depth is not None and (len(rgb) != 3 or len(depth) != 3 or rgb[:2] != depth[:2]
                                                      or rgb[2] != 3 * depth[2]):
            sink.add("shape", f"rgb {rgb} and depth {depth} disagree (expected (H,W,3C) and (H,W,C))", key="obs/rgb",
                     value=rgb, expected=depth[:2] + [3 * depth[2]] if len(depth) == 3 else None)


def _episode_flags(arrays, checkable, ends: np.ndarray, n_rows: int, sink: FindingSink, locator: RowLocator):
    """success and (terminated, truncated) at each episode's last row; truncated nowhere else."""
    last_rows = ends - 1
    flags = {}
    for key in ("success", "terminated", "truncated"):
        if key in checkable:
            try:
                flags[key] = np.asarray(arrays[key].get_coordinate_selection(last_rows), bool)
            except Exception:  # noqa: BLE001 - already reported as unreadable by the streaming pass
                pass
    if "truncated" in flags:
        step = max(arrays["truncated"].chunks[0], 1 << 20)
        for a in range(0, n_rows, step):
            b = min(a + step, n_rows)
            try:
                truncated = np.asarray(arrays["truncated"][a:b], bool)
            except Exception:  # noqa: BLE001
                continue
            is_last = np.zeros(b - a, bool)
            is_last[last_rows[(last_rows >= a) & (last_rows < b)] - a] = True
            check_truncated_rows(sink, truncated, is_last, a, locator)
    end = (flags["terminated"], flags["truncated"]) if "terminated" in flags and "truncated" in flags else None
    return flags.get("success"), end


def _check_provenance(sink: FindingSink, manifest: DatasetManifest) -> bool:
    from ms2core.trajectory import demo_digest, pair_paths

    source = manifest.source
    if is_remote(source.path) or not all(p.exists() for p in pair_paths(source.path)):
        sink.add("provenance_missing", f"source demos {source.path} are not on this machine", key="source.path",
                 value=source.path)
        return False
    digest = demo_digest(source.path)
    if digest != source.digest:
        sink.add("provenance", f"{source.path} has changed since rendering (digest {digest[:12]}, manifest "
                 f"{source.digest[:12]})", key="source.digest", value=digest, expected=source.digest)
        return False
    return True


def _replay_sample(root, sink: FindingSink, manifest: DatasetManifest, ends: np.ndarray, episode_ids: list[int],
                   k: int, atol: float, backend: str, source_ok: bool, arrays) -> list[int]:
    from ms2core.envs import make_env
    from ms2core.trajectory import DemoPair

    if not source_ok:
        sink.add("replay_skipped", "replay needs the unchanged source demos on disk", key="source.path",
                 value=manifest.source.path)
        return []
    backend = manifest.options.backend if backend == "auto" else backend
    obs_cfg = manifest.options.obs
    try:
        env = make_env(manifest.source.env_id, replay_env_obs_mode(obs_cfg, backend), manifest.source.control_mode,
                       manifest.options.reward_mode, camera_size=manifest.options.camera_size, backend=backend)
    except Exception as exc:  # noqa: BLE001
        sink.add("replay_skipped", f"cannot build the env to replay: {env_error_text(exc)}", key="source.env_id")
        return []
    replayed = []
    try:
        with DemoPair(manifest.source.path, check_episodes=False) as pair:
            position = {ep.episode_id: i for i, ep in enumerate(pair.episodes)}
            for e in sample_positions(len(ends), k):
                episode_id = episode_ids[e]
                if episode_id not in position:
                    sink.add("replay_failed", f"episode {episode_id} is not in the source demos", episode=episode_id)
                    continue
                start, stop = (int(ends[e - 1]) if e else 0), int(ends[e])
                try:
                    demo = pair.read_episode(position[episode_id])
                    stored_state = np.asarray(arrays["obs/state"][start:stop]) if "obs/state" in arrays else None
                    stored_success = np.asarray(arrays["success"][start:stop], bool)
                    stored_actions = np.asarray(arrays["actions"][start:stop])
                    stored_rewards = np.asarray(arrays["rewards"][start:stop]) if "rewards" in arrays else None
                    stored_ends = tuple(np.asarray(arrays[k][start:stop], bool) for k in ("terminated", "truncated")) \
                        if "terminated" in arrays and "truncated" in arrays else None
                except Exception as exc:  # noqa: BLE001
                    sink.add("replay_failed", f"cannot read episode {episode_id}: {env_error_text(exc)}",
                             episode=episode_id)
                    continue
                if stored_actions.shape != demo.actions.shape or not np.array_equal(
                        stored_actions, demo.actions.astype(stored_actions.dtype), equal_nan=True):
                    bad = _first_action_mismatch(stored_actions, demo.actions)
                    sink.add("replay_actions", "stored actions differ from the source demo's", episode=episode_id,
                             key="actions", index=bad, row=None if bad is None else start + bad,
                             value=None if bad is None else stored_actions[bad],
                             expected=None if bad is None else demo.actions[bad])
                replay_dataset_episode(env, demo, stored_state, stored_success, obs_cfg, atol, sink, stored_rewards,
                                       stored_ends)
                replayed.append(episode_id)
    except Exception as exc:  # noqa: BLE001
        sink.add("replay_skipped", f"cannot read the source demos: {env_error_text(exc)}", key="source.path")
    finally:
        env.close()
    return replayed


def _first_action_mismatch(stored: np.ndarray, source: np.ndarray) -> int | None:
    if stored.shape != source.shape:
        return None
    diff = ~np.isclose(stored, source, rtol=0, atol=0, equal_nan=True).reshape(len(stored), -1).all(axis=1)
    return int(np.argmax(diff)) if diff.any() else None


def default_report_path(url: str) -> str | None:
    """``<store without .zarr>.validation.json`` for local stores; None for remote (written inside)."""
    if is_remote(url):
        return None
    path = Path(url.removeprefix("file://"))
    stem = path.with_suffix("") if path.suffix == ".zarr" else path
    return str(stem.with_name(stem.name + ".validation.json"))
