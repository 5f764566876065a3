"""DAPG: PPO plus a behaviour-cloning term on demonstrations whose weight decays every update.

    loss_k = PPO loss + lambda_k * E_demo[-log pi(a_demo | s_demo)],   lambda_k = dapg_lambda * dapg_damping^k

(k = PPO update index). Early on the demos pull the policy toward the
demonstrated behaviour, which PPO then improves with the env reward; the
decay hands control over to the RL term. Demos are read from a Zarr dataset
in ms2flow's layout (``_demos.load_demo_transitions``). Config:
``storage_schemas.rl.DAPGConfig``; the PPO part is ``ppo.py`` unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ms2core.algos import _common as common
from ms2core.algos._demos import check_demo_processing, check_demo_shapes, load_demo_transitions
from ms2core.algos._nets import GaussianActor, gaussian_log_prob
from ms2core.algos.ppo import ExtraActorLoss, train_ppo
from ms2core.metrics import MetricsSink
from ms2core.rollout import VectorEnv


# --------------------------------------------------------------------------- pure functions
def dapg_weight(dapg_lambda: float, dapg_damping: float, update_index: int) -> float:
    """lambda_k = dapg_lambda * dapg_damping ** k."""
    return dapg_lambda * dapg_damping**update_index


def demo_nll(actor: GaussianActor, demo_obs: dict[str, torch.Tensor], demo_actions: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the demo actions (policy units, [-1, 1]) under the Gaussian policy."""
    mean, log_std = actor(demo_obs)
    return -gaussian_log_prob(demo_actions, mean, log_std).mean()


# --------------------------------------------------------------------------- training
def make_demo_term(cfg):
    """Factory for ppo.train_ppo's ``extra_actor_loss_factory``: loads the demos once the env's spaces are known."""

    def factory(vec: VectorEnv, obs_shapes: dict[str, tuple[int, ...]], device: torch.device) -> ExtraActorLoss:
        check_demo_processing(cfg.demos.path, cfg.rollout)  # the cause of most shape mismatches: say it first
        demos = load_demo_transitions(cfg.demos.path, cfg.demos.obs_keys, cfg.demos.max_episodes)
        check_demo_shapes(demos, obs_shapes, cfg.demos.obs_keys, vec.action_dim, cfg.demos.path)
        obs = {k: torch.as_tensor(v, device=device) for k, v in demos.obs.items()}
        actions = torch.as_tensor(vec.to_policy_action(demos.actions), device=device)
        rng = np.random.default_rng(cfg.run.seed + 7)

        def demo_term(actor: GaussianActor, update_index: int):
            weight = dapg_weight(cfg.dapg.dapg_lambda, cfg.dapg.dapg_damping, update_index)
            idx = torch.as_tensor(rng.integers(0, len(actions), cfg.dapg.demo_batch_size), device=device)
            nll = demo_nll(actor, {k: v[idx] for k, v in obs.items()}, actions[idx])
            return weight * nll, {"dapg_weight": weight, "demo_nll": nll.item()}

        return demo_term

    return factory


def train_dapg(cfg, sink: MetricsSink | None = None, *, backbone: nn.Module | None = None) -> common.TrainResult:
    """Train DAPG (``storage_schemas.rl.DAPGConfig``)."""
    return train_ppo(cfg, sink, backbone=backbone, extra_actor_loss_factory=make_demo_term(cfg), algo_name="dapg")
