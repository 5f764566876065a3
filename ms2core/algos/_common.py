"""Plumbing shared by the algorithms: seeding, the device, tensors, checkpoints with RNG states, metric sinks.

Checkpoints use the one format of ``ms2core.checkpoint`` (a header, then the algorithm's state), written
atomically, so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ms2core.checkpoint import checkpoint_header, read_checkpoint, restore_rng_states, rng_states  # noqa: F401
from ms2core.errors import ConfigError, TrainingDivergedError  # noqa: F401  (re-exported for the loops)
from ms2core.fileio import torch_save_atomic
from ms2core.metrics import JsonlSink, MetricsSink, MultiSink, NullSink
from storage_schemas.training import TrainResult

CHECKPOINT_NAME = "checkpoint.pt"


def seed_everything(seed: int) -> None:
    """Seed python, numpy (its global RNG takes 32 bits) and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str, key: str = "run.device") -> torch.device:
    """``run.device`` as a torch device: 'auto' = cuda when available; ConfigError for a bad or absent device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"{key} {name!r} is not a torch device", hint="allowed: auto, cpu, cuda, cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name!r} but CUDA is not available here", hint=f"use {key}=cpu or auto")
    return device


def setup_torch(run_cfg, learners=None) -> torch.device:
    """Seeds everything, sets the learner's torch threads, returns the device (the ``run`` section; a
    data-parallel learner's own device: ms2core.algos.distributed.Learners)."""
    seed_everything(run_cfg.seed)
    if run_cfg.torch_threads is not None:
        torch.set_num_threads(run_cfg.torch_threads)
    if learners is not None:
        return learners.device
    from ms2core.algos.distributed import learner_devices, num_learners

    if num_learners(run_cfg) > 1:  # BC, PPO and DAPG launch their learners before they get here
        raise ConfigError(f"run.devices={run_cfg.devices!r}: this algorithm trains on one learner",
                          hint="data-parallel learners are for bc, ppo and dapg; use run.device for the others")
    return learner_devices(run_cfg)[0]


@contextlib.contextmanager
def one_thread_while_simulating(device, simulator_workers: int):
    """Torch on one intra-op thread in this process while ``simulator_workers`` (> 0) step, restored after.

    Between parallel regions OpenMP's idle threads spin-wait on their cores for a while, and those are the
    cores the simulator workers step on: a lock-step round waits for the slowest worker, so a CPU policy's
    small forward passes with torch's default threads made every round 2.6x longer on a 2-core host
    (benchmarks/rollout_barrier.py --parent-threads 0 vs 1). Only for a CPU device with worker processes;
    the learner's update between rollouts keeps its threads (run.torch_threads)."""
    before = torch.get_num_threads()
    if torch.device(device).type != "cpu" or simulator_workers < 1 or before <= 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def obs_to_torch(obs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in obs.items()}


