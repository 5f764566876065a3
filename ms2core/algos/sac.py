"""SAC with twin critics, automatic entropy tuning and an (optionally n-step) replay buffer, in one file.

Read top to bottom: pure losses (unit-tested by hand), networks, the update,
and ``train_sac``. Config: ``storage_schemas.rl.SACConfig``. GAIL (``gail.py``)
reuses this loop, relabelling sampled rewards with its discriminator.

Soft Bellman target, with discount = gamma^k of the k-step transition:

    y = R + discount * (1 - terminated) * (min(Q1'(s', a'), Q2'(s', a')) - alpha * log pi(a'|s')),  a' ~ pi(.|s')

Truncated transitions keep terminated = 0 and bootstrap from their final observation.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ms2core.algos import _common as common
from ms2core.algos._checks import assert_finite_loss, assert_finite_parameters, check_env_settings, diverged_at
from ms2core.nn.actors import MLPBackbone, TanhGaussianActor, TwinQ
from ms2core.errors import ConfigError
from ms2core.metrics import MetricsSink
from storage_schemas.training import TrainResult
from ms2core.replay_buffer import ReplayBuffer, TransitionBatch
from ms2core.rollout import (
    EpisodeStats,
    EpisodeSummary,
    VectorEnv,
    evaluate_deterministic,
    vector_env_from_config,
)


# --------------------------------------------------------------------------- pure losses
def sac_critic_target(rewards: torch.Tensor, discounts: torch.Tensor, terminated: torch.Tensor,
                      next_q1: torch.Tensor, next_q2: torch.Tensor, next_log_prob: torch.Tensor,
                      alpha: torch.Tensor | float) -> torch.Tensor:
    """y = r + discount * (1 - terminated) * (min(Q1', Q2') - alpha * log pi(a'|s'))."""
    soft_value = torch.min(next_q1, next_q2) - alpha * next_log_prob
    return rewards + discounts * (1.0 - terminated) * soft_value


def sac_actor_loss(q1: torch.Tensor, q2: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """E[alpha * log pi(a|s) - min(Q1, Q2)(s, a)] with a reparameterised."""
    return (alpha * log_prob - torch.min(q1, q2)).mean()


def sac_alpha_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """-E[log_alpha * (log pi + target_entropy)]: alpha grows while the entropy is below target."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


