"""Learning algorithms, one readable file each (config in storage_schemas, pure losses at the top, loop below).

Offline: ``bc``. Online RL: ``ppo``, ``dapg``, ``sac``, ``gail`` (each exposes ``train_<algo>(cfg, sink=None)``).
"""

from __future__ import annotations

from pathlib import Path


def task_of(cfg) -> str:
    """The task a training config is about (BC: env.env_id; online RL: rollout.env.env_id or gym_env_id)."""
    rollout = getattr(cfg, "rollout", None)
    if rollout is not None:
        return rollout.gym_env_id or rollout.env.env_id
    return cfg.env.env_id


def run_dir_for(algo: str, cfg) -> Path:
    """Where a run writes config, metrics and checkpoints: the config's run_dir, else
    $MS2FLOW_DATA_DIR/runs/<algo>/<task>/<run name> (online RL: run name ``seed<seed>``)."""
    from ms2core.paths import runs_dir

    run = getattr(cfg, "run", None)
    explicit = getattr(cfg, "run_dir", None) or getattr(run, "run_dir", None)
    if explicit:
        return Path(explicit)
    name = getattr(cfg, "run_name", None) or f"seed{run.seed}"
    return runs_dir() / algo / task_of(cfg) / name
