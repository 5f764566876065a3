"""Stage ``evaluate``: ``run(cfg) -> EvaluationResult`` for a training checkpoint (see ms2core.evaluation).

Idempotent: when the output directory already holds a result for the same
checkpoint file (same step), seeds and options, it is returned without running episodes.
"""

from __future__ import annotations

from ms2core.evaluation import ObsProcessor, evaluate_or_reuse
from storage_schemas.training import EvalConfig, EvaluationResult


def run(cfg: EvalConfig, obs_processor: ObsProcessor | None = None, progress: bool = True,
        force: bool = False) -> EvaluationResult:
    return evaluate_or_reuse(cfg, obs_processor=obs_processor, progress=progress, force=force)
