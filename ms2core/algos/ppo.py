"""PPO (clipped surrogate, GAE) as in ManiSkill2-Learn's point-cloud config, in one file.

Read top to bottom: the pure losses (unit-tested with hand-computed numbers),
the networks, rollout collection into a :class:`Rollout`, the update, and the
``train_ppo`` loop. The config is ``storage_schemas.rl.PPOConfig``.

ManiSkill2-Learn's choices kept here: GAE with gamma = lambda = 0.95, ratio
clip 0.2, an early stop of the epoch loop once the approximate KL between the
old and new policy exceeds ``1.5 * max_kl`` (ManiSkill2-Learn's
``maniskill2_learn/methods/mfrl/ppo.py``: the minibatch that crosses it is not
applied, and no further epoch runs on this rollout), reward normalisation by the running std
of discounted returns, per-minibatch advantage normalisation, critic warm-up
epochs (the first update trains the critic alone for ``critic_warmup_epochs``
epochs so the first advantages are not noise; ``actor_freeze_updates`` keeps the
actor still for whole updates, for a pre-trained actor), and shared or separate
backbones. DAPG (``dapg.py``) reuses this loop with an extra demo term.
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
from ms2core.algos import distributed
from ms2core.algos._checks import assert_finite_loss, assert_finite_parameters, check_env_settings, diverged_at
from ms2core.nn.actors import GaussianActor, ValueCritic, make_backbone, resolve_backbone_kind
from ms2core.nn.heads import gaussian_entropy, gaussian_log_prob
from ms2core.algos.returns import ReturnNormalizer, compute_gae
from ms2core.metrics import MetricsSink
from storage_schemas.training import TrainResult
from ms2core.nn.frameminer import MixActionActor, resolve_frames
from ms2core.rollout import (
    EpisodeStats,
    EpisodeSummary,
    VectorEnv,
    evaluate_deterministic,
    vector_env_from_config,
)


# --------------------------------------------------------------------------- pure losses
@dataclass
class PolicyLossOut:
    loss: torch.Tensor
    approx_kl: torch.Tensor   # E[(r - 1) - log r], r = pi_new / pi_old (non-negative, low variance)
    clip_fraction: torch.Tensor


def ppo_policy_loss(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                    clip_ratio: float) -> PolicyLossOut:
    """-E[min(r A, clip(r, 1-eps, 1+eps) A)] with r = exp(new_log_prob - old_log_prob)."""
    log_ratio = new_log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio) * advantages)
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > clip_ratio).float().mean()
    return PolicyLossOut(-surrogate.mean(), approx_kl, clip_fraction)


def value_loss(values: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor | None = None,
               value_clip: float | None = None) -> torch.Tensor:
    """0.5 E[(V - R)^2]; with ``value_clip`` the pessimistic max with the clipped-update error."""
    err = (values - returns).pow(2)
    if value_clip is not None and old_values is not None:
        clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
        err = torch.max(err, (clipped - returns).pow(2))
    return 0.5 * err.mean()


def normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return (x - x.mean()) / (x.std(unbiased=False) + eps) if x.numel() > 1 else x - x.mean()


# --------------------------------------------------------------------------- networks
def build_actor_critic(obs_shapes: dict[str, int | tuple[int, ...]], action_dim: int, net_cfg,
                       backbone: nn.Module | None = None, frames=None) -> tuple[nn.Module, ValueCritic]:
    """Gaussian actor + value critic on the encoder ``net_cfg.backbone`` selects (mlp / pointnet /
    frameminer_mixaction; ``frames``: ms2core.nn.frameminer.Frame list for the latter). An explicit
    ``backbone`` module replaces the encoder; obs shapes may be given as flat sizes (ints)."""
    shapes = {k: (v,) if isinstance(v, int) else tuple(v) for k, v in obs_shapes.items()}
    kind = resolve_backbone_kind(net_cfg.backbone, shapes) if backbone is None else "custom"

    def new_backbone():
        return make_backbone(kind, shapes, net_cfg, frames)

    if net_cfg.shared_backbone:
        shared = backbone if backbone is not None else new_backbone()
        actor_bb, critic_bb = shared, shared
    else:
        actor_bb = backbone if backbone is not None else new_backbone()
        critic_bb = copy.deepcopy(backbone) if backbone is not None else new_backbone()
    detach = net_cfg.shared_backbone and net_cfg.detach_actor_feature
    if kind == "frameminer_mixaction":
        actor = MixActionActor(actor_bb, action_dim, net_cfg.mix_gate_hidden, net_cfg.init_log_std,
                               net_cfg.activation, detach_feature=detach)
    else:
        actor = GaussianActor(actor_bb, action_dim, net_cfg.init_log_std, detach_feature=detach)
    return actor, ValueCritic(critic_bb)


def frames_for(net_cfg, obs_shapes: dict[str, tuple[int, ...]], raw_observation_space) -> list | None:
    """FrameMiner's frames resolved against the env's state layout (None for other encoders)."""
    if resolve_backbone_kind(net_cfg.backbone, obs_shapes) != "frameminer_mixaction":
        return None
    from ms2core.obs import state_layout

    return resolve_frames(net_cfg.frames, state_layout(raw_observation_space))


def unique_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    seen, out = set(), []
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


# --------------------------------------------------------------------------- rollout storage
@dataclass
class Rollout:
    """(T, N) experience of one PPO iteration; obs entries are (T, N, ...)."""

    obs: dict[str, np.ndarray]
    actions: np.ndarray        # raw Gaussian samples (before clipping to the env's bounds)
    log_probs: np.ndarray
    values: np.ndarray
    next_values: np.ndarray
    rewards: np.ndarray        # normalised if normalize_reward
    terminated: np.ndarray
    dones: np.ndarray
    #: the observation after the rollout and the final observations of the episodes that ended in it (t, env, obs):
    #: what recomputing ``values``/``next_values`` with a newer critic needs (None: values cannot be recomputed)
    last_obs: dict[str, np.ndarray] | None = None
    final_obs: list[tuple[int, int, dict[str, np.ndarray]]] | None = None
    #: seconds this rollout spent waiting for the simulator workers (``env_s``) and in the policy/critic
    #: forward passes and their transfers (``policy_s``): where rollout throughput goes
    timing: dict[str, float] | None = None


def critic_values(critic: ValueCritic, obs: dict[str, np.ndarray], device: torch.device,
                  batch: int = 4096) -> np.ndarray:
    """V(obs) for a flat (B, ...) batch of observations, in slices of ``batch`` rows."""
    n = len(next(iter(obs.values())))
    out = np.zeros(n, np.float32)
    with torch.no_grad():
        for a in range(0, n, batch):
            out[a:a + batch] = critic(common.obs_to_torch({k: v[a:a + batch] for k, v in obs.items()}, device)).cpu().numpy()
    return out


def next_values_for(critic: ValueCritic, values: np.ndarray, last_obs: dict[str, np.ndarray],
                    final_obs: list[tuple[int, int, dict[str, np.ndarray]]], device: torch.device) -> np.ndarray:
    """V(s_{t+1}) of the same episode for every (t, env): ``values`` shifted by one row, V(``last_obs``) for the
    last row, and where step t ended an episode the value of its final observation, not of the reset one."""
    next_values = np.concatenate([values[1:], critic_values(critic, last_obs, device)[None]], axis=0)
    if final_obs:
        stacked = {k: np.stack([f[2][k] for f in final_obs]) for k in last_obs}
        for (t, i, _), v in zip(final_obs, critic_values(critic, stacked, device)):
            next_values[t, i] = v
    return next_values


def rollout_values(critic: ValueCritic, rollout: Rollout, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(values, next_values) of a rollout under ``critic`` (see :func:`next_values_for`)."""
    T, N = rollout.values.shape
    values = critic_values(critic, {k: v.reshape(T * N, *v.shape[2:]) for k, v in rollout.obs.items()}, device)
    values = values.reshape(T, N)
    return values, next_values_for(critic, values, rollout.last_obs, rollout.final_obs or [], device)


