"""Plumbing shared by the online algorithms: seeding, tensors, atomic checkpoints with RNG states, results.

The checkpoint helpers are a plain ``torch.save`` of a dict (temp file +
``os.replace`` so a killed run never leaves a half-written checkpoint); the lead
will unify them with ``ms2core.checkpoint`` after merge.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from ms2core.checkpoint import read_checkpoint_file, restore_rng_states, rng_states
from ms2core.errors import ConfigError, TrainingDivergedError  # noqa: F401  (re-exported for the loops)
from ms2core.fileio import torch_save_atomic
from ms2core.metrics import JsonlSink, MetricsSink, MultiSink, NullSink

CHECKPOINT_NAME = "checkpoint.pt"


class TrainResult(BaseModel):
    """What every ``train_<algo>`` returns."""

    algo: str
    env_steps: int
    updates: int
    episodes: int
    final_mean_return: float | None = None      # mean return of the last logged training episodes
    final_success_rate: float | None = None
    eval_mean_return: float | None = None       # deterministic evaluation at the end (run.eval_episodes)
    eval_success_rate: float | None = None
    checkpoint: str | None = None
    curve: list[dict[str, float]] = []          # [{"env_steps", "mean_return", "success_rate"}, ...]
    eval_curve: list[dict[str, float]] = []     # run.eval_every_steps: deterministic [{"env_steps", "success_rate", "mean_return"}]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_torch(run_cfg) -> torch.device:
    if run_cfg.torch_threads is not None:
        torch.set_num_threads(run_cfg.torch_threads)
    device = torch.device(run_cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device={run_cfg.device!r} but CUDA is not available", hint="use run.device=cpu")
    return device


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
    return torch_save_atomic({**state, "rng": rng_states()}, path)


def load_checkpoint(path: str | os.PathLike, algo: str) -> dict[str, Any]:
    state = read_checkpoint_file(path, error=ConfigError)
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


def finite(x: float | None) -> float | None:
    """x, or None where it is missing or not finite (pydantic results stay JSON-clean)."""
    return float(x) if x is not None and np.isfinite(x) else None
