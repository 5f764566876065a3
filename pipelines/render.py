"""Render stage: control-mode demo pair -> Zarr v3 dataset of processed observations, in parallel.

What ManiSkill2-Learn's tools/convert_state.py does (state demos -> visual
observations), as a resumable, idempotent stage:

* Each episode is rendered by resetting the env with the recorded seed and,
  for rigid-body tasks, setting every recorded env state s_t, taking the
  observation (``ms2core.obs.observe_env``, rendered once) and stepping the
  recorded action a_t without observing again; soft-body tasks (no env_states)
  replay the actions from the seed (``ms2core.envs.episode_sim``). Rewards (in
  the configured reward mode), success and terminated are what ``env.step(a_t)``
  returns from s_t; truncated marks a last step the env did not terminate.
* Episodes are split into ranges (``episodes_per_range``; by default sized so
  every worker gets >= 8 ranges: ``range_size``). The Dask cluster starts in a
  thread while the driver plans and opens the store. A Dask worker renders
  a whole range into its own staging group ``ranges/<name>/`` (so it owns every
  chunk it writes, with no sharing between writers) and marks it complete last.
* Only the driver (this process, the Dask client) commits: in episode order it
  appends a complete range's rows to ``data/*``, rewrites ``meta/episode_ends``,
  then writes the manifest (the commit point: ``n_committed_episodes`` and the
  chunk inventory, through ``ms2core.data.store.DatasetWriter``), then deletes the
  staging group. A kill at any moment leaves committed episodes
  intact and the rest either in complete staging groups (reused by the next run)
  or discarded. Rows past the last committed episode are overwritten on resume.

Store tree (drawn in full in ms2core.zarr_io)::

    <output_dir>/<demo>.<obs_mode>.<version>.zarr/
      data/obs/<key> data/actions data/rewards data/success data/terminated data/truncated
      meta/episode_ends
      ranges/e000004-n4/...        only while a render is unfinished
      zarr.json                    attrs["ms2flow"] = DatasetManifest

Identity: ``version = hash(demo digest, every render option, mani_skill2/sapien
versions, RENDER_VERSION)`` (RENDER_VERSION: what a stored step means, in
storage_schemas.dataset); the default store name carries it, so changed options or new
demos make a new dataset and the old one stays readable. A store path that
holds a different manifest is an error unless ``overwrite``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from ms2core import zarr_io
# relax_malloc_trimming and _cached_env stay importable from here (benchmarks/render_scaling.py uses them).
from ms2core.envs.render_env import EnvKey, relax_malloc_trimming, render_episode  # noqa: F401
from ms2core.envs.render_env import cached_env as _cached_env
from ms2core.data.store import DatasetWriter
from ms2core.errors import DatasetError, DemoFileError, UnknownEnvError, UnsupportedModeError, unknown_choice
from ms2core.paths import datasets_url
from ms2core.trajectory import DemoPair
from ms2core.validation.demos import require_sound_demos
from storage_schemas.dataset import (
    DatasetManifest,
    EpisodeStatus,
    ObsProcessConfig,
    RangeStatus,
    RenderConfig,
    RenderOptions,
    RenderResult,
    SourceInfo,
    dataset_version,
)

log = logging.getLogger(__name__)

STAGING = "ranges"
XYZ_KEY = "obs/xyz"  # point coordinates: the one array whose low mantissa bits are rounded (xyz_keep_bits)
DEPTH_KEY = "obs/depth"  # stored as RenderOptions.depth_dtype


# -- work units ----------------------------------------------------------------------------------
@dataclass
class RangeTask:
    store_url: str
    storage_options: dict
    source: str
    env: EnvKey
    obs: ObsProcessConfig
    seed: int
    first_episode: int  # position in the demo's episode list
    n_episodes: int
    target_bytes: int
    compression_level: int
    xyz_keep_bits: int | None = None
    depth_dtype: str = "float32"

    @property
    def name(self) -> str:
        return range_name(self.first_episode, self.n_episodes)


@dataclass
class RangeReport:
    name: str
    first_episode: int
    n_episodes: int
    episode_lengths: list[int]
    episode_success: list[bool]
    render_s: float = 0.0
    reused: bool = False

    @property
    def n_rows(self) -> int:
        return int(sum(self.episode_lengths))


def range_name(first_episode: int, n_episodes: int) -> str:
    return f"e{first_episode:06d}-n{n_episodes}"


# -- worker side (the env cache and the per-episode simulation live in ms2core.envs.render_env) ----
def render_range(task: RangeTask) -> RangeReport:
    """Render one episode range into its own staging group ``ranges/<name>``; mark it complete last."""
    start = time.perf_counter()
    env = _cached_env(task.env)
    columns: dict[str, list[np.ndarray]] = {}
    lengths, successes = [], []
    with DemoPair(task.source, check_episodes=False) as demos:
        for index in range(task.first_episode, task.first_episode + task.n_episodes):
            episode = demos.read_episode(index)
            rng = np.random.default_rng([task.seed, episode.meta.episode_id])
            where = f"{demos.h5_path} episode {episode.meta.episode_id}"
            arrays = render_episode(env, episode, task.obs, rng, where)
            for key, value in arrays.items():
                columns.setdefault(key, []).append(value)
            lengths.append(episode.num_steps)
            successes.append(bool(arrays["success"][-1]))
    data = {key: np.concatenate(parts) for key, parts in columns.items()}
    if task.xyz_keep_bits is not None and XYZ_KEY in data:
        data[XYZ_KEY] = zarr_io.round_mantissa(data[XYZ_KEY], task.xyz_keep_bits)
    if DEPTH_KEY in data and task.obs.obs_layout != "ml2l":  # the ml2l layout's is ML2L's float16 already
        data[DEPTH_KEY] = data[DEPTH_KEY].astype(task.depth_dtype)
    path = f"{STAGING}/{task.name}"
    try:
        root = zarr.open_group(zarr_io.open_store(task.store_url, task.storage_options), mode="r+")
        zarr_io.delete_path(root, path)  # a stale, incomplete attempt
        group = root.create_group(path)
        specs = {k: zarr_io.array_spec_for(v.shape[1:], v.dtype, task.target_bytes, len(v), 1 << 30,
                                           task.compression_level) for k, v in data.items()}
        data_group = group.create_group("data")
        zarr_io.create_time_arrays(data_group, specs, task.compression_level, use_shards=False)
        zarr_io.append_rows(data_group, 0, data)
        group.attrs.put({"complete": True, "episode_lengths": lengths, "episode_success": successes})
    except OSError as exc:
        raise zarr_io.storage_error(exc, f"{task.store_url}/{path}", "write range") from exc
    return RangeReport(task.name, task.first_episode, task.n_episodes, lengths, successes,
                       render_s=time.perf_counter() - start)


# -- driver side ---------------------------------------------------------------------------------
@dataclass
class _Plan:
    url: str
    manifest: DatasetManifest
    env: EnvKey
    source: str


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from ms2core.envs import simulator_versions

    recorded = ("mani_skill2", "sapien", "gymnasium", "openblas_core")
    out = {k: v for k, v in simulator_versions().items() if k in recorded}
    for dist in ("zarr", "numcodecs", "ms2flow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _renderer(backend: str) -> dict[str, str] | None:
    """The Vulkan device this (driver) process picks; LocalCluster workers on this host pick the same."""
    if backend != "sapien":
        return None
    from ms2core.envs.rendering import render_device_info

    return render_device_info()


def plan_render(cfg: RenderConfig) -> _Plan:
    """Validate the demo pair and the options against the task; name the store; draft the manifest."""
    from ms2core.envs import registered_env_ids, supported_control_modes, supported_obs_modes

    options: RenderOptions = cfg.options
    source = str(Path(cfg.source).with_suffix(".h5"))
    with DemoPair(source) as demos:  # DemoFileError on a pair that fails validation
        env_id = demos.env_info.env_id
        n_total = len(demos)
        if n_total == 0:
            raise DemoFileError(f"{source} holds no episodes", hint="generate or import demos first")
        control_mode = demos.meta.control_mode
        if control_mode is None:
            raise DemoFileError(f"{source}: no control_mode recorded in its json",
                                hint="replay the demos into a control mode first (`ms2 replay`)")
        n_render = min(n_total, options.max_episodes or n_total)
        first = demos.read_episode(0)
        replay = "env_states" if first.env_states is not None else "actions"
        episodes = [EpisodeStatus(episode_id=m.episode_id, seed=m.seed, n_steps=m.elapsed_steps)
                    for m in demos.episodes[:n_render]]
        digest = demos.digest()
        env_kwargs = {k: v for k, v in demos.env_info.env_kwargs.items()
                      if k not in ("obs_mode", "control_mode", "reward_mode", "render_mode", "camera_cfgs")}

    known = registered_env_ids(options.backend)
    if env_id not in known:
        raise unknown_choice(f"env id (recorded in {source})", env_id, known, cls=UnknownEnvError)
    obs_mode = options.obs.env_obs_mode
    modes = supported_obs_modes(env_id, options.backend)
    if obs_mode not in modes:
        raise unknown_choice(f"obs mode for {env_id}:", obs_mode, [m for m in modes if m != "none"],
                             cls=UnsupportedModeError)
    controls = supported_control_modes(env_id, options.backend)
    if controls and control_mode not in controls:
        raise unknown_choice(f"control mode (recorded in {source}) for {env_id}:", control_mode, controls,
                             cls=UnsupportedModeError)

    versions = _versions()
    version = dataset_version(digest, options, versions)
    if cfg.store:
        url = cfg.store
    else:
        out_dir = cfg.output_dir or datasets_url(env_id)
        url = f"{out_dir.rstrip('/')}/{Path(source).stem}.{options.obs.obs_mode}.{version}.zarr"
    manifest = DatasetManifest(
        dataset_version=version,
        source=SourceInfo(path=source, digest=digest, env_id=env_id, control_mode=control_mode,
                          n_episodes=n_total, replay=replay),
        versions=versions, renderer=_renderer(options.backend), options=options, episodes=episodes, inventory={},
    )
    env = EnvKey(env_id, obs_mode, control_mode, options.reward_mode,
                 tuple(options.camera_size) if options.camera_size else None, options.backend,
                 tuple(sorted((k, v) for k, v in env_kwargs.items() if isinstance(v, (str, int, float, bool)))))
    return _Plan(url=url, manifest=manifest, env=env, source=source)


def _open_or_create(plan: _Plan, cfg: RenderConfig) -> tuple[DatasetWriter, DatasetManifest]:
    url = plan.url
    try:
        if not zarr_io.is_remote(url):
            path = Path(url)
            if path.exists() and not (path / "zarr.json").exists() and any(path.iterdir()) and not cfg.overwrite:
                raise DatasetError(f"{url} exists and is not a Zarr store",
                                   hint="choose another store path, or pass --overwrite to replace it")
        store = zarr_io.open_store(url, cfg.storage_options)
        if zarr_io.store_exists(store):
            writer = DatasetWriter(url, cfg.storage_options)
            try:
                existing = zarr_io.read_manifest(writer.root)
            except ValueError:
                existing = None
            if existing is not None and existing.identity() == plan.manifest.identity():
                return writer, existing
            if not cfg.overwrite:
                what = ("a different dataset (version "
                        f"{existing.dataset_version}, source digest {existing.source.digest[:12]}, "
                        f"options differ: {_diff(existing, plan.manifest)})") if existing else "no ms2flow manifest"
                raise DatasetError(
                    f"store {url} already holds {what}; this render is version {plan.manifest.dataset_version}",
                    hint="leave store unset to get a new versioned path, choose another store, or pass --overwrite",
                )
        writer = DatasetWriter(url, cfg.storage_options, create=True, manifest=plan.manifest)
        writer.root.create_group(STAGING)
        return writer, plan.manifest.model_copy(deep=True)
    except OSError as exc:
        raise zarr_io.storage_error(exc, url, "create dataset") from exc


def _diff(old: DatasetManifest, new: DatasetManifest) -> str:
    a, b = old.identity(), new.identity()
    flat_a, flat_b = _flatten(a), _flatten(b)
    keys = [k for k in sorted(set(flat_a) | set(flat_b)) if flat_a.get(k) != flat_b.get(k)]
    return ", ".join(f"{k}: {flat_a.get(k)!r} -> {flat_b.get(k)!r}" for k in keys[:6]) or "none"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


RANGES_PER_WORKER = 8  # auto range size: enough ranges that no worker idles while another finishes its last
MAX_AUTO_RANGE = 8  # ... and few enough commits (each rewrites the manifest and its inventory)


def range_size(cfg: RenderConfig, n_pending: int) -> int:
    """Episodes per range: ``cfg.episodes_per_range``, or sized so every worker gets >= RANGES_PER_WORKER ranges.

    Two ranges of 4 episodes on 2 workers left one worker idle for most of the last range and put the
    whole Dask start-up and last commit on the critical path (1.3x from 1 to 2 workers on 8 episodes)."""
    if cfg.episodes_per_range:
        return cfg.episodes_per_range
    workers = max(1, cfg.workers)
    return int(min(MAX_AUTO_RANGE, max(1, -(-n_pending // (RANGES_PER_WORKER * workers)))))


def _plan_ranges(manifest: DatasetManifest, episodes_per_range: int) -> list[RangeStatus]:
    """Committed ranges as recorded, then the uncommitted episodes split into new ranges."""
    committed = [r for r in manifest.ranges if r.status == "committed"]
    ranges = list(committed)
    start = manifest.n_committed_episodes
    while start < len(manifest.episodes):
        n = min(episodes_per_range, len(manifest.episodes) - start)
        ranges.append(RangeStatus(index=len(ranges), first_episode=start, n_episodes=n))
        start += n
    return ranges


def _commit_range(writer: DatasetWriter, manifest: DatasetManifest, report: RangeReport) -> None:
    """Append a complete staging range to data/*, then episode_ends, inventory and manifest (commit point)."""
    root = writer.root
    staging = root[f"{STAGING}/{report.name}"]
    arrays = zarr_io.list_arrays(staging["data"])
    options = manifest.options
    if not manifest.arrays:
        total_rows = sum(e.n_steps for e in manifest.episodes)
        manifest.arrays = {
            key: zarr_io.array_spec_for(arr.shape[1:], arr.dtype, options.chunk_target_bytes, total_rows,
                                        options.shard_min_chunks, options.compression_level,
                                        options.image_chunk_target_bytes)
            for key, arr in arrays.items()
        }
        writer.create_arrays(manifest.arrays, options.compression_level)
    if set(arrays) != set(manifest.arrays):
        raise DatasetError(f"range {report.name} has arrays {sorted(arrays)}, the dataset has {sorted(manifest.arrays)}",
                           hint="a worker ran different code or options; rerun with --overwrite")
    start = manifest.n_committed_rows
    for key, arr in arrays.items():
        writer.write_rows(start, {key: arr[:]})
    first = report.first_episode
    for offset, (n, ok) in enumerate(zip(report.episode_lengths, report.episode_success)):
        ep = manifest.episodes[first + offset]
        if ep.n_steps != n:
            raise DatasetError(f"range {report.name}: episode {ep.episode_id} rendered {n} rows, json says {ep.n_steps}")
        ep.committed, ep.success = True, ok
    manifest.n_committed_episodes = first + report.n_episodes
    manifest.n_committed_rows = start + report.n_rows
    ends = np.cumsum([e.n_steps for e in manifest.episodes[: manifest.n_committed_episodes]])
    for r in manifest.ranges:
        if r.first_episode == first:
            r.status = "committed"
    writer.commit(manifest, ends)  # <- the commit point: episode_ends, then inventory + manifest in one write
    zarr_io.delete_path(root, f"{STAGING}/{report.name}")


class _DaskStart:
    """Starts the Dask client (and LocalCluster) in a thread, so that worker processes boot while the
    driver checks the demo pair and plans the render; ``get`` waits for it, ``close`` shuts it down."""

    def __init__(self, cfg: RenderConfig):
        self.cfg = cfg
        self.client = self.cluster = self.error = None
        self.thread = threading.Thread(target=self._start, name="ms2-dask-start", daemon=True)
        self.thread.start()

    def _start(self) -> None:
        from dask.distributed import Client, LocalCluster

        try:
            if self.cfg.scheduler:
                self.client = Client(self.cfg.scheduler, timeout="30s")
            else:
                self.cluster = LocalCluster(n_workers=self.cfg.workers, threads_per_worker=1, processes=True,
                                            dashboard_address=":0", silence_logs=logging.ERROR)
                self.client = Client(self.cluster)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver by get()
            self.error = exc

    def get(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.client

    def close(self) -> None:
        self.thread.join()
        if self.client is not None:
            close_dask(self.client, self.cluster)
        elif self.cluster is not None:
            self.cluster.close()


def _start_dask(cfg: RenderConfig) -> _DaskStart | None:
    return _DaskStart(cfg) if cfg.workers > 0 or cfg.scheduler else None


def _iter_reports(tasks: list[RangeTask], cfg: RenderConfig, dask: _DaskStart | None) -> Iterator[RangeReport]:
    """Render the tasks: in this process (workers=0) or on Dask (LocalCluster or a scheduler).

    Every range is submitted at once (ranges are small, see range_size), so the scheduler hands a worker
    its next range as soon as it finishes one while the driver commits finished ranges in order."""
    if not tasks:
        return
    if dask is None:
        for task in tasks:
            yield render_range(task)
        return
    from dask.distributed import as_completed

    client = dask.get()
    futures = [client.submit(render_range, t, key=f"render-{t.name}-{id(t)}", pure=False) for t in tasks]
    for future in as_completed(futures):
        yield future.result()


def close_dask(client, cluster=None) -> None:
    """Close a client (and its LocalCluster) without letting a slow shutdown fail finished work.

    On a loaded machine a worker process holding a simulator can outlive the
    nanny's few-second grace period; distributed then raises TimeoutError from
    close() after every range is already committed. The nanny kills such a
    worker anyway, so a timeout here is logged, not raised.
    """
    try:
        client.close(timeout=30)
        if cluster is not None:
            cluster.close(timeout=60)
    except TimeoutError as exc:
        log.warning("Dask shutdown timed out (%s); workers are being killed", exc.__class__.__name__)


def run(cfg: RenderConfig) -> RenderResult:
    """Render (or resume rendering) the dataset ``cfg`` names; nothing to do if it is complete."""
    started = time.perf_counter()
    # The demo gate, before anything is created: a pair that fails its checks (NaN, wrong dtype or action
    # dimension, wrong seed, damaged h5) is refused here, not rendered into a dataset or a partial store.
    checked = require_sound_demos(cfg.source, backend=cfg.options.backend, force=cfg.force)
    dask = _start_dask(cfg)  # worker processes boot while the render is planned and the store opened
    try:
        return _run(cfg, started, checked, dask)
    finally:
        if dask is not None:
            dask.close()


def _run(cfg: RenderConfig, started: float, checked, dask: _DaskStart | None) -> RenderResult:
    plan = plan_render(cfg)
    plan.manifest.source.demo_checks = "forced" if checked.forced else "passed"
    plan.manifest.source.demo_check_errors = checked.error_codes
    writer, manifest = _open_or_create(plan, cfg)
    root = writer.root
    version = manifest.dataset_version
    if manifest.complete:
        return RenderResult(store=plan.url, dataset_version=version, n_episodes=manifest.n_committed_episodes,
                            n_rows=manifest.n_committed_rows, ranges_rendered=0, ranges_reused=0,
                            nothing_to_do=True, elapsed_s=time.perf_counter() - started)
    try:
        n_pending = len(manifest.episodes) - manifest.n_committed_episodes
        manifest.ranges = _plan_ranges(manifest, range_size(cfg, n_pending))
        zarr_io.write_manifest(root, manifest)
        pending = [r for r in manifest.ranges if r.status == "pending"]
        staging = root.require_group(STAGING)
        wanted = {range_name(r.first_episode, r.n_episodes) for r in pending}
        ready: dict[int, RangeReport] = {}
        tasks = []
        for name, _ in list(staging.members()):
            if name not in wanted:
                zarr_io.delete_path(staging, name)  # a split that no longer matches the plan
        for r in pending:
            name = range_name(r.first_episode, r.n_episodes)
            attrs = staging[name].attrs.asdict() if name in staging else {}
            if attrs.get("complete"):
                ready[r.first_episode] = RangeReport(name, r.first_episode, r.n_episodes, attrs["episode_lengths"],
                                                     attrs["episode_success"], reused=True)
            else:
                tasks.append(RangeTask(plan.url, cfg.storage_options, plan.source, plan.env, manifest.options.obs,
                                       manifest.options.seed, r.first_episode, r.n_episodes,
                                       manifest.options.chunk_target_bytes, manifest.options.compression_level,
                                       manifest.options.xyz_keep_bits, manifest.options.depth_dtype))
    except OSError as exc:
        raise zarr_io.storage_error(exc, plan.url, "prepare") from exc

    rendered = reused = rows_rendered = 0
    kept = manifest.n_committed_episodes  # committed by an earlier run: resumed from, not redone
    worker_render_s = 0.0
    next_first = manifest.n_committed_episodes
    bar = _progress(len(manifest.episodes), manifest.n_committed_episodes, cfg.progress, plan.url)
    try:
        for report in _chain(ready, _iter_reports(tasks, cfg, dask)):
            ready[report.first_episode] = report
            while next_first in ready:
                done = ready.pop(next_first)
                try:
                    _commit_range(writer, manifest, done)
                except OSError as exc:
                    raise zarr_io.storage_error(exc, plan.url, f"commit range {done.name} to") from exc
                reused += done.reused
                rendered += not done.reused
                rows_rendered += 0 if done.reused else done.n_rows
                worker_render_s += done.render_s
                next_first += done.n_episodes
                bar.update(done.n_episodes)
        manifest.complete = True
        zarr_io.delete_path(root, STAGING)
        zarr_io.write_manifest(root, manifest)
    except OSError as exc:
        raise zarr_io.storage_error(exc, plan.url, "finish") from exc
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    return RenderResult(store=plan.url, dataset_version=version, n_episodes=manifest.n_committed_episodes,
                        n_rows=manifest.n_committed_rows, ranges_rendered=rendered, ranges_reused=reused,
                        episodes_kept=kept, nothing_to_do=False, elapsed_s=elapsed, worker_render_s=worker_render_s,
                        frames_per_s=rows_rendered / elapsed if rows_rendered else None)


def _chain(ready: dict[int, RangeReport], stream: Iterator[RangeReport]) -> Iterator[RangeReport]:
    yield from list(ready.values())  # complete staging ranges from an interrupted run come first
    yield from stream


def _progress(total: int, initial: int, enabled: bool, url: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="ep", desc=f"render {Path(url).name}", disable=not enabled)
