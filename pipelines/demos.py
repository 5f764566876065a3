"""Demo pairs in: generate expert demos by motion planning, import existing ManiSkill2 pairs, merge pairs.

    run(GenerateDemosConfig)      -> GenerateDemosResult   (``ms2 demos generate``)
    import_demos(ImportDemosConfig) -> DemoRecord          (``ms2 demos import PATH``)
    merge(MergeDemosConfig)       -> MergeDemosResult      (``ms2 demos merge``)

Generation tries seeds ``seed_start, seed_start+1, ...`` in order, in the
simulator worker pool (``ms2core.workers``; started with ``sim_python`` if set),
whose workers each keep one env and planner alive, and keeps the first
``num_episodes`` successful ones, in seed order. Each seed's outcome depends
only on the seed, so the output is the same for any ``num_workers``.

Every output is committed through ms2core.trajectory.commit_pair (temporary
names, then rename; the json last) and records a digest of the inputs that made
it in its json under ``"ms2flow"``; rerunning with the same inputs finds it and
does no work. An existing pair made from other inputs is refused unless
``overwrite`` (which keeps the old pair until the new one is complete).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from ms2core.demo_pairs import options_digest, remove_stale_temporaries, validate_pair
from ms2core.errors import DemoFileError, UnknownEnvError, UnsupportedModeError, unknown_choice
from ms2core.workers import SimPool, requirements
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

# Bump when the planner's behaviour changes (invalidates cached demos). 2: the gripper waits only until the
# fingers settle. 3: every seed solved in a fresh physics scene (a demo no longer depends on its worker's history).
GENERATOR_VERSION = "mplib-screw-3"


# --------------------------------------------------------------------------- #
# Generation
# --------------------------------------------------------------------------- #
def default_generate_output(cfg: GenerateDemosConfig) -> Path:
    noise = f".noise{cfg.action_noise_rad:g}" if cfg.action_noise_rad > 0 else ""
    speed = f".speed{cfg.planner_speed:g}" if cfg.planner_speed != 1.0 else ""
    return demos_dir(cfg.env_id) / f"mplib.s{cfg.seed_start}.n{cfg.num_episodes}{noise}{speed}.pd_joint_pos"


def _generation_key(cfg: GenerateDemosConfig) -> dict:
    # num_workers, progress and output do not change the episodes, so they are not part of the key.
    return dict(stage="demos.generate", generator=GENERATOR_VERSION, env_id=cfg.env_id,
                num_episodes=cfg.num_episodes, seed_start=cfg.seed_start, max_attempts=cfg.max_attempts,
                max_episode_steps=cfg.max_episode_steps, backend=cfg.backend,
                action_noise_rad=cfg.action_noise_rad, **_speed_key(cfg))


def _speed_key(cfg: GenerateDemosConfig) -> dict:
    # absent at the default speed, so demos generated before the option existed stay up to date
    return {} if cfg.planner_speed == 1.0 else dict(planner_speed=cfg.planner_speed)


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
    from ms2core.envs.planner import RECORD_CONTROL_MODE, SolveTask, solve_in_worker

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
    pool = SimPool(cfg.num_workers if cfg.num_workers > 1 else 0, python=cfg.sim_python,
                   requires=requirements(cfg.backend))
    with pool, bar:
        while len(kept) < cfg.num_episodes and next_seed < cfg.seed_start + max_attempts:
            # Try about as many seeds as are still needed (plus one per worker), then take them in seed order:
            # the kept set is the first num_episodes successes whatever the batch sizes were.
            batch = min(cfg.num_episodes - len(kept) + cfg.num_workers, cfg.seed_start + max_attempts - next_seed)
            tasks = [SolveTask(cfg.env_id, cfg.backend, cfg.max_episode_steps, s, cfg.action_noise_rad,
                               cfg.planner_speed)
                     for s in range(next_seed, next_seed + batch)]
            next_seed += batch
            for result in pool.imap(solve_in_worker, tasks):
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
__all__ = ["import_demos", "merge", "options_digest", "remove_stale_temporaries", "run", "validate_pair"]


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
    # successful_only enters the key only when set, so merges written before the option keep their digest
    key = options_digest(dict(stage="demos.merge", sources=digests,
                              **({"successful_only": True} if cfg.successful_only else {})))
    done = read_json_extra(stem)
    h5_path, json_path = pair_paths(stem)
    if done and done.get("config_digest") == key:
        return MergeDemosResult(h5_path=str(h5_path), json_path=str(json_path), digest=demo_digest(stem),
                                num_episodes=done["num_episodes"], sources=sources,
                                dropped_unsuccessful=done.get("dropped_unsuccessful", 0), skipped=True)
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
        kept = [[i for i, meta in enumerate(p.episodes) if not cfg.successful_only or _succeeded(p, meta)]
                for p in pairs]
        total = sum(len(k) for k in kept)
        dropped = sum(len(p) for p in pairs) - total
        if cfg.successful_only and total == 0:
            raise DemoFileError(f"no successful episode in {', '.join(sources)} ({dropped} episodes, none with "
                                "info success true)", hint="successful_only keeps only the episodes that succeeded")

        def renumbered() -> Iterable[Episode]:
            new_id = 0
            for p, indices in zip(pairs, kept):
                for index in indices:
                    episode = p.read_episode(index, with_obs=True)
                    episode.meta = episode.meta.model_copy(update=dict(episode_id=new_id))
                    new_id += 1
                    yield episode

        remove_stale_temporaries(stem)
        extra = {"ms2flow": {"config_digest": key, "stage": "demos.merge", "sources": sources,
                             "source_digests": digests, "num_episodes": total,
                             **({"successful_only": True, "dropped_unsuccessful": dropped}
                                if cfg.successful_only else {})}}
        write_demo_pair(stem, env_info, renumbered(), extra_json=extra, overwrite=cfg.overwrite)
    finally:
        for p in pairs:
            p.close()
    return MergeDemosResult(h5_path=str(h5_path), json_path=str(json_path), digest=demo_digest(stem),
                            num_episodes=total, sources=sources, dropped_unsuccessful=dropped)


def _succeeded(pair: DemoPair, meta) -> bool:
    """The episode's json ``info["success"]`` (ManiSkill2's flag at the episode's last step); absent is an error,
    not a failure: nothing says what the episode did."""
    success = (meta.info or {}).get("success")
    if not isinstance(success, bool):
        raise DemoFileError(f"{pair.json_path} episode {meta.episode_id}: info has no boolean 'success' "
                            f"({success!r})", hint="successful_only needs each episode's info.success in the json")
    return success
