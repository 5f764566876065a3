"""Stage ``evaluate``: ``run(cfg) -> EvaluationResult`` for a training checkpoint (see ms2core.evaluation).

Idempotent: when the output directory already holds a result for the same
checkpoint file (same step), seeds and options, it is returned without running episodes.
"""

from __future__ import annotations

from pathlib import Path

from ms2core.evaluation import ObsProcessor, default_output_dir, evaluate
from storage_schemas.training import EvalConfig, EvaluationResult


def run(cfg: EvalConfig, obs_processor: ObsProcessor | None = None, progress: bool = True,
        force: bool = False) -> EvaluationResult:
    result_path = default_output_dir(cfg) / "result.json"
    if not force and result_path.exists():
        previous = EvaluationResult.model_validate_json(result_path.read_text())
        same = (previous.checkpoint == str(cfg.checkpoint) and previous.num_episodes == cfg.num_episodes
                and previous.seed == cfg.seed and previous.sample_mode == cfg.sample_mode
                and (not cfg.save_traj or previous.trajectory_path)
                and (not cfg.save_video or all(e.video for e in previous.episodes))
                and Path(cfg.checkpoint).exists()
                and Path(cfg.checkpoint).stat().st_mtime <= result_path.stat().st_mtime)
        if same:
            return previous
    return evaluate(cfg, obs_processor=obs_processor, progress=progress)
