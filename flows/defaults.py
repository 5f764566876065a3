"""What a deployment does when it is run with no parameters (or only ``task=...``): the flow bodies call this.

    prefect deployment run train-dapg/default                           # PickCube-v0, configs/dapg/pickcube_state.yaml
    prefect deployment run train-bc/default --param task=LiftCube-v0    # the PickCube config, task substituted
    prefect deployment run train-bc/default --param overrides='["train.num_steps=2000"]'
    prefect deployment run evaluate/default --param model=models:/ms2-PickCube-v0-bc@champion

A training config is, in order: the task's config file (``configs/<algo>/<task>_<obs>.yaml``; where there is
none, ``configs/<algo>/pickcube_<obs>.yaml`` with the task substituted), the flow's ``config`` (a full config,
or a partial dict merged over the file), ``task``, then ``overrides`` (dotted ``--set`` strings). Its budget is
the file's (stated in each flow's docstring). A dataset the config reads (BC ``dataset.paths``, DAPG/GAIL
``demos.path``) that was not given explicitly is the newest validated dataset of the task whose control mode and
observation options match; where there is none, ``demo-to-dataset`` builds one (a subflow; its stages are cached).

``MS2FLOW_DEFAULTS_SET`` (JSON: flow name -> list of dotted overrides, applied before the caller's) resizes
every default at once, e.g. the tests' fake env and tiny budgets:
``{"train-bc": ["env.backend=fake", "train.num_steps=5"], "demo-to-dataset": ["backend=fake"]}``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ms2core.errors import ConfigError

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_TASK = "PickCube-v0"
TEMPLATE_TASK = "pickcube"
#: demos generated when no matching dataset exists (then converted, rendered, validated); the default budget
DEFAULT_NUM_DEMOS = 100
ENV_OVERRIDES = "MS2FLOW_DEFAULTS_SET"


def task_slug(task: str) -> str:
    """PickCube-v0 -> pickcube, TurnFaucet-v0 -> turnfaucet (the configs/ file naming)."""
    return re.sub(r"[^a-z0-9]", "", re.sub(r"-v\d+$", "", task).lower())


def config_file(algo: str, task: str, obs: str = "state", configs_dir: Path = CONFIGS_DIR) -> tuple[Path, bool]:
    """(the config file for ``algo`` on ``task``, whether it is the PickCube template with the task substituted)."""
    own = configs_dir / algo / f"{task_slug(task)}_{obs}.yaml"
    if own.exists():
        return own, False
    template = configs_dir / algo / f"{TEMPLATE_TASK}_{obs}.yaml"
    if template.exists():
        return template, True
    have = sorted(p.name for p in (configs_dir / algo).glob("*.yaml")) if (configs_dir / algo).exists() else []
    raise ConfigError(f"no default config for {algo} on {task}: neither {own} nor {template} exists",
                      hint=f"pass config_file= one of {', '.join(have) or '(none)'} or a full config")


def env_overrides(flow_name: str) -> list[str]:
    raw = os.environ.get(ENV_OVERRIDES, "").strip()
    if not raw:
        return []
    try:
        table = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{ENV_OVERRIDES} is not JSON: {exc}", hint='e.g. {"train-bc": ["train.num_steps=5"]}') from exc
    items = table.get(flow_name, []) if isinstance(table, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{ENV_OVERRIDES}[{flow_name!r}] must be a list of 'key.sub=value' strings, got {items!r}")
    return items


def deep_merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for key, value in patch.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _flatten(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        keys += _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"]
    return keys


def build_config(model: type[BaseModel], flow_name: str, base_file: Path | None, config: Any,
                 overrides: list[str] | None, substitute: dict[str, str] | None = None) -> tuple[BaseModel, set[str]]:
    """(validated config, the dotted keys the caller gave explicitly) from file <- config <- substitute <- overrides.

    A full ``model`` instance as ``config`` is used as it is (only ``substitute`` and ``overrides`` apply, not
    MS2FLOW_DEFAULTS_SET)."""
    import yaml

    from ms2core.config import _format_validation_error, apply_overrides

    sized = env_overrides(flow_name)
    if isinstance(config, BaseModel):  # a full config: the caller decided everything, defaults do not apply
        data, explicit, sized = config.model_dump(mode="json"), set(_flatten(config.model_dump(mode="json"))), []
    else:
        data = (yaml.safe_load(base_file.read_text()) or {}) if base_file is not None else {}
        data = deep_merge(data, config or {})
        explicit = set(_flatten(config or {}))
    user = list(overrides or [])
    explicit |= {item.split("=", 1)[0].strip() for item in user}
    subs = [f"{k}={v}" for k, v in (substitute or {}).items()]
    data = apply_overrides(data, subs + sized + user, model)
    try:
        return model.model_validate(data), explicit
    except ValidationError as exc:
        source = str(base_file) if base_file is not None else "(the flow's config parameter)"
        raise _format_validation_error(exc, source, model, user) from exc


def _given(explicit: set[str], key: str) -> bool:
    return any(k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in explicit)
# --------------------------------------------------------------------------- datasets
def _obs_matches(theirs, wanted) -> bool:
    """State datasets differ only in layout; image/point datasets must have been processed the same way."""
    if theirs.obs_mode != wanted.obs_mode or theirs.obs_layout != wanted.obs_layout:
        return False
    return wanted.obs_mode == "state" or theirs == wanted


def find_dataset(task: str, control_mode: str, obs, backend: str, root: Path | None = None) -> str | None:
    """The newest validated (passed, unchanged, complete) local dataset of ``task`` in ``control_mode``
    rendered with observation options ``obs`` on ``backend``; None when there is none."""
    from ms2core.paths import datasets_dir
    from ms2core.validation.store import open_root, validation_problem
    from ms2core.zarr_io import read_manifest

    root = root or datasets_dir(task)
    found = []
    for store in root.glob("*.zarr") if root.exists() else []:
        try:
            manifest = read_manifest(open_root(str(store)))
        except Exception:  # noqa: BLE001 - an unreadable store is simply not a candidate
            continue
        if (manifest is None or manifest.source.env_id != task or manifest.source.control_mode != control_mode
                or manifest.options.backend != backend or not _obs_matches(manifest.options.obs, obs)):
            continue
        if validation_problem(str(store))[1] is None:
            found.append(((store / "zarr.json").stat().st_mtime, str(store)))
    return max(found)[1] if found else None


def dataset_for(task: str, control_mode: str, obs, backend: str) -> str:
    """find_dataset, or build one with the demo-to-dataset flow (a subflow: called from a flow)."""
    found = find_dataset(task, control_mode, obs, backend)
    if found:
        log.info("default dataset of %s (%s, %s obs): %s", task, control_mode, obs.obs_mode, found)
        return found
    from flows.data import demo_to_dataset
    from storage_schemas.dataset import RenderOptions
    from storage_schemas.flows import DemoToDatasetConfig

    build = dict(env_id=task, num_episodes=DEFAULT_NUM_DEMOS, target_control_mode=control_mode,
                 render=RenderOptions(obs=obs).model_dump(mode="json"), backend=backend)
    cfg, _ = build_config(DemoToDatasetConfig, "demo-to-dataset", None, build, None)
    log.info("no validated %s dataset of %s in %s: building one with demo-to-dataset (%d demos)",
             obs.obs_mode, task, control_mode, cfg.num_episodes)
    return demo_to_dataset(cfg).store


# --------------------------------------------------------------------------- per flow
def _env_key(model: type[BaseModel]) -> str:
    return "rollout.env" if "rollout" in model.model_fields else "env"


def _task_of(config: Any, env_key: str) -> str | None:
    node = config.model_dump(mode="json") if isinstance(config, BaseModel) else (config or {})
    for part in env_key.split(".") + ["env_id"]:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def train_config(algo: str, model: type[BaseModel], config: Any = None, task: str | None = None,
                 config_file_name: str | None = None, overrides: list[str] | None = None) -> BaseModel:
    """The config a train-<algo> flow runs: see the module docstring."""
    env_key = _env_key(model)
    task = task or _task_of(config, env_key) or DEFAULT_TASK
    base = None
    if not isinstance(config, BaseModel):
        if config_file_name:
            base = Path(config_file_name)
            base = base if base.is_absolute() or base.exists() else CONFIGS_DIR / algo / base
            if not base.exists():
                raise ConfigError(f"config_file {config_file_name} does not exist (nor under {CONFIGS_DIR / algo})",
                                  hint=f"one of: {', '.join(sorted(p.name for p in (CONFIGS_DIR / algo).glob('*.yaml')))}")
        else:
            base, templated = config_file(algo, task)
            if templated:
                log.info("no %s config for %s: using %s with the task substituted", algo, task, base.name)
    cfg, explicit = build_config(model, f"train-{algo}", base, config, overrides, {f"{env_key}.env_id": task})
    return _with_default_datasets(cfg, explicit, env_key)


def _with_default_datasets(cfg: BaseModel, explicit: set[str], env_key: str) -> BaseModel:
    from storage_schemas.dataset import ObsProcessConfig

    env = cfg.rollout.env if env_key == "rollout.env" else cfg.env
    obs = getattr(getattr(cfg, "rollout", None), "obs", None) or ObsProcessConfig(obs_mode=env.obs_mode)
    if hasattr(cfg, "dataset") and not _given(explicit, "dataset.paths") and not _all_exist(cfg.dataset.paths):
        store = dataset_for(env.env_id, env.control_mode, obs, env.backend)
        cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"paths": [store]})})
    demos = getattr(cfg, "demos", None)
    if demos is not None and not _given(explicit, "demos.path") and not _all_exist([demos.path]):
        store = dataset_for(env.env_id, env.control_mode, obs, env.backend)
        cfg = cfg.model_copy(update={"demos": demos.model_copy(update={"path": store})})
    return cfg


def _all_exist(paths: list[str]) -> bool:
    return bool(paths) and all("://" in p or Path(p).exists() for p in paths)


def dataset_flow_config(config: Any = None, task: str | None = None, overrides: list[str] | None = None):
    """The config a demo-to-dataset run uses: DemoToDatasetConfig's defaults <- config <- task <- overrides."""
    from storage_schemas.flows import DemoToDatasetConfig

    subs = {"env_id": task} if task else {}
    return build_config(DemoToDatasetConfig, "demo-to-dataset", None, config, overrides, subs)[0]


def champion_uri(task: str, algo: str = "bc") -> str:
    from flows.registry import CHAMPION, registered_model_name

    return f"models:/{registered_model_name(task, algo)}@{CHAMPION}"


def eval_config(config: Any = None, model: str | None = None, task: str | None = None, algo: str = "bc",
                overrides: list[str] | None = None):
    """The config an evaluate run uses: a checkpoint given in ``config``, else ``model`` (an MLflow model URI,
    default the champion of ms2-<task>-<algo>) downloaded from the MLflow registry."""
    from flows.registry import download_checkpoint
    from storage_schemas.training import EvalConfig

    cfg, _ = build_config(EvalConfig, "evaluate", None, config, overrides)
    source = model or cfg.checkpoint or champion_uri(task or DEFAULT_TASK, algo)
    return cfg.model_copy(update={"checkpoint": download_checkpoint(source)})
