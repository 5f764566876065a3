"""The table of algorithms: one :class:`AlgorithmSpec` per algorithm, the only place that lists them.

The CLI (``ms2 train <algo>``), the train stage (``pipelines.train.run``), the flows and deployments
(``flows.train.TRAIN_FLOWS``, ``ms2 run train-<algo>``, prefect.yaml, checked by tests/flows/test_deployments.py)
and policy loading (``ms2core.algos.policies.load_policy``) all read :data:`ALGORITHMS`. Adding an algorithm =
its module ``ms2core/algos/<name>.py``, its config model in ``storage_schemas``, one entry here, and its
``train-<name>`` flow in flows/train.py and deployment in prefect.yaml (the tests name what is missing).

Train functions and policy loaders import their module lazily, so reading the table (the CLI) stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ms2core.errors import unknown_choice
from storage_schemas.rl import DAPGConfig, GAILConfig, PPOConfig, SACConfig
from storage_schemas.training import BCConfig, TrainResult

#: train(cfg, resume_from, progress, sink) -> TrainResult, files in the config's run directory
TrainFn = Callable[[Any, "str | None", bool, Any], TrainResult]
#: load_policy(checkpoint state in the current format, path, device) -> (policy, checkpoint view)
PolicyLoader = Callable[[dict, Any, Any], tuple[Any, dict]]


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    config_model: type[BaseModel]
    train: TrainFn
    load_policy: PolicyLoader
    needs_demos: bool             # reads a validated demo dataset (BC: dataset.paths; DAPG/GAIL: demos.path)
    online: bool                  # collects env steps; its MLflow model is the slim policy file of the checkpoint
    summary: str                  # one line, for the CLI help and the flow descriptions

    @property
    def flow_name(self) -> str:
        return f"train-{self.name}"


def _train_bc(cfg, resume_from, progress, sink) -> TrainResult:
    from ms2core.algos import bc

    return bc.train(cfg, resume_from=resume_from, progress=progress, sink=sink)


def _resuming(cfg, resume_from):
    """An online config resuming from ``resume_from`` (their loops read run.resume_from)."""
    if not resume_from:
        return cfg
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"resume_from": str(resume_from)})})


def _train_ppo(cfg, resume_from, progress, sink) -> TrainResult:
    from ms2core.algos.ppo import train_ppo

    return train_ppo(_resuming(cfg, resume_from), sink=sink)


def _train_dapg(cfg, resume_from, progress, sink) -> TrainResult:
    from ms2core.algos.dapg import train_dapg

    return train_dapg(_resuming(cfg, resume_from), sink=sink)


def _train_sac(cfg, resume_from, progress, sink) -> TrainResult:
    from ms2core.algos.sac import train_sac

    return train_sac(_resuming(cfg, resume_from), sink=sink)


def _train_gail(cfg, resume_from, progress, sink) -> TrainResult:
    from ms2core.algos.gail import train_gail

    return train_gail(_resuming(cfg, resume_from), sink=sink)


def _bc_policy(state, path, device):
    from ms2core.algos.bc import policy_from_checkpoint

    return policy_from_checkpoint(state, path, device)


def _online_policy(state, path, device):
    from ms2core.algos.policies import rl_policy_from_checkpoint

    return rl_policy_from_checkpoint(state, path, device)


ALGORITHMS: dict[str, AlgorithmSpec] = {spec.name: spec for spec in (
    AlgorithmSpec("bc", BCConfig, _train_bc, _bc_policy, needs_demos=True, online=False,
                  summary="behaviour cloning on validated Zarr datasets"),
    AlgorithmSpec("ppo", PPOConfig, _train_ppo, _online_policy, needs_demos=False, online=True,
                  summary="PPO (ManiSkill2-Learn's settings) on the task's simulator"),
    AlgorithmSpec("dapg", DAPGConfig, _train_dapg, _online_policy, needs_demos=True, online=True,
                  summary="DAPG: PPO plus a decaying behaviour-cloning term on a validated demo dataset"),
    AlgorithmSpec("sac", SACConfig, _train_sac, _online_policy, needs_demos=False, online=True,
                  summary="SAC with automatic entropy tuning"),
    AlgorithmSpec("gail", GAILConfig, _train_gail, _online_policy, needs_demos=True, online=True,
                  summary="GAIL: a discriminator reward from a validated demo dataset, optimised with SAC"),
)}


def algorithm(name: str) -> AlgorithmSpec:
    """The spec of ``name``; ConfigError listing the known algorithms otherwise."""
    if name not in ALGORITHMS:
        raise unknown_choice("algorithm", name, ALGORITHMS)
    return ALGORITHMS[name]
