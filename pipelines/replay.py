"""Control-mode conversion of a demo pair by replay (``ms2 replay``), ManiSkill2's semantics, in parallel.

    run(ReplayConfig) -> ReplayResult

Input: a pair recorded in pd_joint_pos (official ManiSkill2 demos, ours) or
pd_joint_delta_pos. Output, beside it by default (ManiSkill2's naming)::

    NAME.none.<target_mode>.h5 / .json      converted episodes (same episode ids and seeds)
    NAME.none.<target_mode>.report.json     ReplayReport: every episode, converted or why not

Episodes are split over the simulator worker pool (``ms2core.workers``; started
with ``sim_python`` if set; each worker keeps its envs alive and reads its
episodes from the h5 itself); results come back in episode
order. An episode that does not convert is excluded from the pair and listed
in the report with the reason. The input passes the demo-pair checks
(``require_sound_demos``) before any work, and nothing is written unless the
run completes: pair and report are staged under temporary names and committed
together (ms2core.trajectory.commit_pair; json last, then the report). The json
records a digest of (source digest, target mode, options) and of the report; a
rerun with the same ones returns the existing output without work. An existing
output made from other inputs is refused unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from ms2core.demo_pairs import options_digest, remove_stale_temporaries, validate_pair
from ms2core.errors import ConfigError, DemoFileError, UnknownEnvError, unknown_choice
from ms2core.trajectory import DemoPair, demo_digest, pair_paths, read_json_extra, refuse_existing, write_demo_pair
from ms2core.validation.demos import require_sound_demos
from ms2core.workers import SimPool, requirements
from storage_schemas.demos import EnvInfo, EpisodeReplayStatus, ReplayConfig, ReplayReport, ReplayResult

REPLAY_VERSION = "ms2-replay-1"  # bump when conversion behaviour changes (invalidates cached outputs)


def default_output(source_h5: Path, source_mode: str, target_mode: str) -> Path:
    """ManiSkill2's ``NAME.<obs_mode>.<control_mode>``; a trailing ``.[none.]<source_mode>`` is replaced."""
    name = source_h5.name[: -len(".h5")]
    for suffix in (f".none.{source_mode}", f".{source_mode}"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return source_h5.with_name(f"{name}.none.{target_mode}")


def report_path(stem: Path) -> Path:
    return stem.with_name(stem.name + ".report.json")


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _convert(cfg: ReplayConfig, tasks: list, desc: str) -> tuple[list, list[float]]:
    """Convert every task's episode in the simulator worker pool; results in episode order, arrival times."""
    from ms2core.envs.replay import convert_in_worker

    results, arrival_s = [], []
    num_workers = min(cfg.num_workers, len(tasks))
    pool = SimPool(num_workers if num_workers > 1 else 0, python=cfg.sim_python, requires=requirements(cfg.backend))
    bar = tqdm(total=len(tasks), desc=desc, unit="ep", disable=not cfg.progress, dynamic_ncols=True)
    with pool, bar:
        for res in pool.imap(convert_in_worker, tasks):
            results.append(res)
            arrival_s.append(time.perf_counter())
            bar.update()
    return results, arrival_s


def _statuses(cfg: ReplayConfig, results: list) -> tuple[list[EpisodeReplayStatus], list]:
    """Each episode's status for the report, and the converted episodes kept in the output."""
    statuses, kept = [], []
    for res in results:
        status = EpisodeReplayStatus(
            episode_id=res.episode_id, seed=res.seed, converted=res.converted, reason=res.reason,
            source_steps=res.source_steps, converted_steps=res.episode.num_steps if res.episode else 0,
            first_success_step=res.first_success_step, open_loop_success=res.open_loop_success,
        )
        if status.converted and cfg.require_open_loop_success and res.open_loop_success is False:
            status.converted = False
            status.reason = "converted actions replayed open-loop from the seed did not reach success"
        statuses.append(status)
        if status.converted:
            kept.append(res.episode)
    return statuses, kept


def _check_source(cfg: ReplayConfig, source_h5: Path, source_json: Path):
    """The demo gate, the pair's layout, its env id and the conversion: (gate result, record, env info, mode, N)."""
    from ms2core.envs import registered_env_ids, supported_control_modes
    from ms2core.envs.replay import check_conversion

    # The demo gate first: NaN/huge/int actions, wrong dims, a wrong seed or damaged h5 are refused here,
    # not converted and reported as converted.
    checked = require_sound_demos(source_h5, backend=cfg.backend, force=cfg.force)
    record = validate_pair(source_h5, check_env=False)  # layout + every array readable, before any work
    with DemoPair(source_h5) as demos:
        env_info = demos.env_info
        source_mode = demos.meta.control_mode
        num_episodes = min(len(demos), cfg.max_episodes or len(demos))
    env_id = env_info.env_id
    if source_mode is None:
        raise DemoFileError(f"{source_json}: no control_mode in the episodes or env_info.env_kwargs",
                            hint="ManiSkill2 demos record it per episode ('control_mode': 'pd_joint_pos')")
    known = registered_env_ids(cfg.backend)
    if env_id not in known:
        err = unknown_choice("env id", env_id, known, cls=UnknownEnvError)
        raise UnknownEnvError(f"{source_json}: env_info.env_id: {err.message}", hint=err.hint)
    supported = supported_control_modes(env_id, cfg.backend)
    check_conversion(env_id, source_mode, cfg.target_control_mode, supported, where=str(source_json))
    return checked, record, env_info, source_mode, num_episodes


def run(cfg: ReplayConfig) -> ReplayResult:
    from ms2core.envs.replay import ConvertTask

    source_h5, source_json = pair_paths(cfg.input)
    checked, record, env_info, source_mode, num_episodes = _check_source(cfg, source_h5, source_json)
    env_id = env_info.env_id
    stem = Path(cfg.output) if cfg.output else default_output(source_h5, source_mode, cfg.target_control_mode)
    stem = stem.with_suffix("") if stem.suffix in (".h5", ".json") else stem
    out_h5, out_json = pair_paths(stem)
    if out_h5.resolve() == source_h5.resolve():
        raise ConfigError(f"replay output {out_h5} is the input itself", hint="set output to another path")
    key = dict(stage="replay", version=REPLAY_VERSION, source_digest=record.digest,
               target_control_mode=cfg.target_control_mode, max_episodes=cfg.max_episodes,
               verify_open_loop=cfg.verify_open_loop, require_open_loop_success=cfg.require_open_loop_success,
               backend=cfg.backend, **({"forced_demo_checks": checked.error_codes} if checked.forced else {}))
    key_digest = options_digest(key)
    done = read_json_extra(stem)
    same_inputs = bool(done) and done.get("config_digest") == key_digest
    report_text = report_path(stem).read_text() if report_path(stem).exists() else None
    if same_inputs and report_text is not None and done.get("report_digest") == _text_digest(report_text):
        return ReplayResult(h5_path=str(out_h5), json_path=str(out_json), report_path=str(report_path(stem)),
                            digest=demo_digest(stem), report=ReplayReport.model_validate_json(report_text),
                            skipped=True)
    # Our own output of these very inputs whose report went missing may be redone; anything else is kept.
    refuse_existing(stem, cfg.overwrite or same_inputs)
    remove_stale_temporaries(stem)

    tasks = [ConvertTask(str(source_h5), i, env_id, source_mode, cfg.target_control_mode,
                         json.dumps(env_info.env_kwargs, sort_keys=True), cfg.backend, cfg.verify_open_loop)
             for i in range(num_episodes)]
    start = time.perf_counter()
    results, arrival_s = _convert(cfg, tasks, f"replay {env_id} -> {cfg.target_control_mode}")
    wall_s = time.perf_counter() - start
    # After the first result every worker has its envs up: the rate from there on excludes start-up.
    span_s = arrival_s[-1] - arrival_s[0]
    steady = (len(arrival_s) - 1) / span_s if len(arrival_s) > 1 and span_s > 0 else None
    statuses, kept = _statuses(cfg, results)
    open_loop = [s.open_loop_success for s in statuses if s.converted and s.open_loop_success is not None]
    report = ReplayReport(
        source_h5=str(source_h5), source_digest=record.digest, env_id=env_id, source_control_mode=source_mode,
        target_control_mode=cfg.target_control_mode, num_episodes=num_episodes, num_converted=len(kept),
        open_loop_successes=sum(open_loop) if cfg.verify_open_loop else None, episodes=statuses, wall_s=wall_s,
        episodes_per_s=num_episodes / wall_s if wall_s > 0 else 0.0, steady_episodes_per_s=steady,
        startup_s=arrival_s[0] - start, num_workers=cfg.num_workers,
    )
    if not kept:
        reasons = "; ".join(f"episode {s.episode_id}: {s.reason}" for s in statuses[:3])
        raise DemoFileError(f"{source_h5}: no episode converted to {cfg.target_control_mode}; nothing written",
                            hint=reasons)

    new_info = EnvInfo(env_id=env_id, max_episode_steps=env_info.max_episode_steps,
                       env_kwargs={**env_info.env_kwargs, "obs_mode": "none",
                                   "control_mode": cfg.target_control_mode})
    # The report is staged with the pair and moved in after its json; the json records the report's
    # digest, so a report of another run beside this pair is never taken for this one's.
    report_text = report.model_dump_json(indent=2)
    extra = {"ms2flow": {"config_digest": key_digest, "key": key, "report": report_path(stem).name,
                         "report_digest": _text_digest(report_text), **checked.provenance(),
                         "excluded_episode_ids": [s.episode_id for s in statuses if not s.converted]}}
    write_demo_pair(stem, new_info, kept, extra_json=extra, overwrite=True,
                    sidecars={report_path(stem): report_text.encode()})
    return ReplayResult(h5_path=str(out_h5), json_path=str(out_json), report_path=str(report_path(stem)),
                        digest=demo_digest(stem), report=report)
