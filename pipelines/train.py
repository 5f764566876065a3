"""Stage ``train``: ``run(cfg, algo)`` trains one algorithm and returns a TrainResult.

Algorithms are a plain dict from name to (config model, train function); each
train function lives whole in ``ms2core.algos.<name>``. The stage is idempotent:
a run directory whose final checkpoint was trained with the same config (and
step budget) is returned as is, without training again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from ms2core.algos import run_dir_for
from ms2core.errors import unknown_choice
from ms2core.fileio import write_text_atomic
from storage_schemas.rl import DAPGConfig, GAILConfig, PPOConfig, SACConfig
from storage_schemas.training import BCConfig, EvalConfig, TrainResult


def _train_bc(cfg: BCConfig, resume_from: str | None, progress: bool, sink=None) -> TrainResult:
    from ms2core.algos import bc

    return bc.train(cfg, resume_from=resume_from, progress=progress, sink=sink)


def _online(algo: str) -> Callable[..., TrainResult]:
    """Adapter: ms2core.algos.<algo>.train_<algo>(cfg, sink) -> this stage's TrainResult, files in the run dir."""

    def train(cfg, resume_from: str | None, progress: bool, sink=None) -> TrainResult:
        import importlib
        import time

        module = importlib.import_module(f"ms2core.algos.{algo}")
        run_dir = run_dir_for(algo, cfg)
        run_update = {"run_dir": str(run_dir)}
        if resume_from:
            run_update["resume_from"] = str(resume_from)
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update=run_update)})
        start = time.perf_counter()
        result = getattr(module, f"train_{algo}")(cfg, sink=sink)
        elapsed = time.perf_counter() - start
        return TrainResult(
            algo=algo, run_dir=str(run_dir), final_checkpoint=result.checkpoint or "", num_steps=result.env_steps,
            start_step=0, final_loss=None, updates_per_s=result.updates / elapsed if elapsed > 0 else 0.0,
            env_steps=result.env_steps, env_steps_per_s=result.env_steps / elapsed if elapsed > 0 else 0.0,
            eval_success_rate=result.eval_success_rate,
            eval_mean_return=result.eval_mean_return,
        )

    return train


#: name -> (config model, train function(cfg, resume_from, progress, sink) -> TrainResult).
ALGORITHMS: dict[str, tuple[type[BaseModel], Callable[..., TrainResult]]] = {
    "bc": (BCConfig, _train_bc),
    "ppo": (PPOConfig, _online("ppo")),
    "dapg": (DAPGConfig, _online("dapg")),
    "sac": (SACConfig, _online("sac")),
    "gail": (GAILConfig, _online("gail")),
}


def _completed(algo: str, cfg) -> TrainResult | None:
    """The saved result of an identical, finished run in the same directory, if there is one."""
    result_path = run_dir_for(algo, cfg) / "train_result.json"
    config_path = run_dir_for(algo, cfg) / "resolved_config.json"
    if not (result_path.exists() and config_path.exists()):
        return None
    if json.loads(config_path.read_text()) != cfg.model_dump(mode="json"):
        return None
    result = TrainResult.model_validate_json(result_path.read_text())
    if not Path(result.final_checkpoint).exists():
        return None
    return result.model_copy(update={"skipped": True})


def run(cfg, algo: str = "bc", resume_from: str | None = None, progress: bool = True, sink=None) -> TrainResult:
    """Train ``algo``; metrics go to the run's metrics.jsonl and, when given, ``sink`` (a MetricsSink)."""
    if algo not in ALGORITHMS:
        raise unknown_choice("algorithm", algo, ALGORITHMS)
    model, train_fn = ALGORITHMS[algo]
    if not isinstance(cfg, model):
        cfg = model.model_validate(cfg)
    if resume_from is None and (done := _completed(algo, cfg)) is not None:
        return done
    result = train_fn(cfg, resume_from, progress, sink)
    eval_episodes = getattr(cfg, "eval_episodes", 0)
    if eval_episodes:
        from pipelines.evaluate import run as evaluate

        result.evaluation = evaluate(EvalConfig(checkpoint=result.final_checkpoint, num_episodes=eval_episodes,
                                                num_procs=getattr(cfg, "eval_num_procs", 1)), progress=progress)
    run_dir = Path(result.run_dir)
    write_text_atomic(run_dir / "train_result.json", result.model_dump_json(indent=2))
    write_text_atomic(run_dir / "resolved_config.json", json.dumps(cfg.model_dump(mode="json"), indent=2))
    return result
