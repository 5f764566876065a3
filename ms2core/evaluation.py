"""Evaluate a trained policy: episodes in parallel worker processes, success statistics, trajectories, videos.

Episode ``i`` is reset with seed ``seed + i``. Success is counted as
ManiSkill2-Learn does: ``info["success"]`` reached within the step limit
("success once"); "success at end" is ``info["success"]`` at the last step.
ManiSkill2 terminates an episode on success unless ``continue_after_success``.

Episodes run in the simulator worker pool (``ms2core.workers.SimPool``; in this
process for one worker, unless ``sim_python`` names another interpreter). Where the
policy runs (``policy_in``): in the workers, each building one env and loading the
policy weights once, on CPU, kept in its env cache (their interpreter then needs torch
as well as the simulator); or in this process (the default where the workers run another
interpreter, e.g. a simulator runtime without torch beside a CUDA learner): the workers
keep one env each (``ms2core.eval_envs``) and this process runs the policy once per
step on the batch of every worker's observation, on ``policy_device``. Raw observations become processed
observations through an ``obs_processor`` callable: for obs mode "state" that
is ``{"state": raw.astype(float32)}`` (``state_obs_processor``); for point clouds
and RGB-D, ``ms2core.obs.process_observation`` with the training dataset's
processing options (imported lazily, inside the worker).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ms2core.algos._common import one_thread_while_simulating
from ms2core.errors import ConfigError
# The env-side pieces live in the torch-free ms2core.eval_envs (simulator workers import them); importable from here.
from ms2core.eval_envs import (  # noqa: F401
    EpisodeRecorder,
    ManifestObsProcessor,
    default_obs_processor,
    state_obs_processor,
    write_video,
)
from ms2core.workers import SimPool, requirements
from storage_schemas.training import EpisodeResult, EvalConfig, EvaluationResult, Stat

ObsProcessor = Callable[[Any], dict[str, np.ndarray]]


# -- statistics ----------------------------------------------------------------

def mean_ci95(values) -> Stat:
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else float("nan")
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    half = 1.96 * std / math.sqrt(n) if n > 1 else 0.0
    return Stat(mean=mean, ci95_low=mean - half, ci95_high=mean + half, std=std)


def rate_ci95(successes) -> Stat:
    """Success rate with the Wilson 95% interval (sensible at 0% and 100%, unlike mean +- 1.96 se)."""
    x = np.asarray(successes, dtype=np.float64)
    n, z = len(x), 1.96
    p = float(x.mean()) if n else float("nan")
    if n == 0:
        return Stat(mean=p, ci95_low=p, ci95_high=p)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if p == 0.0 else max(0.0, centre - half)  # exact bounds at the ends, not 1 - 1e-16
    high = 1.0 if p == 1.0 else min(1.0, centre + half)
    return Stat(mean=p, ci95_low=low, ci95_high=high,
                std=float(x.std(ddof=1)) if n > 1 else 0.0)


# -- one episode -----------------------------------------------------------------

def run_episode(env, policy, obs_processor: ObsProcessor, seed: int, sample_mode: str = "mean",
                continue_after_success: bool = False, record_trajectory: bool = False,
                video_path: Path | None = None) -> tuple[EpisodeResult, dict | None]:
    """Roll out one episode; returns its result and, if asked, the trajectory arrays (ManiSkill2 layout)."""
    recorder = EpisodeRecorder(env, obs_processor, continue_after_success)
    generator = torch.Generator().manual_seed(seed)
    obs, over = recorder.begin(seed, record_trajectory, video_path), False
    while not over:
        batch = {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in obs.items()}
        obs, over = recorder.step(policy.act(batch, sample_mode, generator)[0].float().numpy())
    return recorder.finish()


# -- workers -------------------------------------------------------------------

def _env_kwargs(env_cfg: dict, cfg: EvalConfig) -> dict:
    return dict(
        env_id=env_cfg["env_id"], obs_mode=env_cfg["obs_mode"], control_mode=env_cfg["control_mode"],
        reward_mode=env_cfg.get("reward_mode", "dense"),
        max_episode_steps=cfg.max_episode_steps or env_cfg.get("max_episode_steps"),
        camera_size=tuple(env_cfg["camera_size"]) if env_cfg.get("camera_size") else None,
        backend=cfg.backend or env_cfg.get("backend", "sapien"),
        render_mode="rgb_array" if cfg.save_video else None,
    )


def load_eval_policy(cfg: EvalConfig, device: str = "cpu"):
    """(policy with ``act``, checkpoint view): an ms2flow checkpoint, or an ML2L one with its config."""
    if cfg.ml2l_config:
        from ms2core.nn.ml2l import load_ml2l_policy

        return load_ml2l_policy(cfg.checkpoint, cfg.ml2l_config, cfg.ml2l_options)
    from ms2core.algos.policies import load_policy

    return load_policy(cfg.checkpoint, device)


def _require_action_dim(action_shape: tuple, ckpt: dict, cfg: EvalConfig) -> None:
    dim = ckpt.get("extra", {}).get("action_dim")
    if dim is not None and tuple(action_shape) != (int(dim),):
        raise ConfigError(f"the policy acts in {dim} dimensions, control mode {ckpt['config']['env']['control_mode']!r} "
                          f"of {ckpt['config']['env']['env_id']} takes {action_shape[0]}",
                          hint="use the control mode it was trained with (ML2L: --ml2l-cfg-option "
                               "env_cfg.control_mode=...)" if cfg.ml2l_config else "evaluate in the training env")


class _EvalWorker:
    """What an evaluation worker keeps (in its env cache): the policy on CPU, one env, the obs processing."""

    def __init__(self, cfg_json: str, obs_processor: ObsProcessor | None, threads: int):
        from ms2core.envs import make_env

        torch.set_num_threads(threads)
        self.cfg = cfg = EvalConfig.model_validate_json(cfg_json)
        self.policy, ckpt = load_eval_policy(cfg, "cpu")
        env_cfg = ckpt["config"]["env"]
        extra = ckpt.get("extra", {})
        self.env = make_env(**_env_kwargs(env_cfg, cfg))
        try:
            _require_action_dim(self.env.action_space.shape, ckpt, cfg)
        except ConfigError:
            self.env.close()
            raise
        self.processor = obs_processor or default_obs_processor(
            env_cfg["obs_mode"], extra.get("dataset_manifest"), cfg.seed, extra.get("obs_processing"))

    def episode(self, index: int, video: str | None) -> tuple[int, EpisodeResult, dict | None]:
        cfg = self.cfg
        result, traj = run_episode(self.env, self.policy, self.processor, cfg.seed + index, cfg.sample_mode,
                                   cfg.continue_after_success, cfg.save_traj, Path(video) if video else None)
        return index, result, traj

    def close(self) -> None:
        self.env.close()


def evaluate_in_worker(task: tuple) -> tuple[int, EpisodeResult, dict | None]:
    """Pool entry point: (config json, obs processor, torch threads, episode index, video path or None)."""
    from ms2core.envs.cache import env_cache

    cfg_json, obs_processor, threads, index, video = task
    worker = env_cache().get(("ms2core.evaluation", cfg_json), lambda: _EvalWorker(cfg_json, obs_processor, threads))
    return worker.episode(index, video)


def default_output_dir(cfg: EvalConfig) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    ckpt = Path(cfg.checkpoint)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run_dir / "eval" / f"{ckpt.stem}_seed{cfg.seed}_{cfg.sample_mode}_n{cfg.num_episodes}"


def evaluate(cfg: EvalConfig, obs_processor: ObsProcessor | None = None, progress: bool = True) -> EvaluationResult:
    """Run ``cfg.num_episodes`` episodes of the checkpoint's policy; save ``result.json`` (and trajectories/videos)."""
    from ms2core.trajectory import Episode, write_demo_pair
    from storage_schemas.demos import EpisodeMeta

    _, ckpt = load_eval_policy(cfg)  # any algorithm; fails here, not in a worker, on a bad checkpoint
    require_maniskill_env(ckpt, cfg.checkpoint)
    env_cfg = ckpt["config"]["env"]
    out_dir = default_output_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [(i, str(out_dir / "videos" / f"episode_{i}.mp4") if _records_video(cfg, i) else None)
             for i in range(cfg.num_episodes)]
    t0 = time.perf_counter()
    num_procs = min(cfg.num_procs, cfg.num_episodes)
    bar = _progress(cfg.num_episodes, progress)
    if policy_in_parent(cfg):
        results = _episodes_with_policy_here(cfg, ckpt, tasks, num_procs, obs_processor, bar)
    else:
        results = _episodes_with_policy_in_workers(cfg, env_cfg, tasks, num_procs, obs_processor, bar)
    bar.close()
    episodes = [results[i][0] for i in range(cfg.num_episodes)]

    traj_path = None
    if cfg.save_traj:
        limit = cfg.max_episode_steps or env_cfg.get("max_episode_steps")
        env_info = dict(env_id=env_cfg["env_id"], max_episode_steps=limit,
                        env_kwargs=dict(obs_mode=env_cfg["obs_mode"], control_mode=env_cfg["control_mode"],
                                        reward_mode=env_cfg.get("reward_mode", "dense")))
        demo_episodes = []
        for i in range(cfg.num_episodes):
            res, traj = results[i]
            meta = EpisodeMeta(episode_id=i, episode_seed=res.seed, reset_kwargs={"seed": res.seed},
                               control_mode=env_cfg["control_mode"], elapsed_steps=res.length,
                               info={"success": res.success_at_end, "success_once": res.success_once})
            demo_episodes.append(Episode(meta=meta, actions=traj["actions"], success=traj["success"],
                                         env_states=traj["env_states"]))
        # The evaluation's own output directory: a rerun of it replaces its trajectories as it replaces its
        # videos and result json (what it did before demo pairs became immutable by default).
        h5_path, _ = write_demo_pair(out_dir / "trajectory", env_info, demo_episodes, overwrite=True)
        traj_path = str(h5_path)

    result = EvaluationResult(
        env_id=env_cfg["env_id"], obs_mode=env_cfg["obs_mode"], control_mode=env_cfg["control_mode"],
        checkpoint=str(cfg.checkpoint), checkpoint_step=int(ckpt["step"]), num_episodes=cfg.num_episodes,
        seed=cfg.seed, sample_mode=cfg.sample_mode,
        max_episode_steps=cfg.max_episode_steps or env_cfg.get("max_episode_steps"),
        success_at_end=rate_ci95([e.success_at_end for e in episodes]),
        success_once=rate_ci95([e.success_once for e in episodes]),
        episode_length=mean_ci95([e.length for e in episodes]),
        episode_return=mean_ci95([e.episode_return for e in episodes]),
        episodes=episodes, trajectory_path=traj_path, wall_time_s=time.perf_counter() - t0,
    )
    save_result(result, out_dir / "result.json")
    return result


