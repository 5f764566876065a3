"""Learning algorithms, one readable file each (config in storage_schemas, pure losses at the top, loop below).

Offline: ``bc``. Online RL: ``ppo``, ``dapg``, ``sac``, ``gail`` (each exposes ``train_<algo>(cfg, sink=None)``).
"""

from __future__ import annotations

from pathlib import Path


def run_dir_for(algo: str, cfg) -> Path:
    """Where a run writes config, metrics and checkpoints: cfg.run_dir or $MS2FLOW_DATA_DIR/runs/<algo>/<env>/<name>."""
    from ms2core.paths import runs_dir

    return Path(cfg.run_dir) if cfg.run_dir else runs_dir() / algo / cfg.env.env_id / cfg.run_name
