"""Demo pairs in: generate expert demos by motion planning, import existing ManiSkill2 pairs, merge pairs.

    run(GenerateDemosConfig)      -> GenerateDemosResult   (``ms2 demos generate``)
    import_demos(ImportDemosConfig) -> DemoRecord          (``ms2 demos import PATH``)
    merge(MergeDemosConfig)       -> MergeDemosResult      (``ms2 demos merge``)

Generation tries seeds ``seed_start, seed_start+1, ...`` in order, in worker
processes that each keep one env and planner alive, and keeps the first
``num_episodes`` successful ones, in seed order. Each seed's outcome depends
only on the seed, so the output is the same for any ``num_workers``.

Every output is committed through ms2core.trajectory.commit_pair (temporary
names, then rename; the json last) and records a digest of the inputs that made
it in its json under ``"ms2flow"``; rerunning with the same inputs finds it and
does no work. An existing pair made from other inputs is refused unless
``overwrite`` (which keeps the old pair until the new one is complete).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from ms2core.errors import DemoFileError, UnknownEnvError, UnsupportedModeError, unknown_choice
from ms2core.paths import demos_dir
from ms2core.trajectory import (
    DemoPair,
    Episode,
    copy_demo_pair,
    demo_digest,
    pair_paths,
    read_json_extra,
    refuse_existing,
    write_demo_pair,
)
from ms2core.validation.demos import require_sound_demos
from storage_schemas.demos import (
    DemoRecord,
    EnvInfo,
    GenerateDemosConfig,
    GenerateDemosResult,
    ImportDemosConfig,
    MergeDemosConfig,
    MergeDemosResult,
)

T = TypeVar("T")
R = TypeVar("R")

# Bump when the planner's behaviour changes (invalidates cached demos). 2: the gripper waits only until the
# fingers settle.
GENERATOR_VERSION = "mplib-screw-2"


# --------------------------------------------------------------------------- #
# Process pool shared by generation and replay
# --------------------------------------------------------------------------- #
class WorkerPool:
    """Spawned worker processes kept for the whole stage; ``imap`` yields results in input order.

    ``spawn``: SAPIEN does not survive a fork after initialisation. Workers
    cache their envs across calls, so one pool serves every batch of a run.
    With one worker the work runs in this process (no start-up cost) and
    ``close_inline`` releases what the worker functions cached here (envs).
    """

    def __init__(self, num_workers: int, close_inline: Callable[[], None] | None = None):
        self.num_workers = num_workers
        self.close_inline = close_inline
        self._pool = None

    def __enter__(self) -> WorkerPool:
        if self.num_workers > 1:
            self._pool = multiprocessing.get_context("spawn").Pool(self.num_workers)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.terminate()  # also on error or Ctrl-C: no orphaned simulator processes
            self._pool.join()
        elif self.close_inline is not None:
            self.close_inline()

    def imap(self, fn: Callable[[T], R], items: list[T], desc: str = "", unit: str = "it",
             progress: bool = True) -> Iterator[R]:
        bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)
        try:
            results = self._pool.imap(fn, items, chunksize=1) if self._pool is not None else map(fn, items)
            for result in results:
                yield result
                bar.update()
        finally:
            bar.close()


def options_digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def remove_stale_temporaries(stem: Path) -> None:
    """Delete ``.NAME.*.tmp-PID`` files left by killed runs whose process is gone."""
    h5_path, json_path = pair_paths(stem)
    for target in (h5_path, json_path, stem.with_name(stem.name + ".report.json")):
        for tmp in target.parent.glob(f".{target.name}.tmp-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- #
# Generation
# --------------------------------------------------------------------------- #
def default_generate_output(cfg: GenerateDemosConfig) -> Path:
    noise = f".noise{cfg.action_noise_rad:g}" if cfg.action_noise_rad > 0 else ""
    return demos_dir(cfg.env_id) / f"mplib.s{cfg.seed_start}.n{cfg.num_episodes}{noise}.pd_joint_pos"


def _generation_key(cfg: GenerateDemosConfig) -> dict:
    # num_workers, progress and output do not change the episodes, so they are not part of the key.
    return dict(stage="demos.generate", generator=GENERATOR_VERSION, env_id=cfg.env_id,
                num_episodes=cfg.num_episodes, seed_start=cfg.seed_start, max_attempts=cfg.max_attempts,
                max_episode_steps=cfg.max_episode_steps, backend=cfg.backend,
                action_noise_rad=cfg.action_noise_rad)


def _check_generate(cfg: GenerateDemosConfig) -> None:
    from ms2core.envs import registered_env_ids
    from ms2core.envs.planner import PLANNED_ENV_IDS

    if cfg.backend == "fake":
        if cfg.env_id not in registered_env_ids("fake"):
            raise unknown_choice("env id", cfg.env_id, registered_env_ids("fake"), cls=UnknownEnvError)
        return
    if cfg.env_id not in PLANNED_ENV_IDS:
        known = cfg.env_id in registered_env_ids("sapien")
        raise UnsupportedModeError(
            f"no motion-planning expert for {cfg.env_id!r}" + ("" if known else " (not a ManiSkill2 env id)"),
            hint=f"the generator solves {', '.join(PLANNED_ENV_IDS)}; for other tasks import official demos "
                 "with `ms2 demos import PATH`",
        )


def run(cfg: GenerateDemosConfig) -> GenerateDemosResult:
    """Generate ``cfg.num_episodes`` successful expert episodes as a pd_joint_pos demo pair."""
    from ms2core.envs.planner import RECORD_CONTROL_MODE, SolveTask, close_worker_state, solve_in_worker

    _check_generate(cfg)
    stem = Path(cfg.output) if cfg.output else default_generate_output(cfg)
    stem = stem.with_suffix("") if stem.suffix in (".h5", ".json") else stem
    h5_path, json_path = pair_paths(stem)
    key = _generation_key(cfg)
    digest_of_key = options_digest(key)
    done = read_json_extra(stem)
    if done and done.get("config_digest") == digest_of_key:
        return GenerateDemosResult.model_validate({**done["result"], "digest": demo_digest(stem), "skipped": True})
    refuse_existing(stem, cfg.overwrite)  # before minutes of planning, not after
    remove_stale_temporaries(stem)

    max_attempts = cfg.max_attempts or 3 * cfg.num_episodes
    kept: list[Episode] = []
    failed: dict[int, str] = {}
    next_seed = cfg.seed_start
    start = time.perf_counter()
    bar = tqdm(total=cfg.num_episodes, desc=f"generate {cfg.env_id}", unit="demo", disable=not cfg.progress,
               dynamic_ncols=True)
    with WorkerPool(cfg.num_workers, close_inline=close_worker_state) as pool, bar:
        while len(kept) < cfg.num_episodes and next_seed < cfg.seed_start + max_attempts:
            # Try about as many seeds as are still needed (plus one per worker), then take them in seed order:
            # the kept set is the first num_episodes successes whatever the batch sizes were.
            batch = min(cfg.num_episodes - len(kept) + cfg.num_workers, cfg.seed_start + max_attempts - next_seed)
            tasks = [SolveTask(cfg.env_id, cfg.backend, cfg.max_episode_steps, s, cfg.action_noise_rad)
                     for s in range(next_seed, next_seed + batch)]
            next_seed += batch
            for result in pool.imap(solve_in_worker, tasks, progress=False):
                if len(kept) >= cfg.num_episodes:
                    continue  # a success past the quota: not kept, not counted as tried
                if result.success:
                    kept.append(result.episode)
                    bar.update()
                else:
                    failed[result.seed] = result.reason
                bar.set_postfix(tried=len(kept) + len(failed), failed=len(failed))
    wall_s = time.perf_counter() - start
    if len(kept) < cfg.num_episodes:
        raise DemoFileError(
            f"{cfg.env_id}: only {len(kept)} of {cfg.num_episodes} episodes succeeded in {max_attempts} seeds "
            f"from {cfg.seed_start}; nothing written to {h5_path}",
            hint=f"raise max_attempts; first failures: {dict(list(failed.items())[:3])}",
        )
    for i, ep in enumerate(kept):
        ep.meta = ep.meta.model_copy(update=dict(episode_id=i))
    tried = len(kept) + len(failed)
    result = GenerateDemosResult(
        h5_path=str(h5_path), json_path=str(json_path), digest="", env_id=cfg.env_id, num_episodes=len(kept),
        seeds_tried=tried, success_rate=len(kept) / tried, failed_seeds=failed, wall_s=wall_s,
        episodes_per_s=len(kept) / wall_s if wall_s > 0 else 0.0, num_workers=cfg.num_workers,
    )
    env_info = EnvInfo(env_id=cfg.env_id, max_episode_steps=cfg.max_episode_steps or _registered_limit(cfg),
                       env_kwargs={"obs_mode": "none", "control_mode": RECORD_CONTROL_MODE, "reward_mode": "dense"})
    extra = {"ms2flow": {"config_digest": digest_of_key, "key": key, "result": result.model_dump(mode="json")}}
    write_demo_pair(stem, env_info, kept, extra_json=extra, overwrite=cfg.overwrite)
    # The digest covers the json, so it is computed after writing and returned (not stored inside itself).
    return result.model_copy(update=dict(digest=demo_digest(stem)))


def _registered_limit(cfg: GenerateDemosConfig) -> int | None:
    if cfg.backend == "fake":
        return 200
    from ms2core.envs.planner import registered_max_episode_steps

    return registered_max_episode_steps(cfg.env_id)


# --------------------------------------------------------------------------- #
# Import
# --------------------------------------------------------------------------- #
def validate_pair(path: str | os.PathLike, check_env: bool = True, backend: str = "sapien") -> DemoRecord:
    """Open the pair, check its layout and every episode's data, and (optionally) its env id and control mode."""
    h5_path, json_path = pair_paths(path)
    with DemoPair(h5_path) as demos:
        env_id = demos.env_info.env_id
        control_mode = demos.meta.control_mode
        total_steps, state_dim, has_states = 0, None, False
        for i, meta in enumerate(demos.episodes):
            episode = demos.read_episode(i)  # reads every array: a corrupt chunk fails here, naming the episode
            where = f"{h5_path} episode {meta.episode_id}"
            if episode.env_states is not None:
                has_states = True
                if state_dim is None:
                    state_dim = episode.env_states.shape[1:]
                elif episode.env_states.shape[1:] != state_dim:
                    raise DemoFileError(f"{where}: env_states rows have shape {episode.env_states.shape[1:]}, "
                                        f"other episodes {state_dim}")
            if meta.control_mode and control_mode and meta.control_mode != control_mode:
                raise DemoFileError(f"{where}: control mode {meta.control_mode!r} differs from the pair's "
                                    f"{control_mode!r}", hint="one pair holds one control mode; split it")
            if meta.seed is None and episode.env_states is None:
                raise DemoFileError(f"{where}: neither a seed (episode_seed / reset_kwargs.seed) nor env_states",
                                    hint="the episode's initial state cannot be reproduced")
            total_steps += episode.num_steps
        if check_env:
            _check_env_and_mode(env_id, control_mode, backend, json_path)
    return DemoRecord(env_id=env_id, control_mode=control_mode, num_episodes=len(demos.episodes),
                      total_steps=total_steps, digest=demo_digest(h5_path), h5_path=str(h5_path),
                      json_path=str(json_path), source=str(h5_path), has_env_states=has_states)