def policy_in_parent(cfg: EvalConfig) -> bool:
    """Run the policy in this process (``policy_in``; auto: where the workers run another interpreter)."""
    if cfg.policy_in != "auto":
        return cfg.policy_in == "parent"
    from ms2core.workers import resolve_sim_python

    return resolve_sim_python(cfg.sim_python) is not None


def _episodes_with_policy_in_workers(cfg: EvalConfig, env_cfg: dict, tasks: list, num_procs: int,
                                     obs_processor: ObsProcessor | None, bar) -> dict:
    """Each worker loads the policy (CPU) and runs whole episodes; one worker: here, with this process's threads."""
    threads = torch.get_num_threads() if num_procs == 1 else 1
    cfg_json = cfg.model_dump_json()
    items = [(cfg_json, obs_processor, threads, i, video) for i, video in tasks]
    pool = SimPool(num_procs if num_procs > 1 else 0, python=getattr(cfg, "sim_python", None),
                   requires=requirements(cfg.backend or env_cfg.get("backend", "sapien")) + ("torch",))
    results = {}
    with pool:
        for i, res, traj in pool.imap(evaluate_in_worker, items):
            results[i] = (res, traj)
            bar.update(1)
    return results


def _policy_device(cfg: EvalConfig) -> str:
    if cfg.ml2l_config:
        return "cpu"  # ML2L policies are loaded on CPU
    if cfg.policy_device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.policy_device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("policy_device 'cuda' was asked for, but torch sees no CUDA device here",
                          hint="use policy_device=auto or cpu")
    return cfg.policy_device


