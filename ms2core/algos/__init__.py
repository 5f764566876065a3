"""Learning algorithms, one readable file each (config in storage_schemas, pure losses at the top, loop below).

Offline: ``bc``. Online RL: ``ppo``, ``dapg``, ``sac``, ``gail`` (each exposes ``train_<algo>(cfg, sink=None)``).
The table of algorithms (config model, train function, policy loader, ...) is ``ms2core.algos.table``; their
networks are in ``ms2core.nn`` and the one checkpoint format in ``ms2core.checkpoint``.
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
    """Where a run writes config, metrics and checkpoints: the config's run_dir, else a NEW directory
    $MS2FLOW_DATA_DIR/runs/<algo>/<task>/<run name>/<run id> (a fresh id per call; see ms2core.algos.runs)."""
    from ms2core.algos.runs import explicit_run_dir, new_run_id, run_group_dir

    return explicit_run_dir(cfg) or run_group_dir(algo, cfg) / new_run_id()