def collect_rollout(vec: VectorEnv, obs: dict[str, np.ndarray], actor: GaussianActor, critic: ValueCritic,
                    steps_per_env: int, device: torch.device, reward_normalizer: ReturnNormalizer | None,
                    episodes_out: list[EpisodeStats]) -> tuple[Rollout, dict[str, np.ndarray]]:
    T, N = steps_per_env, vec.num_envs
    obs_buf = {k: np.zeros((T, N, *v.shape[1:]), v.dtype) for k, v in obs.items()}
    actions = np.zeros((T, N, vec.action_dim), np.float32)
    log_probs, values, rewards = (np.zeros((T, N), np.float32) for _ in range(3))
    terminated, dones = np.zeros((T, N), bool), np.zeros((T, N), bool)
    final_obs: list[tuple[int, int, dict[str, np.ndarray]]] = []  # (t, env, s_T) where step t ended an episode
    env_s = policy_s = 0.0
    with common.one_thread_while_simulating(device, vec.num_procs):
        for t in range(T):
            t_policy = time.perf_counter()
            with torch.no_grad():
                obs_t = common.obs_to_torch(obs, device)
                mean, log_std = actor(obs_t)
                action = mean + torch.exp(log_std) * torch.randn_like(mean)
                log_probs[t] = gaussian_log_prob(action, mean, log_std).cpu().numpy()
                values[t] = critic(obs_t).cpu().numpy()
            for k in obs:
                obs_buf[k][t] = obs[k]
            actions[t] = action.cpu().numpy()
            t_env = time.perf_counter()
            batch = vec.step(actions[t])
            env_s, policy_s = env_s + time.perf_counter() - t_env, policy_s + t_env - t_policy
            r = batch.rewards
            rewards[t] = reward_normalizer(r, batch.dones) if reward_normalizer is not None else r
            terminated[t], dones[t] = batch.terminated, batch.dones
            for i in np.flatnonzero(batch.dones):
                final_obs.append((t, int(i), {k: v[i] for k, v in batch.next_obs.items()}))
            episodes_out.extend(batch.episodes)
            obs = batch.obs
    next_values = next_values_for(critic, values, obs, final_obs, device)
    return Rollout(obs_buf, actions, log_probs, values, next_values, rewards, terminated, dones, obs, final_obs,
                   {"env_s": env_s, "policy_s": policy_s}), obs


