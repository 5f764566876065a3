"""Stage ``train``: ``run(cfg, algo)`` trains one algorithm and returns a TrainResult.

The algorithms are the table ``ms2core.algos.table.ALGORITHMS`` (config model, train function, ...); each
lives whole in ``ms2core.algos.<name>``. Before anything is read or written, ``run``:

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

from ms2core.algos import runs
from ms2core.algos.table import algorithm
from ms2core.errors import DiskFullError, Ms2Error, TrainingDivergedError
from ms2core.fileio import write_text_atomic
from storage_schemas.training import EvalConfig, TrainResult

log = logging.getLogger(__name__)


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
            if not cfg.run.force:
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


def final_evaluation(cfg, algo: str, result: TrainResult, eval_episodes: int | None = None, *,
                     save_video: bool = False, max_videos: int | None = None,
                     output_dir: str | None = None) -> EvalConfig | None:
    """The one decision whether training is followed by ``ms2 evaluate`` of its final checkpoint (None: not).

    ``eval_episodes`` (the caller's, e.g. a flow parameter) wins; otherwise BC evaluates for run.eval_episodes,
    while the online algorithms evaluate themselves at the end of training (run.eval_episodes, in
    result.eval_success_rate) and need no second evaluation. A result that already holds an evaluation of
    that many episodes (a skipped, identical run) is not evaluated again."""
    online = algorithm(algo).online
    n = eval_episodes if eval_episodes is not None else (0 if online else cfg.run.eval_episodes)
    if not n or not result.final_checkpoint:
        return None
    if result.evaluation is not None and result.evaluation.num_episodes == n:
        return None
    return EvalConfig(checkpoint=result.final_checkpoint, num_episodes=n,
                      num_procs=getattr(cfg.run, "eval_num_procs", 1), save_video=save_video, max_videos=max_videos,
                      output_dir=output_dir)


def run(cfg, algo: str = "bc", resume_from: str | None = None, progress: bool = True, sink=None,
        evaluate: bool = True) -> TrainResult:
    """Train ``algo``; metrics go to the run's metrics.jsonl and, when given, ``sink`` (a MetricsSink).

    With ``evaluate``, the final checkpoint is evaluated here when :func:`final_evaluation` says so (the
    flows pass False and run that evaluation as their own task, with videos)."""
    spec = algorithm(algo)
    if not isinstance(cfg, spec.config_model):
        cfg = spec.config_model.model_validate(cfg)
    inputs, forced = check_inputs(cfg)
    overwrite = cfg.run.overwrite  # asks for a new training even where an identical one finished
    if resume_from is None and not overwrite and (done := runs.find_completed(algo, cfg, inputs)) is not None:
        return done
    claim = runs.claim_run_dir(algo, cfg, resume_from, overwrite)
    cfg = runs.with_run_dir(cfg, claim.path)
    try:
        result = spec.train(cfg, resume_from, progress, sink)
        if evaluate and (plan := final_evaluation(cfg, algo, result)) is not None:
            from ms2core.evaluation import evaluate_or_reuse as run_evaluation

            result.evaluation = run_evaluation(plan, progress=progress)
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