def _check_env_and_mode(env_id: str, control_mode: str | None, backend: str, json_path: Path) -> None:
    from ms2core.envs import registered_env_ids, supported_control_modes

    ids = registered_env_ids(backend)
    if env_id not in ids:
        err = unknown_choice(f"env id in {json_path} (env_info.env_id):", env_id, ids, cls=UnknownEnvError)
        raise err
    modes = supported_control_modes(env_id, backend)
    if control_mode is None:
        raise DemoFileError(f"{json_path}: no control_mode in the episodes or env_info.env_kwargs",
                            hint=f"{env_id} supports {', '.join(modes)}")
    if modes and control_mode not in modes:
        raise unknown_choice(f"control mode in {json_path} for {env_id}:", control_mode, modes,
                             cls=UnsupportedModeError)


def import_demos(cfg: ImportDemosConfig) -> DemoRecord:
    """Check a pair and register it as ``demos_dir(env_id)/<name>.{h5,json}`` (byte copy, digest kept).

    The demo-pair checks (``ms2 validate PAIR.h5`` without replay) run first and refuse a failing pair
    unless ``force``; ``check_env=False`` skips them (no simulator to check against). The record says
    which happened; the copy stays byte-identical, so it is not written into the json.
    """
    checks = {"demo_checks": "skipped", "demo_check_errors": []}
    if cfg.check_env:
        checks = require_sound_demos(cfg.path, backend=cfg.backend, force=cfg.force).provenance()
    record = validate_pair(cfg.path, check_env=cfg.check_env, backend=cfg.backend).model_copy(update=checks)
    src_h5, _ = pair_paths(cfg.path)
    name = cfg.name or src_h5.name[: -len(".h5")]
    dst = demos_dir(record.env_id) / name
    dst_h5, dst_json = pair_paths(dst)
    if dst_h5.exists() and dst_json.exists() and dst_h5.resolve() == src_h5.resolve():
        return record.model_copy(update=dict(skipped=True))
    if dst_h5.exists() and dst_json.exists():
        if demo_digest(dst) == record.digest:
            return record.model_copy(update=dict(h5_path=str(dst_h5), json_path=str(dst_json), skipped=True))
        if not cfg.overwrite:
            raise DemoFileError(f"{dst_h5} is already registered with different content; nothing written",
                                hint="pass another --name, or --overwrite to replace it (the old pair is kept "
                                     "until the new one is complete)")
    remove_stale_temporaries(dst)
    copy_demo_pair(src_h5, dst, overwrite=cfg.overwrite)
    return record.model_copy(update=dict(h5_path=str(dst_h5), json_path=str(dst_json)))