# --------------------------------------------------------------------------- update
#: the epochs stop once approx KL > KL_STOP_FACTOR * ppo.max_kl (ManiSkill2-Learn's PPO.update_actor_critic)
KL_STOP_FACTOR = 1.5
ExtraActorLoss = Callable[[GaussianActor, int], tuple[torch.Tensor, dict[str, float]]]


def ppo_update(actor: GaussianActor, critic: ValueCritic, optimizer: torch.optim.Optimizer, rollout: Rollout,
               params, device: torch.device, update_index: int, generator: np.random.Generator,
               extra_actor_loss: ExtraActorLoss | None = None, learners=None) -> dict[str, float]:
    """Epochs of minibatch updates on one rollout; returns mean statistics.

    With ``params.recompute_advantages`` (ManiSkill2-Learn's ``recompute_value``) the values, GAE advantages
    and value targets are recomputed with the current critic before every epoch after the first, critic
    warm-up epochs included, so the first policy epoch already sees the warmed-up critic's advantages.
    Data-parallel ``learners`` (ms2core.algos.distributed) each take their shard of every minibatch and
    average gradients, KL and stats."""
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  (T, N, ...) -> (T*N, ...)

    def targets(values, next_values):
        adv, ret = compute_gae(rollout.rewards, values, next_values, rollout.terminated, rollout.dones,
                               params.gamma, params.gae_lambda)
        return adv, ret, *(torch.as_tensor(flat(x), device=device) for x in (values, adv, ret))

    advantages, returns, old_values, adv_all, ret_all = targets(rollout.values, rollout.next_values)
    recompute = params.recompute_advantages and rollout.last_obs is not None
    obs = {k: torch.as_tensor(flat(v), device=device) for k, v in rollout.obs.items()}
    actions = torch.as_tensor(flat(rollout.actions), device=device)
    old_log_probs = torch.as_tensor(flat(rollout.log_probs), device=device)
    total = actions.shape[0]
    mb = min(params.minibatch_size, total)
    shard = learners.rows(mb, "ppo.minibatch_size") if learners is not None else slice(None)
    warmup = params.critic_warmup_epochs if update_index == 0 else 0
    frozen = update_index < params.actor_freeze_updates  # ppo.actor_freeze_updates: all epochs critic-only
    parameters = unique_parameters(actor, critic)
    stats: dict[str, list[float]] = {}
    early_stopped = False
    critic_only_steps = policy_steps = 0
    for epoch in range(warmup + params.num_epochs):
        critic_only = frozen or epoch < warmup
        if recompute and epoch > 0:
            advantages, returns, old_values, adv_all, ret_all = targets(*rollout_values(critic, rollout, device))
        perm = torch.as_tensor(generator.permutation(total), device=device)
        for start in range(0, total - mb + 1, mb):
            mb_idx = perm[start:start + mb]
            adv_mb = normalize(adv_all[mb_idx]) if params.normalize_advantage else adv_all[mb_idx]
            idx, adv = mb_idx[shard], adv_mb[shard]  # advantages normalised over the whole minibatch
            obs_mb = {k: v[idx] for k, v in obs.items()}
            v_loss = value_loss(critic(obs_mb), ret_all[idx], old_values[idx], params.value_clip)
            loss = params.value_coef * v_loss
            record = {"value_loss": v_loss.item()}
            if not critic_only:
                mean, log_std = actor(obs_mb)
                new_log_prob = gaussian_log_prob(actions[idx], mean, log_std)
                pol = ppo_policy_loss(new_log_prob, old_log_probs[idx], adv, params.clip_ratio)
                entropy = gaussian_entropy(log_std).mean()
                loss = loss + pol.loss - params.entropy_coef * entropy
                kl = pol.approx_kl if learners is None else learners.mean(pol.approx_kl)  # one decision for all
                record.update(policy_loss=pol.loss.item(), approx_kl=kl.item(),
                              clip_fraction=pol.clip_fraction.item(), entropy=entropy.item())
                if extra_actor_loss is not None:
                    extra, extra_stats = extra_actor_loss(actor, update_index)
                    loss = loss + extra
                    record.update(extra_stats)
                if params.max_kl is not None and kl.item() > KL_STOP_FACTOR * params.max_kl:
                    early_stopped = True  # this minibatch moved the policy too far: do not apply it
                    break
            assert_finite_loss(loss, f"the PPO loss of update {update_index} (ppo.lr={params.lr:g})", update_index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if learners is not None:
                learners.sync_gradients(parameters)
            nn.utils.clip_grad_norm_(parameters, params.max_grad_norm)
            optimizer.step()
            critic_only_steps += critic_only
            policy_steps += not critic_only
            for k, v in record.items():
                stats.setdefault(k, []).append(v)
        if early_stopped:
            break
    out = {k: float(np.mean(v)) for k, v in stats.items()}
    out = learners.mean_stats(out) if learners is not None else out
    out.update(early_stopped=float(early_stopped), epochs_run=float(epoch + 1), policy_steps=float(policy_steps),
               critic_only_steps=float(critic_only_steps),
               advantage_mean=float(advantages.mean()), return_target_mean=float(returns.mean()))
    return out


# --------------------------------------------------------------------------- training loop
def train_ppo(cfg, sink: MetricsSink | None = None, *, backbone: nn.Module | None = None,
              actor: nn.Module | None = None,
              extra_actor_loss_factory: Callable[[VectorEnv, dict, torch.device], ExtraActorLoss] | None = None,
              algo_name: str = "ppo", learners=None) -> TrainResult:
    """Train PPO (``storage_schemas.rl.PPOConfig``); DAPG passes ``extra_actor_loss_factory``, whose term may
    also have a ``pretrain(actor) -> stats`` method, run once before the first env step of a fresh run.

    ``backbone`` replaces the MLP encoder (e.g. ms2core.nn's PointNet); ``actor`` replaces the
    whole policy with any module of the GaussianActor interface (FrameMiner-MixAction is chosen
    with ``net.backbone=frameminer_mixaction`` instead). Checkpoints of such custom networks carry
    no ``policy_spec`` and cannot be reloaded as policies (ms2core.algos.policies).

    With ``run.devices`` this launches the learners (ms2core.algos.distributed): rank 0 (this process) keeps
    the envs and collects each rollout, every rank updates on its shard of each minibatch; rank 0's result.
    """
    params, run = cfg.ppo, cfg.run
    if cfg.rollout.gym_env_id is None:
        check_env_settings(cfg.rollout.env, "rollout.env")  # before any worker is spawned
    if learners is None and distributed.num_learners(run) > 1:
        return distributed.launch(train_ppo, cfg, follower_cfg=distributed.follower_config(cfg), main_only=dict(
            sink=sink), backbone=backbone, actor=actor, extra_actor_loss_factory=extra_actor_loss_factory,
            algo_name=algo_name)
    device = common.setup_torch(run, learners)  # seeds python, numpy, torch with run.seed
    metrics, own_sink = common.open_sink(run, sink)
    vec = distributed.vector_env(vector_env_from_config, cfg.rollout, run.seed, learners)  # ranks > 0: a stub
    try:
        obs = vec.reset()
        obs_shapes = {k: tuple(v.shape[1:]) for k, v in obs.items()}
        frames = frames_for(cfg.net, obs_shapes, vec.raw_observation_space) if backbone is None else None
        default_actor, critic = build_actor_critic(obs_shapes, vec.action_dim, cfg.net, backbone, frames)
        custom_net = actor is not None or backbone is not None  # not rebuildable from the config alone
        actor = actor if actor is not None else default_actor
        actor.to(device), critic.to(device)
        optimizer = torch.optim.Adam(unique_parameters(actor, critic), lr=params.lr)
        normalizer = ReturnNormalizer(vec.num_envs, params.gamma) if params.normalize_reward else None
        spec = None if custom_net else common.policy_spec(cfg.rollout, vec, obs_shapes, frames)
        extra_loss = extra_actor_loss_factory(vec, obs_shapes, device) if extra_actor_loss_factory else None
        steps_per_env = max(1, params.rollout_steps // vec.num_envs)
        generator = np.random.default_rng(run.seed)
        env_steps, updates, n_episodes, curve, eval_curve = 0, 0, 0, [], []
        ckpt_path = common.checkpoint_path(run)
        if run.resume_from:
            state = common.load_checkpoint(run.resume_from, algo_name)
            actor.load_state_dict(state["actor"]), critic.load_state_dict(state["critic"])
            optimizer.load_state_dict(state["optimizer"])
            if normalizer is not None and state["normalizer"] is not None:
                normalizer.load_state_dict(state["normalizer"])
            env_steps, updates, n_episodes, curve = state["env_steps"], state["updates"], state["episodes"], state["curve"]
            eval_curve = state.get("eval_curve", [])
            generator.bit_generator.state = state["generator"]
            common.restore_rng_states(state["rng"])

        def save() -> str | None:
            if ckpt_path is None:
                return None
            with diverged_at(ckpt_path, env_steps):
                write_checkpoint()
            return str(ckpt_path)

        def write_checkpoint() -> None:
            common.save_checkpoint(ckpt_path, dict(
                algo=algo_name, config=cfg.model_dump(mode="json"), actor=actor.state_dict(),
                critic=critic.state_dict(), optimizer=optimizer.state_dict(),
                normalizer=normalizer.state_dict() if normalizer else None, env_steps=env_steps, updates=updates,
                episodes=n_episodes, curve=curve, eval_curve=eval_curve, generator=generator.bit_generator.state,
                policy_spec=spec))

        def periodic_eval() -> None:
            """Deterministic success rate every run.eval_every_steps (ManiSkill2-Learn's n_eval) for learning curves."""
            started = time.perf_counter()
            ev = evaluate_actor(cfg.rollout, actor, device, run.eval_every_episodes, run.seed + 20_000)
            eval_curve.append({"env_steps": env_steps, "success_rate": ev.success_rate, "mean_return": ev.mean_return})
            metrics.log({"periodic_eval/success_rate": ev.success_rate, "periodic_eval/mean_return": ev.mean_return,
                         "time/periodic_eval_s": time.perf_counter() - started}, env_steps)

        recent: list[EpisodeStats] = []
        t0, steps_at_t0 = time.perf_counter(), env_steps
        start = (env_steps, updates, t0)
        summary = EpisodeSummary.of([])
        pretrain = getattr(extra_loss, "pretrain", None)  # DAPG's optional BC pre-training (no env steps)
        if pretrain is not None and not run.resume_from:
            with diverged_at(ckpt_path, 0):
                pretrain_stats = pretrain(actor)
            if pretrain_stats:
                metrics.log(pretrain_stats, 0)
        distributed.broadcast_parameters(learners, actor, critic)  # every learner starts from rank 0's weights
        if run.eval_every_steps and env_steps == 0:
            periodic_eval()
        with common.stop_on_signals():  # SIGTERM / Ctrl-C: end after this update, with the checkpoint
            while env_steps < run.total_env_steps and not common.out_of_time(run, t0, learners):
                episodes: list[EpisodeStats] = []
                before = env_steps
                rollout, obs = distributed.shared_rollout(learners, collect_rollout, vec, obs, actor, critic,
                                                          steps_per_env, device, normalizer, episodes_out=episodes)
                env_steps += steps_per_env * vec.num_envs
                n_episodes += len(episodes)
                recent.extend(episodes)
                t_update = time.perf_counter()
                with diverged_at(ckpt_path, env_steps):
                    stats = ppo_update(actor, critic, optimizer, rollout, params, device, updates, generator,
                                       extra_loss, learners)
                    updates += 1
                    log_now = common.crossed(run.log_every_steps, before, env_steps) or env_steps >= run.total_env_steps
                    if log_now:
                        assert_finite_parameters([actor, critic], updates)
                stats.update({f"time/rollout_{k}": v for k, v in (rollout.timing or {}).items()})
                stats["time/update_s"] = time.perf_counter() - t_update
                if log_now:
                    summary = EpisodeSummary.of(recent) if recent else summary
                    fps = (env_steps - steps_at_t0) / max(time.perf_counter() - t0, 1e-9)
                    metrics.log({**stats, "mean_return": summary.mean_return, "success_rate": summary.success_rate,
                                 "episode_length": summary.mean_length, "episodes": n_episodes, "env_steps_per_s": fps,
                                 "updates": updates}, env_steps)
                    curve.append({"env_steps": env_steps, "mean_return": summary.mean_return,
                                  "success_rate": summary.success_rate})
                    recent = []
                if run.eval_every_steps and (common.crossed(run.eval_every_steps, before, env_steps)
                                             or env_steps >= run.total_env_steps):
                    periodic_eval()
                if common.crossed(run.checkpoint_every_steps, before, env_steps):
                    save()
        checkpoint = save()
        result = common.online_result(algo_name, run, checkpoint, env_steps=env_steps, updates=updates,
                                      episodes=n_episodes, start=start, summary=summary, curve=curve,
                                      eval_curve=eval_curve)
        if run.eval_episodes and common.stopped_by_signal() is None:
            ev = evaluate_actor(cfg.rollout, actor, device, run.eval_episodes, run.seed + 10_000)
            result.eval_mean_return, result.eval_success_rate = common.finite(ev.mean_return), common.finite(ev.success_rate)
            metrics.log({"eval_mean_return": ev.mean_return, "eval_success_rate": ev.success_rate}, env_steps)
        return result
    finally:
        vec.close()
        if own_sink:
            metrics.close()


def evaluate_actor(rollout_cfg, actor: GaussianActor, device: torch.device, num_episodes: int,
                   seed: int) -> EpisodeSummary:
    """Deterministic (mean-action) episodes in fresh in-process envs."""

    def act(obs):
        with torch.no_grad():
            return actor(common.obs_to_torch(obs, device))[0].cpu().numpy()

    return evaluate_deterministic(rollout_cfg, act, num_episodes, seed)