def _episodes_with_policy_here(cfg: EvalConfig, ckpt: dict, tasks: list, num_procs: int,
                               obs_processor: ObsProcessor | None, bar) -> dict:
    """Workers keep one env each (no torch needed there); this process batches their observations, runs the
    policy once per lock-step round on ``policy_device`` and hands each worker its action
    (ms2core.eval_envs). A worker whose episode ended starts the next pending one in the next round. A CPU
    policy runs on one torch thread meanwhile (its idle OpenMP threads would spin on the workers' cores)."""
    from ms2core.eval_envs import drive_eval_slot, start_eval_slot

    env_cfg, extra = ckpt["config"]["env"], ckpt.get("extra", {})
    device = _policy_device(cfg)
    policy, _ = load_eval_policy(cfg, device)
    backend = cfg.backend or env_cfg.get("backend", "sapien")
    pool = SimPool(num_procs if num_procs > 1 else 0, python=cfg.sim_python, requires=requirements(backend))
    results, todo, running, pending = {}, list(tasks), {}, {}
    with pool, one_thread_while_simulating(device, pool.num_workers):
        slots = max(1, pool.num_workers)
        processors = [obs_processor or default_obs_processor(env_cfg["obs_mode"], extra.get("dataset_manifest"),
                                                             cfg.seed, extra.get("obs_processing"))
                      for _ in range(slots)]
        bounds = pool.call_each(start_eval_slot, [(_env_kwargs(env_cfg, cfg), p, cfg.continue_after_success)
                                                  for p in processors])
        _require_action_dim(np.shape(bounds[0]["action_low"]), ckpt, cfg)
        while todo or running:
            actions = _act_batch(policy, pending, running, cfg.sample_mode, device)
            commands = [None] * slots
            for s in range(slots):
                if s in actions:
                    commands[s] = ("step", actions[s])
                elif s not in running and todo:
                    index, video = todo.pop(0)
                    running[s] = (index, torch.Generator(device).manual_seed(cfg.seed + index))
                    commands[s] = ("begin", cfg.seed + index, cfg.save_traj, video)
            pending = {}
            for s, reply in enumerate(pool.call_each(drive_eval_slot, [(c,) for c in commands])):
                if reply is None:
                    continue
                if "result" in reply:
                    results[running.pop(s)[0]] = (reply["result"], reply["traj"])
                    bar.update(1)
                else:
                    pending[s] = reply["obs"]
    return results