def open_sink(run_cfg, sink: MetricsSink | None) -> tuple[MetricsSink, bool]:
    """The caller's sink, plus metrics.jsonl in run_dir when there is one; bool = we own (must close) it."""
    sinks = [sink] if sink is not None else []
    if run_cfg.run_dir:
        sinks.append(JsonlSink(Path(run_cfg.run_dir) / "metrics.jsonl"))
    if not sinks:
        return NullSink(), False
    return MultiSink(*sinks), bool(run_cfg.run_dir)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (+ RNG states) to ``path``; refuses non-finite weights (TrainingDivergedError),
    so the file at ``path`` is always the last good checkpoint."""
    from ms2core.algos._checks import assert_finite_parameters

    assert_finite_parameters({k: v for k, v in state.items() if k != "buffer"}, int(state.get("env_steps") or 0),
                             what="checkpoint tensor")
    header = checkpoint_header(state["algo"], state.get("config") or {}, state.get("updates") or 0,
                               state.get("env_steps") or 0)
    return torch_save_atomic({**state, **header, "rng": rng_states()}, path)


def load_checkpoint(path: str | os.PathLike, algo: str) -> dict[str, Any]:
    """The online-RL checkpoint at ``path`` (any format version) to resume ``algo`` from."""
    state = read_checkpoint(path, error=ConfigError)
    if state.get("algo") != algo:
        raise ConfigError(f"checkpoint {path} was written by {state.get('algo')!r}, not {algo!r}",
                          hint=f"resume with `ms2 train {state.get('algo')}`")
    return state


def checkpoint_path(run_cfg) -> Path | None:
    return Path(run_cfg.run_dir) / CHECKPOINT_NAME if run_cfg.run_dir else None


def policy_spec(rollout_cfg, vec, obs_shapes: dict[str, tuple[int, ...]], frames=None) -> dict[str, Any]:
    """What a checkpoint needs to be rebuilt and run as a policy without an env (ms2core.algos.policies):
    observation shapes and processing, action size and bounds (policies act in [-1, 1]), FrameMiner frames."""
    processing = None
    if rollout_cfg.gym_env_id is None:
        from ms2core.rollout import rollout_obs_processor

        processing = rollout_obs_processor(rollout_cfg).cfg.model_dump(mode="json")
    return dict(obs_shapes={k: list(v) for k, v in obs_shapes.items()}, action_dim=int(vec.action_dim),
                action_low=vec.action_low.tolist(), action_high=vec.action_high.tolist(),
                obs_processing=processing, frames=[f.to_dict() for f in frames] if frames else None)


def polyak_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, tau)


def online_result(algo: str, run_cfg, checkpoint: str | None, *, env_steps: int, updates: int, episodes: int,
                  start: tuple[int, int, float], summary, curve: list, eval_curve: list | None = None) -> TrainResult:
    """The TrainResult of an online run. ``start`` = (env steps, updates, perf_counter) where this invocation
    began; its rates cover the training of this invocation (not the final evaluation)."""
    start_env_step, start_update, started_s = start
    elapsed = max(time.perf_counter() - started_s, 1e-9)
    return TrainResult(
        algo=algo, run_dir=run_cfg.run_dir, final_checkpoint=checkpoint, updates=updates, env_steps=env_steps,
        start_update=start_update, start_env_step=start_env_step, episodes=episodes,
        updates_per_s=(updates - start_update) / elapsed, env_steps_per_s=(env_steps - start_env_step) / elapsed,
        final_mean_return=finite(summary.mean_return), final_success_rate=finite(summary.success_rate),
        curve=curve, eval_curve=eval_curve or [])


def finite(x: float | None) -> float | None:
    """x, or None where it is missing or not finite (pydantic results stay JSON-clean)."""
    return float(x) if x is not None and np.isfinite(x) else None


def crossed(every: int | None, before: int, now: int) -> bool:
    """The env-step counter passed a multiple of ``every`` going from ``before`` to ``now``.

    Logging, periodic evaluation and checkpoints fall on one grid of env steps (multiples of their
    ``run.*_every_steps``), counted from the run's start, not from the command's: a run resumed from a
    checkpoint (another command, another machine) evaluates at the same env steps as one that ran through,
    however often it was stopped. (Counting from the resume point pushed every periodic evaluation of a run
    resumed each ~90k env steps past its command's end: 96k-step evaluations never happened.)
    """
    return bool(every) and now // every > before // every


def out_of_time(run_cfg, started: float, learners=None) -> bool:
    """Stop the loop here: ``run.stop_after_s`` has passed since ``started`` (perf_counter), or a SIGTERM/SIGINT
    arrived (``stop_on_signals``); data-parallel learners follow rank 0."""
    limit = getattr(run_cfg, "stop_after_s", None)
    over = _stop_signal[0] is not None or bool(limit and time.perf_counter() - started >= limit)
    return bool(learners.broadcast(over)) if learners is not None else over


_stop_signal: list[int | None] = [None]  # the signal that asked the running loop to stop, if any
_last_stop: list[int | None] = [None]    # the signal that stopped the last loop (None: it ran to its end)


def stopped_by_signal() -> str | None:
    """The signal's name when the last ``stop_on_signals`` loop ended on one: its run skips the final
    evaluation (the user asked to stop; ``ms2 evaluate --checkpoint`` runs it later)."""
    return signal.Signals(_last_stop[0]).name if _last_stop[0] is not None else None


@contextlib.contextmanager
def stop_on_signals():
    """While an online run's loop runs: the first SIGTERM (Prefect cancelling the flow run, ``kill``) or SIGINT
    (Ctrl-C) lets the current update finish and the loop end with its checkpoint, like ``run.stop_after_s``
    (``--resume-from`` continues the same curve), without the final evaluation; a second one stops at once
    (KeyboardInterrupt: the last periodic checkpoint is what remains). Outside the main thread (no signal
    handlers there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _stop_signal[0] = _last_stop[0] = None

    def handler(signum, frame):
        if _stop_signal[0] is not None:
            raise KeyboardInterrupt
        _stop_signal[0] = signum
        print(f"ms2flow: {signal.Signals(signum).name} received: stopping after this update with a checkpoint, "
              "without the final evaluation (send it again to stop now)", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _last_stop[0], _stop_signal[0] = _stop_signal[0], None
