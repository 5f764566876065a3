"""GAIL: a discriminator D(s, a) tells demo pairs from agent pairs; its reward drives SAC.

    D = sigmoid(logit(s, a)),   trained with  -E_demo[log D] - E_agent[log(1 - D)]
    reward(s, a) = -log(1 - D(s, a)) = softplus(logit(s, a))     (> 0, larger for demo-like pairs)

Agent pairs are sampled from SAC's replay buffer, demo pairs from a Zarr
dataset (``_demos.load_demo_transitions``); sampled replay rewards are
relabelled with the current discriminator before every SAC critic target, so
stale rewards never enter the buffer. Config: ``storage_schemas.rl.GAILConfig``;
the policy learner is ``sac.py`` unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ms2core.algos._checks import assert_finite_loss
from ms2core.algos._demos import check_demo_processing, check_demo_shapes, load_demo_transitions
from ms2core.nn.actors import Discriminator
from ms2core.algos.sac import SACHooks, run_sac
from ms2core.errors import ConfigError
from ms2core.metrics import MetricsSink
from storage_schemas.training import TrainResult
from ms2core.replay_buffer import ReplayBuffer, TransitionBatch
from ms2core.rollout import VectorEnv


# --------------------------------------------------------------------------- pure functions
def gail_reward(logits: torch.Tensor) -> torch.Tensor:
    """-log(1 - sigmoid(logit)) computed as softplus(logit): positive, increasing in D."""
    return F.softplus(logits)


def discriminator_loss(demo_logits: torch.Tensor, agent_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with demo pairs labelled 1 and agent pairs labelled 0."""
    return (F.binary_cross_entropy_with_logits(demo_logits, torch.ones_like(demo_logits))
            + F.binary_cross_entropy_with_logits(agent_logits, torch.zeros_like(agent_logits)))


def gradient_penalty(disc: Discriminator, obs: dict[str, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
    """E||grad_{(s,a)} logit||^2 on demo inputs (zero-centred, keeps D smooth so its reward stays informative)."""
    obs = {k: v.float().requires_grad_(True) for k, v in obs.items()}
    actions = actions.clone().requires_grad_(True)
    grads = torch.autograd.grad(disc(obs, actions).sum(), [*obs.values(), actions], create_graph=True)
    return sum(g.flatten(1).pow(2).sum(1) for g in grads).mean()


# --------------------------------------------------------------------------- training
def make_gail_hooks(cfg):
    """Factory for sac.run_sac's ``hooks_factory``: builds D and the demo sampler once the env is known."""

    def factory(vec: VectorEnv, obs_shapes: dict[str, tuple[int, ...]], device: torch.device) -> SACHooks:
        check_demo_processing(cfg.demos.path, cfg.rollout)  # the cause of most shape mismatches: say it first
        demos = load_demo_transitions(cfg.demos.path, cfg.demos.obs_keys, cfg.demos.max_episodes,
                                      force=cfg.run.force)
        check_demo_shapes(demos, obs_shapes, cfg.demos.obs_keys, vec.action_dim, cfg.demos.path)
        obs_dims = {k: int(np.prod(demos.obs[k].shape[1:])) for k in cfg.demos.obs_keys}
        demo_obs = {k: torch.as_tensor(v, device=device) for k, v in demos.obs.items()}
        demo_actions = torch.as_tensor(vec.to_policy_action(demos.actions), device=device)
        disc = Discriminator(obs_dims, vec.action_dim, cfg.gail.discriminator_hidden_sizes, cfg.net.activation).to(device)
        opt = torch.optim.Adam(disc.parameters(), lr=cfg.gail.discriminator_lr)
        rng = np.random.default_rng(cfg.run.seed + 11)
        owed = [0.0]
        batch_size = cfg.gail.discriminator_batch_size

        def train_discriminator(buffer: ReplayBuffer, env_steps: int) -> dict[str, float]:
            owed[0] += cfg.gail.discriminator_updates_per_env_step * vec.num_envs
            stats: dict[str, float] = {}
            while owed[0] >= 1.0:
                owed[0] -= 1.0
                agent = buffer.sample(batch_size, device)
                idx = torch.as_tensor(rng.integers(0, len(demo_actions), batch_size), device=device)
                d_obs = {k: v[idx] for k, v in demo_obs.items()}
                demo_logits = disc(d_obs, demo_actions[idx])
                agent_logits = disc({k: agent.obs[k] for k in obs_dims}, agent.actions)
                loss = discriminator_loss(demo_logits, agent_logits)
                if cfg.gail.gradient_penalty > 0:
                    loss = loss + cfg.gail.gradient_penalty * gradient_penalty(disc, d_obs, demo_actions[idx])
                assert_finite_loss(loss, f"the GAIL discriminator loss (gail.discriminator_lr="
                                   f"{cfg.gail.discriminator_lr:g})", env_steps)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                stats = {"disc_loss": loss.item(), "disc_demo_prob": torch.sigmoid(demo_logits).mean().item(),
                         "disc_agent_prob": torch.sigmoid(agent_logits).mean().item()}
            return stats

        def relabel(batch: TransitionBatch) -> torch.Tensor:
            with torch.no_grad():
                reward = gail_reward(disc({k: batch.obs[k] for k in obs_dims}, batch.actions))
            return reward + cfg.gail.env_reward_weight * batch.rewards

        def get_state() -> dict:
            return {"disc": disc.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state, "owed": owed[0]}

        def set_state(s: dict) -> None:
            disc.load_state_dict(s["disc"]), opt.load_state_dict(s["opt"])
            rng.bit_generator.state, owed[0] = s["rng"], s["owed"]

        return SACHooks(relabel_rewards=relabel, after_env_step=train_discriminator, state=(get_state, set_state))

    return factory


def train_gail(cfg, sink: MetricsSink | None = None, *, backbone: nn.Module | None = None) -> TrainResult:
    """Train GAIL with SAC (``storage_schemas.rl.GAILConfig``)."""
    if cfg.sac.n_step != 1:
        raise ConfigError(f"gail needs sac.n_step=1, got {cfg.sac.n_step}",
                          hint="n-step returns would sum stale discriminator rewards; set sac.n_step=1")
    return run_sac(cfg, sink, backbone=backbone, hooks_factory=make_gail_hooks(cfg), algo_name="gail")[0]
