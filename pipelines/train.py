"""Stage ``train``: ``run(cfg, algo)`` trains one algorithm and returns a TrainResult.

Algorithms are a plain dict from name to (config model, train function); each
train function lives whole in ``ms2core.algos.<name>``. Before anything is
read or written, ``run``:

1. checks the env settings against the env registry and every input dataset's manifest
   (env id, control mode, obs mode: ConfigError naming the value, the dataset's and the allowed ones);
2. refuses inputs that failed validation, were never validated, changed since, or are incomplete
   (``ms2core.validation.require_validated``), unless ``force`` (a warning, recorded in the result);
3. picks the run directory (``ms2core.algos.runs.claim_run_dir``): a new one per run, the checkpoint's own
   on resume, an explicit one only if empty or ``overwrite``.

The stage is idempotent: an identical finished run (same resolved config, same validated inputs) is
returned as is (``skipped``), without training again, unless ``overwrite``. A run that fails records ``failure.json`` in its directory
(a fresh run that wrote no checkpoint is removed instead).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from ms2core.algos import runs
from ms2core.errors import DiskFullError, Ms2Error, TrainingDivergedError, unknown_choice
from ms2core.fileio import write_text_atomic
from storage_schemas.rl import DAPGConfig, GAILConfig, PPOConfig, SACConfig
from storage_schemas.training import BCConfig, EvalConfig, TrainResult

log = logging.getLogger(__name__)


def _train_bc(cfg: BCConfig, resume_from: str | None, progress: bool, sink=None) -> TrainResult:
    from ms2core.algos import bc

    return bc.train(cfg, resume_from=resume_from, progress=progress, sink=sink)


def _online(algo: str) -> Callable[..., TrainResult]:
    """Adapter: ms2core.algos.<algo>.train_<algo>(cfg, sink) -> this stage's TrainResult, files in the run dir."""

    def train(cfg, resume_from: str | None, progress: bool, sink=None) -> TrainResult:
        import importlib
        import time

        module = importlib.import_module(f"ms2core.algos.{algo}")
        run_dir = Path(cfg.run.run_dir)
        run_update = {}
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


def _flag(cfg, name: str) -> bool:
    """BC keeps force/overwrite at the top level, online RL under run."""
    return bool(getattr(cfg, name, None) or getattr(getattr(cfg, "run", None), name, False))


def check_inputs(cfg) -> tuple[dict[str, str | None], list[str]]:
    """Env settings against registry and manifests, then the validation gate for every input dataset.

    Returns (input path -> validation fingerprint, the problems ``force`` overrode)."""
    from ms2core.algos._checks import check_env_against_inputs, training_inputs
    from ms2core.validation.store import open_root, validation_problem
    from ms2core.zarr_io import read_manifest

    inputs = training_inputs(cfg)
    manifests = {}
    for name, path in inputs:
        try:
            manifests[name] = (path, read_manifest(open_root(path)))
        except Ms2Error:
            raise
        except Exception:  # noqa: BLE001 - a manifest that does not parse: the validation gate says why
            manifests[name] = (path, None)
    check_env_against_inputs(cfg, manifests)
    fingerprints, forced = {}, []
    for name, path in inputs:
        record, problem = validation_problem(path, name=f"training input {name}")
        if problem is not None:
            if not _flag(cfg, "force"):
                raise problem
            log.warning("--force: training anyway on %s", problem.message)
            forced.append(problem.message)
        fingerprints[path] = record.fingerprint if record is not None else None
    return fingerprints, forced


def _naming_inputs(exc: TrainingDivergedError, paths: list[str]) -> TrainingDivergedError:
    """The divergence hint with this run's inputs in place of the generic `ms2 validate PATH`."""
    hint = exc.hint or ""
    if paths:
        hint = hint.replace("`ms2 validate PATH`", " and ".join(f"`ms2 validate {p} --recheck`" for p in paths))
    else:  # online RL without demos: no dataset to check
        hint = hint.replace(", and check the inputs with `ms2 validate PATH`", "")
    return TrainingDivergedError(exc.message, hint, step=exc.step, value=exc.value)


def _failure(exc: BaseException) -> dict:
    status = "diverged" if isinstance(exc, TrainingDivergedError) else "failed"
    return {"status": status, "error": type(exc).__name__, "message": getattr(exc, "message", str(exc)),
            "hint": getattr(exc, "hint", None), "step": getattr(exc, "step", None)}


def run(cfg, algo: str = "bc", resume_from: str | None = None, progress: bool = True, sink=None) -> TrainResult:
    """Train ``algo``; metrics go to the run's metrics.jsonl and, when given, ``sink`` (a MetricsSink)."""
    if algo not in ALGORITHMS:
        raise unknown_choice("algorithm", algo, ALGORITHMS)
    model, train_fn = ALGORITHMS[algo]
    if not isinstance(cfg, model):
        cfg = model.model_validate(cfg)
    inputs, forced = check_inputs(cfg)
    overwrite = _flag(cfg, "overwrite")  # asks for a new training even where an identical one finished
    if resume_from is None and not overwrite and (done := runs.find_completed(algo, cfg, inputs)) is not None:
        return done
    claim = runs.claim_run_dir(algo, cfg, resume_from, overwrite)
    cfg = runs.with_run_dir(cfg, claim.path)
    try:
        result = train_fn(cfg, resume_from, progress, sink)
        eval_episodes = getattr(cfg, "eval_episodes", 0)
        if eval_episodes:
            from ms2core.evaluation import evaluate_or_reuse as evaluate

            result.evaluation = evaluate(EvalConfig(checkpoint=result.final_checkpoint, num_episodes=eval_episodes,
                                                    num_procs=getattr(cfg, "eval_num_procs", 1)), progress=progress)
        result.inputs, result.forced_inputs = inputs, forced
        write_text_atomic(claim.path / "resolved_config.json", json.dumps(cfg.model_dump(mode="json"), indent=2))
        write_text_atomic(claim.path / "train_result.json", result.model_dump_json(indent=2))
    except TrainingDivergedError as exc:
        named = _naming_inputs(exc, list(inputs))
        claim.failed(_failure(named), record=True, keep=True)
        raise named from None
    except BaseException as exc:
        # a user error found before training (config, checkpoint, dataset) is no failure of the run itself
        claim.failed(_failure(exc), record=isinstance(exc, DiskFullError) or not isinstance(exc, Ms2Error))
        raise
    claim.succeeded()
    return result
