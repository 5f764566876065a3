"""DAPG: PPO plus a behaviour-cloning term on demonstrations whose weight decays every update.

    loss_k = PPO loss + lambda_k * E_demo[-log pi(a_demo | s_demo)],   lambda_k = dapg_lambda * dapg_damping^k

(k = PPO update index). With ``bc_pretrain_steps`` the actor's mean is first fitted
to the demos (standardised MSE) before any env step, as in Rajeswaran et al. (2018);
ManiSkill2-Learn's DAPG skips this (the default). Early on the demos pull the policy toward the
demonstrated behaviour, which PPO then improves with the env reward; the
decay hands control over to the RL term. Demos are read from a Zarr dataset
in ms2flow's layout (``_demos.load_demo_transitions``). Config:
``storage_schemas.rl.DAPGConfig``; the PPO part is ``ppo.py`` unchanged.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from ms2core.algos._checks import assert_finite_loss
from ms2core.algos._demos import check_demo_processing, check_demo_shapes, load_demo_transitions
from ms2core.nn.actors import GaussianActor
from ms2core.nn.heads import gaussian_log_prob
from ms2core.algos.bc import action_loss_weights, perturb_state
from ms2core.algos.ppo import train_ppo
from ms2core.data import DemoBatch
from ms2core.metrics import MetricsSink
from storage_schemas.training import TrainResult
from ms2core.rollout import VectorEnv


# --------------------------------------------------------------------------- pure functions
def dapg_weight(dapg_lambda: float, dapg_damping: float, update_index: int) -> float:
    """lambda_k = dapg_lambda * dapg_damping ** k."""
    return dapg_lambda * dapg_damping**update_index


def demo_nll(actor: GaussianActor, demo_obs: dict[str, torch.Tensor], demo_actions: torch.Tensor,
             trains_std: bool = True) -> torch.Tensor:
    """Mean negative log-likelihood of the demo actions (policy units, [-1, 1]) under the Gaussian policy;
    ``trains_std=False`` holds log_std constant in it (the gradient reaches the mean only)."""
    mean, log_std = actor(demo_obs)
    return -gaussian_log_prob(demo_actions, mean, log_std if trains_std else log_std.detach()).mean()


def weighted_action_mse(mean: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """E[sum_d w_d (mean_d - a_d)^2] / A: every action dimension weighs by 1/its demo variance (bc.py's weights)."""
    return ((mean - actions).pow(2) * weights).mean()


# --------------------------------------------------------------------------- training
class DemoTerm:
    """The demos on the learner's device: the decaying NLL term of every PPO minibatch, and the optional
    behaviour-cloning pre-training of the actor's mean before the first env step (``dapg.bc_pretrain_steps``)."""

    def __init__(self, cfg, vec: VectorEnv, obs_shapes: dict[str, tuple[int, ...]], device: torch.device):
        check_demo_processing(cfg.demos.path, cfg.rollout)  # the cause of most shape mismatches: say it first
        demos = load_demo_transitions(cfg.demos.path, cfg.demos.obs_keys, cfg.demos.max_episodes,
                                      force=cfg.run.force)
        check_demo_shapes(demos, obs_shapes, cfg.demos.obs_keys, vec.action_dim, cfg.demos.path)
        self.params, self.device = cfg.dapg, device
        self.obs = {k: torch.as_tensor(v, device=device) for k, v in demos.obs.items()}
        self.actions = torch.as_tensor(vec.to_policy_action(demos.actions), device=device)
        self.rng = np.random.default_rng(cfg.run.seed + 7)

    def _sample(self, batch_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        idx = torch.as_tensor(self.rng.integers(0, len(self.actions), batch_size), device=self.device)
        return {k: v[idx] for k, v in self.obs.items()}, self.actions[idx]

    def __call__(self, actor: GaussianActor, update_index: int) -> tuple[torch.Tensor, dict[str, float]]:
        weight = dapg_weight(self.params.dapg_lambda, self.params.dapg_damping, update_index)
        obs, actions = self._sample(self.params.demo_batch_size)
        nll = demo_nll(actor, obs, actions, self.params.demo_term_trains_std)
        assert_finite_loss(nll, "the DAPG demo NLL", update_index)
        return weight * nll, {"dapg_weight": weight, "demo_nll": nll.item()}

    def pretrain(self, actor: GaussianActor) -> dict[str, float]:
        """Fit the actor's mean to the demo actions (standardised MSE, state noise as BC); log_std is untouched,
        so PPO starts from the demonstrated behaviour with its configured exploration. Its own Adam optimizer."""
        p = self.params
        if p.bc_pretrain_steps == 0:
            return {}
        weights = action_loss_weights(self.actions.std(0).cpu().numpy()).to(self.device)
        state_std = self.obs["state"].float().std(0) if "state" in self.obs else None
        params = [q for name, q in actor.named_parameters() if name != "log_std"]
        optimizer = torch.optim.Adam(params, lr=p.bc_pretrain_lr)
        losses = []
        for _ in range(p.bc_pretrain_steps):
            batch = DemoBatch(*self._sample(p.bc_pretrain_batch_size))
            if state_std is not None:
                batch = perturb_state(batch, state_std, p.bc_pretrain_state_noise)
            loss = weighted_action_mse(actor(batch.obs)[0], batch.actions, weights)
            assert_finite_loss(loss, f"the DAPG BC pre-training loss (dapg.bc_pretrain_lr={p.bc_pretrain_lr:g})",
                               len(losses) + 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        tail = losses[-max(1, len(losses) // 10):]
        return {"bc_pretrain/loss_first": losses[0], "bc_pretrain/loss_last_10pct": float(np.mean(tail)),
                "bc_pretrain/steps": float(p.bc_pretrain_steps)}


def make_demo_term(cfg):
    """Factory for ppo.train_ppo's ``extra_actor_loss_factory``: loads the demos once the env's spaces are known
    (``factory(vec, obs_shapes, device)``; a partial, so it travels to data-parallel learners)."""
    return functools.partial(DemoTerm, cfg)


def train_dapg(cfg, sink: MetricsSink | None = None, *, backbone: nn.Module | None = None) -> TrainResult:
    """Train DAPG (``storage_schemas.rl.DAPGConfig``)."""
    return train_ppo(cfg, sink, backbone=backbone, extra_actor_loss_factory=make_demo_term(cfg), algo_name="dapg")