@torch.no_grad()
def _act_batch(policy, pending: dict, running: dict, sample_mode: str, device: str) -> dict:
    """Actions (numpy) for the slots with an observation: one batched forward pass for ``mean``; per slot with
    its episode's generator for ``sample`` (so an episode's noise depends only on its seed)."""
    if not pending:
        return {}
    slots = sorted(pending)
    batch = {k: torch.from_numpy(np.stack([pending[s][k] for s in slots])).to(device) for k in pending[slots[0]]}
    if sample_mode == "mean":
        out = policy.act(batch, "mean", None).float().cpu().numpy()
        return {s: out[j] for j, s in enumerate(slots)}
    return {s: policy.act({k: v[j:j + 1] for k, v in batch.items()}, sample_mode, running[s][1])[0].float().cpu().numpy()
            for j, s in enumerate(slots)}


def evaluate_or_reuse(cfg: EvalConfig, obs_processor: ObsProcessor | None = None, progress: bool = True,
                      force: bool = False) -> EvaluationResult:
    """``evaluate``, unless the output directory already holds a result for the same checkpoint file (not
    changed since), seeds and options (the evaluate stage's idempotence, also used after training)."""
    result_path = default_output_dir(cfg) / "result.json"
    if not force and result_path.exists():
        previous = EvaluationResult.model_validate_json(result_path.read_text())
        same = (previous.checkpoint == str(cfg.checkpoint) and previous.num_episodes == cfg.num_episodes
                and previous.seed == cfg.seed and previous.sample_mode == cfg.sample_mode
                and (not cfg.save_traj or previous.trajectory_path)
                and all(e.video for i, e in enumerate(previous.episodes) if _records_video(cfg, i))
                and Path(cfg.checkpoint).exists()
                and Path(cfg.checkpoint).stat().st_mtime <= result_path.stat().st_mtime)
        if same:
            return previous
    return evaluate(cfg, obs_processor=obs_processor, progress=progress)


def require_maniskill_env(ckpt_view: dict, checkpoint) -> None:
    """Evaluation and export build ManiSkill2 envs; a policy trained on a plain gymnasium env has none."""
    gym_env_id = ckpt_view.get("extra", {}).get("gym_env_id")
    if gym_env_id:
        raise ConfigError(f"checkpoint {checkpoint} was trained on the gymnasium env {gym_env_id!r}, not a "
                          "ManiSkill2 task", hint="evaluate it with ms2core.rollout.evaluate_deterministic instead")


def _records_video(cfg: EvalConfig, index: int) -> bool:
    return cfg.save_video and (cfg.max_videos is None or index < cfg.max_videos)


def save_result(result: EvaluationResult, path: Path) -> Path:
    from ms2core.fileio import write_text_atomic

    return write_text_atomic(path, result.model_dump_json(indent=2))


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluate", unit="ep", disable=not enabled, dynamic_ncols=True)
