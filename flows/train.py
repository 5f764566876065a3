"""Training flows: train -> evaluate -> register, one flow per algorithm.

Input validation is decided in one place, ``pipelines.train.run`` (it refuses datasets that failed,
were never validated, changed since or are incomplete); a flow's ``force=True`` sets the config's
force field, so it is recorded in the MLflow params and in train_result.json.

Every flow run is one MLflow run in the task's experiment: params = the resolved
config, metrics streamed in batches during training, artifacts = checkpoint,
config, evaluation JSON and videos, the policy as a pyfunc model registered as
``ms2-<task>-<algo>``.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows import defaults, stages
from flows.registry import register_policy
from flows.settings import mlflow_tracking_uri
from flows.tracking import MlflowSink, tracked_run
from ms2core.algos import task_of
from ms2core.algos.runs import run_label
from ms2core.algos.table import algorithm
from storage_schemas.rl import DAPGConfig, GAILConfig, PPOConfig, SACConfig
from storage_schemas.training import BCConfig, EvalConfig, EvaluationResult, TrainResult


@task(name="train", retries=0)
def train_policy(cfg, algo: str, resume_from: str | None, run_id: str | None) -> TrainResult:
    # No retries: a crashed run is resumed from its last checkpoint with resume_from, not restarted.
    # evaluate=False: the flow runs the final evaluation as its own task (pipelines.train.final_evaluation decides).
    from ms2core.metrics import NullSink
    from pipelines import train

    sink = MlflowSink(run_id, background=True) if run_id else NullSink()
    try:
        return train.run(cfg, algo=algo, resume_from=resume_from, progress=False, sink=sink, evaluate=False)
    finally:
        sink.close()


@task(name="evaluate", retries=1, retry_delay_seconds=5, retry_condition_fn=stages._transient)
def evaluate_policy(cfg: EvalConfig) -> EvaluationResult:
    from pipelines import evaluate

    result = evaluate.run(cfg, progress=False)
    create_table_artifact(key="evaluation", table=[
        dict(metric=name, mean=round(stat.mean, 4), ci95_low=round(stat.ci95_low, 4), ci95_high=round(stat.ci95_high, 4))
        for name, stat in (("success_once", result.success_once), ("success_at_end", result.success_at_end),
                           ("episode_return", result.episode_return), ("episode_length", result.episode_length))
    ], description=f"{result.num_episodes} episodes of {result.env_id} from {result.checkpoint}")
    return result


def _prepared(config, task: str | None, force: bool):
    """The config with the flow's task (BC: env.env_id; online RL: rollout.env.env_id) and force (run.force,
    so the run records it) applied."""
    if task and hasattr(config, "rollout"):
        env = config.rollout.env.model_copy(update={"env_id": task})
        config = config.model_copy(update={"rollout": config.rollout.model_copy(update={"env": env})})
    elif task:
        config = config.model_copy(update={"env": config.env.model_copy(update={"env_id": task})})
    if force:
        config = config.model_copy(update={"run": config.run.model_copy(update={"force": True})})
    return config


def _log_training(result: TrainResult) -> None:
    """Tags, run files, checkpoint and rate of a finished training in the active MLflow run."""
    import mlflow

    run_dir = Path(result.run_dir)
    mlflow.set_tags({"run_dir": str(run_dir), "skipped": str(result.skipped)})
    if result.forced_inputs:
        get_run_logger().warning("force=True: trained on inputs that did not pass validation: %s",
                                 result.forced_inputs)
        mlflow.set_tag("forced_inputs", "; ".join(result.forced_inputs)[:5000])
    for name in ("config.yaml", "resolved_config.json", "metrics.jsonl", "train_result.json"):
        if (run_dir / name).exists():
            mlflow.log_artifact(str(run_dir / name))
    mlflow.log_artifact(result.final_checkpoint, "checkpoint")
    mlflow.log_metric("train/updates_per_s", result.updates_per_s)


def _log_evaluation(result: EvaluationResult, eval_dir: Path) -> None:
    import mlflow

    mlflow.log_metrics({
        "eval/success_rate": result.success_once.mean, "eval/success_at_end": result.success_at_end.mean,
        "eval/return": result.episode_return.mean, "eval/episode_length": result.episode_length.mean,
    })
    mlflow.log_dict(result.model_dump(mode="json"), "eval/results.json")
    for video in sorted(eval_dir.glob("**/*.mp4"))[:20]:
        mlflow.log_artifact(str(video), "eval/videos")


#: episodes of a flow's final evaluation recorded as MP4 (MLflow artifacts, the dashboard).
FLOW_EVAL_VIDEOS = 4


def _evaluated_success(config, algo: str, result: TrainResult, eval_episodes: int | None) -> float | None:
    """Runs the final evaluation pipelines.train.final_evaluation asks for (with videos), logs it, and returns
    the success rate (or the online algorithm's own end-of-training evaluation)."""
    import mlflow

    from pipelines.train import final_evaluation

    eval_dir = Path(result.run_dir) / "eval"
    # Videos of the first few episodes only: on a CPU each episode's video costs ~15 s of rendering.
    plan = final_evaluation(config, algo, result, eval_episodes, save_video=True, max_videos=FLOW_EVAL_VIDEOS,
                            output_dir=str(eval_dir))
    evaluation = evaluate_policy(plan) if plan is not None else result.evaluation
    if evaluation is not None:
        _log_evaluation(evaluation, eval_dir)
        return evaluation.success_once.mean
    if result.eval_success_rate is not None:  # online RL evaluates itself at the end of training
        mlflow.log_metrics({"eval/success_rate": result.eval_success_rate, "eval/return": result.eval_mean_return or 0.0})
    return result.eval_success_rate


def _register(algo: str, env_id: str, result: TrainResult, success_rate: float | None) -> dict:
    """The policy as a pyfunc model (online RL: the slim policy file of its checkpoint), registered."""
    from flows.policy_model import log_policy_model

    model_file = result.final_checkpoint
    if algorithm(algo).online:
        from ms2core.algos.policies import write_policy_file

        model_file = str(write_policy_file(result.final_checkpoint, Path(result.run_dir) / "policy.pt"))
    reg = register_policy(log_policy_model(model_file).model_uri, env_id, algo, success_rate or 0.0)
    get_run_logger().info("registered %s version %s (champion: %s)", reg.name, reg.version, reg.champion_version)
    return dict(model_name=reg.name, model_version=reg.version, champion_version=reg.champion_version,
                champion_moved=reg.champion_moved)


def _link_mlflow_run(run, env_id: str) -> None:
    uri = mlflow_tracking_uri()
    run_id = run.info.run_id
    if uri.startswith("http"):
        create_link_artifact(key="mlflow-run", link=f"{uri}/#/experiments/{run.info.experiment_id}/runs/{run_id}",
                             description="the MLflow run of this training")
    else:
        create_markdown_artifact(key="mlflow-run", markdown=(
            f"MLflow run `{run_id}` in experiment **{env_id}** (store `{uri}`); browse with "
            f"`mlflow ui --backend-store-uri {uri}`"))


def train_evaluate_register(algo: str, config, task: str | None = None, resume_from: str | None = None,
                            eval_episodes: int | None = None, register_model: bool = True, force: bool = False) -> dict:
    """The body of every train-<algo> flow: one MLflow run holding the training, its evaluation and the model."""
    config = _prepared(config, task, force)
    env_id = task_of(config)
    with tracked_run(env_id, f"{algo}-{run_label(config)}", config.model_dump(mode="json"),
                     tags={"algo": algo, "task": env_id}) as run:
        result = train_policy(config, algo, resume_from, run.info.run_id)
        _log_training(result)
        summary = dict(run_id=run.info.run_id, run_dir=result.run_dir, checkpoint=result.final_checkpoint,
                       final_loss=result.final_loss, model_version=None,
                       success_rate=_evaluated_success(config, algo, result, eval_episodes))
        if register_model:
            summary.update(_register(algo, env_id, result, summary["success_rate"]))
    _link_mlflow_run(run, env_id)
    return summary


# Every parameter has a default, so each deployment runs with none: flows.defaults resolves the task's config
# file (configs/<algo>/<task>_state.yaml), merges a partial ``config`` dict and dotted ``overrides`` over it
# and finds (or builds) the validated dataset it reads. The budget is the config file's. ``dict`` comes first
# in ``config``'s type: pydantic would otherwise turn a partial dict into a full config of defaults.

@flow(name="train-bc", log_prints=True)
def train_bc(config: dict | BCConfig | None = None, task: str | None = None, config_file: str | None = None,
             overrides: list[str] | None = None, resume_from: str | None = None, eval_episodes: int | None = None,
             register_model: bool = True, force: bool = False) -> dict:
    """Behaviour cloning on validated Zarr datasets, evaluated and registered.

    Defaults: configs/bc/pickcube_state.yaml (30k updates, 100 evaluation episodes) on the newest validated
    state dataset of the task (else one built from 100 demos)."""
    cfg = defaults.train_config("bc", BCConfig, config, task, config_file, overrides)
    return train_evaluate_register("bc", cfg, None, resume_from, eval_episodes, register_model, force)


@flow(name="evaluate", log_prints=True)
def evaluate(config: dict | EvalConfig | None = None, model: str | None = None, task: str | None = None,
             algo: str = "bc", overrides: list[str] | None = None) -> EvaluationResult:
    """Evaluate a checkpoint, or a registered model: ``model=models:/ms2-PickCube-v0-bc@champion`` (default:
    the champion of ms2-<task>-<algo>), downloaded from MLflow. Default budget: EvalConfig's 100 episodes."""
    return evaluate_policy(defaults.eval_config(config, model, task, algo, overrides))


@flow(name="train-ppo", log_prints=True)
def train_ppo(config: dict | PPOConfig | None = None, task: str | None = None, config_file: str | None = None,
              overrides: list[str] | None = None, resume_from: str | None = None, register_model: bool = True,
              force: bool = False) -> dict:
    """PPO (ManiSkill2-Learn's settings) on the task's simulator, tracked in MLflow.

    Defaults: configs/ppo/pickcube_state.yaml (5M env steps)."""
    cfg = defaults.train_config("ppo", PPOConfig, config, task, config_file, overrides)
    return train_evaluate_register("ppo", cfg, None, resume_from, None, register_model, force)


@flow(name="train-dapg", log_prints=True)
def train_dapg(config: dict | DAPGConfig | None = None, task: str | None = None, config_file: str | None = None,
               overrides: list[str] | None = None, resume_from: str | None = None, register_model: bool = True,
               force: bool = False) -> dict:
    """DAPG: PPO plus a decaying behaviour-cloning term on a validated demo dataset.

    Defaults: configs/dapg/pickcube_state.yaml (20k BC pre-training steps, 5M env steps) on the newest
    validated state dataset of the task (else one built from 100 demos)."""
    cfg = defaults.train_config("dapg", DAPGConfig, config, task, config_file, overrides)
    return train_evaluate_register("dapg", cfg, None, resume_from, None, register_model, force)


@flow(name="train-sac", log_prints=True)
def train_sac(config: dict | SACConfig | None = None, task: str | None = None, config_file: str | None = None,
              overrides: list[str] | None = None, resume_from: str | None = None, register_model: bool = True,
              force: bool = False) -> dict:
    """SAC with automatic entropy tuning. Defaults: configs/sac/pickcube_state.yaml (2M env steps)."""
    cfg = defaults.train_config("sac", SACConfig, config, task, config_file, overrides)
    return train_evaluate_register("sac", cfg, None, resume_from, None, register_model, force)


@flow(name="train-gail", log_prints=True)
def train_gail(config: dict | GAILConfig | None = None, task: str | None = None, config_file: str | None = None,
               overrides: list[str] | None = None, resume_from: str | None = None, register_model: bool = True,
               force: bool = False) -> dict:
    """GAIL: a discriminator reward from a validated demo dataset, optimised with SAC.

    Defaults: configs/gail/pickcube_state.yaml (2M env steps) on the newest validated state dataset of the
    task (else one built from 100 demos)."""
    cfg = defaults.train_config("gail", GAILConfig, config, task, config_file, overrides)
    return train_evaluate_register("gail", cfg, None, resume_from, None, register_model, force)


#: flow per algorithm of ms2core.algos.table.ALGORITHMS (tests/flows/test_deployments.py checks they match),
#: for deployments and the CLI.
TRAIN_FLOWS = {"bc": train_bc, "ppo": train_ppo, "dapg": train_dapg, "sac": train_sac, "gail": train_gail}