# --------------------------------------------------------------------------- agent
@dataclass
class SACAgent:
    actor: TanhGaussianActor
    critic: TwinQ
    critic_target: TwinQ
    log_alpha: torch.Tensor
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    alpha_opt: torch.optim.Optimizer
    target_entropy: float

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().cpu(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict()}

    def load_state_dict(self, s: dict) -> None:
        self.actor.load_state_dict(s["actor"]), self.critic.load_state_dict(s["critic"])
        self.critic_target.load_state_dict(s["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(s["log_alpha"])
        self.actor_opt.load_state_dict(s["actor_opt"]), self.critic_opt.load_state_dict(s["critic_opt"])
        self.alpha_opt.load_state_dict(s["alpha_opt"])


def build_sac_actor(obs_dims: dict[str, int], action_dim: int, net_cfg,
                    backbone: nn.Module | None = None) -> TanhGaussianActor:
    actor_bb = backbone if backbone is not None else MLPBackbone(obs_dims, net_cfg.hidden_sizes, net_cfg.activation)
    return TanhGaussianActor(actor_bb, action_dim)


def build_sac_agent(obs_dims: dict[str, int], action_dim: int, net_cfg, params, device: torch.device,
                    backbone: nn.Module | None = None) -> SACAgent:
    actor = build_sac_actor(obs_dims, action_dim, net_cfg, backbone).to(device)
    critic = TwinQ(obs_dims, action_dim, net_cfg.hidden_sizes, net_cfg.activation).to(device)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    log_alpha = torch.tensor(float(np.log(params.init_alpha)), device=device, requires_grad=True)
    target_entropy = params.target_entropy if params.target_entropy is not None else -float(action_dim)
    return SACAgent(actor, critic, critic_target, log_alpha,
                    torch.optim.Adam(actor.parameters(), lr=params.actor_lr),
                    torch.optim.Adam(critic.parameters(), lr=params.critic_lr),
                    torch.optim.Adam([log_alpha], lr=params.alpha_lr), target_entropy)


def sac_update(agent: SACAgent, batch: TransitionBatch, params, update_actor: bool, step: int = 0) -> dict[str, float]:
    """One critic step (and, with ``update_actor``, one actor and alpha step); ``step`` names the update in errors."""
    alpha = agent.alpha.detach()
    with torch.no_grad():
        next_action, next_log_prob = agent.actor.sample(batch.next_obs)
        nq1, nq2 = agent.critic_target(batch.next_obs, next_action)
        target = sac_critic_target(batch.rewards, batch.discounts, batch.terminated, nq1, nq2, next_log_prob, alpha)
    q1, q2 = agent.critic(batch.obs, batch.actions)
    critic_loss = 0.5 * ((q1 - target).pow(2).mean() + (q2 - target).pow(2).mean())
    assert_finite_loss(critic_loss, f"the SAC critic loss (sac.critic_lr={params.critic_lr:g})", step)
    agent.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    agent.critic_opt.step()
    stats = {"critic_loss": critic_loss.item(), "q_mean": q1.mean().item(), "alpha": alpha.item()}
    if update_actor:
        action, log_prob = agent.actor.sample(batch.obs)
        agent.critic.requires_grad_(False)  # the actor step must not move the critics
        q1_pi, q2_pi = agent.critic(batch.obs, action)
        agent.critic.requires_grad_(True)
        actor_loss = sac_actor_loss(q1_pi, q2_pi, log_prob, alpha)
        assert_finite_loss(actor_loss, f"the SAC actor loss (sac.actor_lr={params.actor_lr:g})", step)
        agent.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        agent.actor_opt.step()
        stats.update(actor_loss=actor_loss.item(), entropy=-log_prob.mean().item())
        if params.auto_alpha:
            a_loss = sac_alpha_loss(agent.log_alpha, log_prob, agent.target_entropy)
            agent.alpha_opt.zero_grad(set_to_none=True)
            a_loss.backward()
            agent.alpha_opt.step()
    common.polyak_update(agent.critic_target, agent.critic, params.tau)
    return stats


# --------------------------------------------------------------------------- training loop
@dataclass
class SACHooks:
    """How GAIL plugs into the SAC loop (None = plain SAC)."""

    #: replaces the sampled rewards (e.g. with a discriminator reward) before the critic target
    relabel_rewards: Callable[[TransitionBatch], torch.Tensor] | None = None
    #: called after every vector env step once learning started; returns metrics to log
    after_env_step: Callable[[ReplayBuffer, int], dict[str, float]] | None = None
    #: extra state for checkpoints (get, set)
    state: tuple[Callable[[], dict], Callable[[dict], None]] | None = None


def train_sac(cfg, sink: MetricsSink | None = None, *, backbone: nn.Module | None = None) -> TrainResult:
    """Train SAC (``storage_schemas.rl.SACConfig``)."""
    return run_sac(cfg, sink, backbone=backbone)[0]


def run_sac(cfg, sink: MetricsSink | None = None, *, backbone: nn.Module | None = None,
            hooks_factory: Callable[[VectorEnv, dict, torch.device], SACHooks] | None = None,
            algo_name: str = "sac") -> tuple[TrainResult, SACAgent]:
    """The SAC loop, returning the trained agent too; GAIL passes ``hooks_factory``."""
    check_sac_config(cfg)
    if cfg.rollout.gym_env_id is None:
        check_env_settings(cfg.rollout.env, "rollout.env")  # before any worker is spawned
    params, run = cfg.sac, cfg.run
    device = common.setup_torch(run)  # seeds python, numpy, torch with run.seed
    metrics, own_sink = common.open_sink(run, sink)
    vec = vector_env_from_config(cfg.rollout, run.seed)
    try:
        obs = vec.reset()
        obs_dims = {k: int(np.prod(v.shape[1:])) for k, v in obs.items()}
        agent = build_sac_agent(obs_dims, vec.action_dim, cfg.net, params, device, backbone)
        buffer = ReplayBuffer(params.buffer_capacity, vec.num_envs, params.gamma, params.n_step, run.seed)
        obs_shapes = {k: tuple(v.shape[1:]) for k, v in obs.items()}
        hooks = hooks_factory(vec, obs_shapes, device) if hooks_factory else SACHooks()
        spec = None if backbone is not None else common.policy_spec(cfg.rollout, vec, obs_shapes)
        generator = np.random.default_rng(run.seed + 1)
        env_steps, updates, n_episodes, curve, owed_updates = 0, 0, 0, [], 0.0
        ckpt_path = common.checkpoint_path(run)
        if run.resume_from:
            state = common.load_checkpoint(run.resume_from, algo_name)
            agent.load_state_dict(state["agent"])
            buffer.load_state_dict(state["buffer"])
            env_steps, updates, n_episodes, curve = state["env_steps"], state["updates"], state["episodes"], state["curve"]
            owed_updates = state["owed_updates"]
            generator.bit_generator.state = state["generator"]
            if hooks.state is not None:
                hooks.state[1](state["hooks"])
            common.restore_rng_states(state["rng"])

        def save() -> str | None:
            if ckpt_path is None:
                return None
            with diverged_at(ckpt_path, env_steps):
                write_checkpoint()
            return str(ckpt_path)

        def write_checkpoint() -> None:
            common.save_checkpoint(ckpt_path, dict(
                algo=algo_name, config=cfg.model_dump(mode="json"), agent=agent.state_dict(),
                buffer=buffer.state_dict(), env_steps=env_steps, updates=updates, episodes=n_episodes,
                curve=curve, owed_updates=owed_updates, generator=generator.bit_generator.state,
                hooks=hooks.state[0]() if hooks.state is not None else None, policy_spec=spec))

        recent: list[EpisodeStats] = []
        stats: dict[str, float] = {}
        t0, steps_at_t0 = time.perf_counter(), env_steps
        start = (env_steps, updates, t0)
        summary = EpisodeSummary.of([])
        with common.stop_on_signals():  # SIGTERM / Ctrl-C: end after this update, with the checkpoint
            while env_steps < run.total_env_steps and not common.out_of_time(run, t0):
                if env_steps < params.learning_starts:
                    actions = generator.uniform(-1.0, 1.0, (vec.num_envs, vec.action_dim)).astype(np.float32)
                else:
                    with torch.no_grad():
                        actions = agent.actor.sample(common.obs_to_torch(obs, device))[0].cpu().numpy()
                batch = vec.step(actions)
                before = env_steps
                buffer.add_step(obs, actions, batch.rewards, batch.next_obs, batch.terminated, batch.dones)
                obs = batch.obs
                env_steps += vec.num_envs
                n_episodes += len(batch.episodes)
                recent.extend(batch.episodes)
                if env_steps >= params.learning_starts and len(buffer) >= params.batch_size:
                    if hooks.after_env_step is not None:
                        with diverged_at(ckpt_path, env_steps):
                            stats.update(hooks.after_env_step(buffer, env_steps))
                    owed_updates += params.updates_per_env_step * vec.num_envs
                    while owed_updates >= 1.0:
                        owed_updates -= 1.0
                        sample = buffer.sample(params.batch_size, device)
                        if hooks.relabel_rewards is not None:
                            sample.rewards = hooks.relabel_rewards(sample)
                        with diverged_at(ckpt_path, env_steps):
                            stats.update(sac_update(agent, sample, params, updates % params.actor_update_interval == 0,
                                                    updates))
                        updates += 1
                if common.crossed(run.log_every_steps, before, env_steps) or env_steps >= run.total_env_steps:
                    with diverged_at(ckpt_path, env_steps):
                        assert_finite_parameters({"actor": agent.actor.state_dict(),
                                                  "critic": agent.critic.state_dict(),
                                                  "log_alpha": agent.log_alpha.detach()}, updates)
                    summary = EpisodeSummary.of(recent) if recent else summary
                    fps = (env_steps - steps_at_t0) / max(time.perf_counter() - t0, 1e-9)
                    metrics.log({**stats, "mean_return": summary.mean_return, "success_rate": summary.success_rate,
                                 "episode_length": summary.mean_length, "episodes": n_episodes,
                                 "env_steps_per_s": fps, "updates": updates}, env_steps)
                    curve.append({"env_steps": env_steps, "mean_return": summary.mean_return,
                                  "success_rate": summary.success_rate})
                    recent = []
                if common.crossed(run.checkpoint_every_steps, before, env_steps):
                    save()
        checkpoint = save()
        result = common.online_result(algo_name, run, checkpoint, env_steps=env_steps, updates=updates,
                                      episodes=n_episodes, start=start, summary=summary, curve=curve)
        if run.eval_episodes and common.stopped_by_signal() is None:
            ev = evaluate_sac_actor(cfg.rollout, agent.actor, device, run.eval_episodes, run.seed + 10_000)
            result.eval_mean_return, result.eval_success_rate = common.finite(ev.mean_return), common.finite(ev.success_rate)
            metrics.log({"eval_mean_return": ev.mean_return, "eval_success_rate": ev.success_rate}, env_steps)
        return result, agent
    finally:
        vec.close()
        if own_sink:
            metrics.close()


def evaluate_sac_actor(rollout_cfg, actor: TanhGaussianActor, device: torch.device, num_episodes: int,
                       seed: int) -> EpisodeSummary:
    """Deterministic (tanh of the mean) episodes in fresh in-process envs."""

    def act(obs):
        with torch.no_grad():
            return actor.act_deterministic(common.obs_to_torch(obs, device)).cpu().numpy()

    return evaluate_deterministic(rollout_cfg, act, num_episodes, seed)


def check_sac_config(cfg) -> None:
    if cfg.net.backbone not in ("auto", "mlp"):
        raise ConfigError(f"net.backbone={cfg.net.backbone!r} is not available for {cfg.algo}: its actor and twin "
                          "critics use MLPs on the flattened observation", hint="use net.backbone=mlp (or auto)")
    if cfg.sac.batch_size > cfg.sac.buffer_capacity:
        raise ConfigError(f"sac.batch_size={cfg.sac.batch_size} exceeds sac.buffer_capacity={cfg.sac.buffer_capacity}",
                          hint="lower the batch size or enlarge the buffer")