# --------------------------------------------------------------------------- #
# Merge
# --------------------------------------------------------------------------- #
def merge(cfg: MergeDemosConfig) -> MergeDemosResult:
    """Concatenate pairs of one task and control mode; episodes renumbered 0..N-1 in input order."""
    stem = Path(cfg.output)
    stem = stem.with_suffix("") if stem.suffix in (".h5", ".json") else stem
    sources = [str(pair_paths(p)[0]) for p in cfg.inputs]
    digests = [demo_digest(p) if all(q.exists() for q in pair_paths(p)) else None for p in sources]
    for src, d in zip(sources, digests):
        if d is None:
            raise DemoFileError(f"demo pair {src} (+ .json) does not exist")
    key = options_digest(dict(stage="demos.merge", sources=digests))
    done = read_json_extra(stem)
    h5_path, json_path = pair_paths(stem)
    if done and done.get("config_digest") == key:
        return MergeDemosResult(h5_path=str(h5_path), json_path=str(json_path), digest=demo_digest(stem),
                                num_episodes=done["num_episodes"], sources=sources, skipped=True)
    refuse_existing(stem, cfg.overwrite)

    pairs = [DemoPair(p) for p in sources]
    try:
        env_info = pairs[0].env_info
        mode = pairs[0].meta.control_mode
        for p in pairs[1:]:
            if p.env_info.model_dump() != env_info.model_dump():
                raise DemoFileError(
                    f"{p.json_path}: env_info {p.env_info.model_dump()} differs from {pairs[0].json_path}'s "
                    f"{env_info.model_dump()}", hint="only pairs of the same task, env kwargs and control mode merge",
                )
            if p.meta.control_mode != mode:
                raise DemoFileError(f"{p.json_path}: control mode {p.meta.control_mode!r} differs from {mode!r}")
        total = sum(len(p) for p in pairs)

        def renumbered() -> Iterable[Episode]:
            new_id = 0
            for p in pairs:
                for episode in p.iter_episodes(with_obs=True):
                    episode.meta = episode.meta.model_copy(update=dict(episode_id=new_id))
                    new_id += 1
                    yield episode

        remove_stale_temporaries(stem)
        extra = {"ms2flow": {"config_digest": key, "stage": "demos.merge", "sources": sources,
                             "source_digests": digests, "num_episodes": total}}
        write_demo_pair(stem, env_info, renumbered(), extra_json=extra, overwrite=cfg.overwrite)
    finally:
        for p in pairs:
            p.close()
    return MergeDemosResult(h5_path=str(h5_path), json_path=str(json_path), digest=demo_digest(stem),
                            num_episodes=total, sources=sources)
