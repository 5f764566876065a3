"""Model registry: ``ms2-<task>-<algo>`` with aliases ``candidate`` (every new version) and
``champion`` (moved only when the new version's evaluated success rate beats the current champion's)."""

from __future__ import annotations

from dataclasses import dataclass

CANDIDATE = "candidate"
CHAMPION = "champion"
SUCCESS_TAG = "eval_success_rate"


def registered_model_name(task: str, algo: str) -> str:
    return f"ms2-{task}-{algo}"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    success_rate: float
    champion_version: str
    champion_moved: bool

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def register_policy(model_uri: str, task: str, algo: str, success_rate: float, client=None) -> Registration:
    """Register ``model_uri`` (e.g. runs:/<id>/policy) and move the aliases."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    name = registered_model_name(task, algo)
    version = mlflow.register_model(model_uri, name).version
    client.set_model_version_tag(name, version, SUCCESS_TAG, f"{success_rate:.6f}")
    client.set_registered_model_alias(name, CANDIDATE, version)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
        champion_rate = float(champion.tags.get(SUCCESS_TAG, "-inf"))
        champion_version = champion.version
    except MlflowException:
        champion_rate, champion_version = float("-inf"), None
    moved = success_rate > champion_rate
    if moved:
        client.set_registered_model_alias(name, CHAMPION, version)
        champion_version = version
    return Registration(name, str(version), success_rate, str(champion_version), moved)


def download_checkpoint(source: str, client=None) -> str:
    """A local checkpoint file from a path (returned as is) or an MLflow URI (models:/name@alias, models:/name/3,
    runs:/<id>/policy): models are downloaded once per version to $MS2FLOW_DATA_DIR/models/<name>/<version>/."""

    if not source.startswith(("models:/", "runs:/")) and "://" not in source:
        return source
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from ms2core.errors import ConfigError
    from ms2core.paths import data_dir

    try:
        import hashlib

        dst = data_dir() / "models" / "downloads" / hashlib.sha256(source.encode()).hexdigest()[:12]
        if source.startswith("models:/"):
            client = client or MlflowClient()
            name, _, ref = source.removeprefix("models:/").partition("@")
            if ref:
                version = client.get_model_version_by_alias(name, ref).version
            else:
                name, _, version = name.partition("/")
            dst = data_dir() / "models" / name / str(version)
        if not (dst.exists() and any(dst.rglob("*.pt"))):
            dst.mkdir(parents=True, exist_ok=True)
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst))
    except MlflowException as exc:
        raise ConfigError(f"cannot find {source} in MLflow ({mlflow.get_tracking_uri()}): {exc.message}",
                          hint="train and register one with a train-<algo> flow, or pick a registered model "
                               "and alias in the MLflow UI") from exc
    found = sorted(dst.rglob("*.pt"))
    if not found:
        raise ConfigError(f"{source} holds no checkpoint (.pt)", hint="use a model registered by a train-<algo> flow")
    return str(found[0])
