"""Configs of the online RL algorithms (PPO, DAPG, SAC, GAIL) and of the rollout that feeds them.

Every field is documented; defaults follow ManiSkill2-Learn's point-cloud PPO /
DAPG configs and its SAC config where those exist. Load them with
``ms2core.config.load_config(PPOConfig, "configs/ppo/pickcube_state.yaml", ["ppo.lr=1e-4"])``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from storage_schemas.dataset import ObsProcessConfig
from storage_schemas.env import EnvConfig, StrictModel
from storage_schemas.training import NetConfig, RunBase


class RolloutConfig(StrictModel):
    """Where experience comes from: which env, how many copies, in how many processes."""

    env: EnvConfig = Field(default_factory=EnvConfig, description="the ManiSkill2 task (ignored when gym_env_id is set)")
    gym_env_id: str | None = Field(
        None, description="a plain gymnasium env id instead of a ManiSkill2 task, e.g. Pendulum-v1 (benchmarks)"
    )
    gym_max_episode_steps: int | None = Field(None, gt=0, description="step limit for gym_env_id; None keeps its own")
    num_envs: int = Field(4, ge=1, description="env copies stepped together (one batch row each)")
    num_procs: int = Field(
        0, ge=0, description="worker processes holding the envs (0 = step them in the learner's process)"
    )
    start_method: Literal["spawn", "forkserver"] = Field(
        "spawn", description="kept for old configs: workers are always fresh interpreters (ms2core.workers)"
    )
    sim_python: str | None = Field(
        None, description="interpreter for the simulator worker processes (e.g. a simulator runtime's python); "
        "None = $MS2FLOW_SIM_PYTHON, else this one; another interpreter puts the envs in at least one worker "
        "process even with num_procs=0")
    continue_after_success: bool | None = Field(
        None, description="training episodes go on after success and end only at the time limit (ManiSkill2-Learn's "
        "env_cfg.ignore_dones=True in all its RL configs): ManiSkill2 terminates an episode at success, and with "
        "dense rewards of up to ~3/step a success worth 5 then ends the return early, so PPO learns to avoid it. "
        "The episode's success is then 'succeeded at any step'. None = true for ManiSkill2 tasks, false for "
        "gym_env_id. Deterministic evaluations always end at success")
    train_episode_steps: int | None = Field(
        None, gt=0, description="training episodes are cut after this many steps (a truncation: the value of the "
        "last observation is bootstrapped, like a time limit), e.g. 50 with gamma 0.8 for PickCube state (the "
        "ManiSkill2 tutorial's PPO recipe); evaluations keep env.max_episode_steps, the task's own limit. "
        "None = training episodes run to env.max_episode_steps too")
    obs: ObsProcessConfig | None = Field(
        None, description="how raw observations are processed (points, frame, goal points, ...); None = the render "
        "defaults for env.obs_mode. DAPG/GAIL: must match the demo dataset's (its manifest's options.obs)"
    )

    @model_validator(mode="after")
    def _procs_fit_envs(self):
        if self.num_procs > self.num_envs:
            raise ValueError(
                f"num_procs={self.num_procs} > num_envs={self.num_envs}: each worker needs at least one env"
            )
        if self.train_episode_steps is not None and self.gym_env_id is not None:
            raise ValueError("rollout.train_episode_steps applies to ManiSkill2 tasks (rollout.env); for "
                             "rollout.gym_env_id set rollout.gym_max_episode_steps")
        if self.obs is not None and self.gym_env_id is None and self.obs.env_obs_mode != self.env.obs_mode:
            raise ValueError(
                f"rollout.obs processes {self.obs.env_obs_mode!r} observations but rollout.env.obs_mode is "
                f"{self.env.obs_mode!r}; set rollout.obs.obs_mode (and include_seg) to match"
            )
        return self


class RunConfig(RunBase):
    """Section ``run`` of the online algorithms: the shared fields plus the budget and cadences in env steps."""

    total_env_steps: int = Field(100_000, gt=0, description="stop after this many env transitions (all envs)")
    checkpoint_every_steps: int = Field(0, ge=0, description="save a checkpoint every this many env steps (0 = end only)")
    resume_from: str | None = Field(None, description="checkpoint file to continue from (same config)")
    log_every_steps: int = Field(2_000, gt=0, description="log metrics at most this often (env steps)")
    eval_every_steps: int = Field(
        0, ge=0, description="PPO/DAPG: also evaluate deterministically at step 0 and every this many env steps, "
        "for learning curves (0 = never)"
    )
    eval_every_episodes: int = Field(10, gt=0, description="episodes per periodic evaluation (eval_every_steps)")
    stop_after_s: float | None = Field(
        None, gt=0, description="stop cleanly after this many seconds of training (the update in progress "
        "finishes, the checkpoint is written; resume_from continues the same curve): for job time limits "
        "and lent machines. None = run to total_env_steps")


class PPOParams(StrictModel):
    """PPO as in ManiSkill2-Learn's point-cloud config."""

    rollout_steps: int = Field(2_000, gt=0, description="env steps (all envs) collected per update")
    num_epochs: int = Field(2, gt=0, description="passes over each rollout")
    minibatch_size: int = Field(400, gt=0, description="transitions per gradient step (ManiSkill2-Learn: 400)")
    critic_warmup_epochs: int = Field(
        4, ge=0, description="on the first update only, epochs training the critic alone before the policy moves"
    )
    actor_freeze_updates: int = Field(
        0, ge=0, description="the first N updates train the critic alone (all their epochs), so the policy first "
        "moves on advantages of a critic fitted to its own returns: for a pre-trained actor (DAPG's bc_pretrain_steps)"
    )
    gamma: float = Field(0.95, gt=0, le=1, description="discount")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    clip_ratio: float = Field(0.2, gt=0, description="PPO ratio clip epsilon")
    max_kl: float | None = Field(0.2, gt=0, description="stop this update's epochs once approx KL exceeds "
                                  "1.5 * max_kl (ManiSkill2-Learn's rule; None = never)")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate (actor and critic)")
    max_grad_norm: float = Field(0.5, gt=0, description="gradient clipping norm")
    value_coef: float = Field(0.5, ge=0, description="weight of the critic loss")
    entropy_coef: float = Field(0.0, ge=0, description="weight of the entropy bonus")
    value_clip: float | None = Field(None, gt=0, description="clip value updates like the ratio (None = off)")
    normalize_reward: bool = Field(True, description="divide rewards by the running std of discounted returns")
    normalize_advantage: bool = Field(True, description="zero-mean unit-std advantages per minibatch")
    recompute_advantages: bool = Field(
        True, description="recompute values, GAE advantages and value targets with the current critic before "
        "every epoch after the first (ManiSkill2-Learn's recompute_value=True), so critic warm-up epochs "
        "improve the first policy epoch's advantages")


class PPOConfig(StrictModel):
    algo: Literal["ppo"] = "ppo"
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    net: NetConfig = Field(default_factory=lambda: NetConfig(shared_backbone=False))
    ppo: PPOParams = Field(default_factory=PPOParams)
    run: RunConfig = Field(default_factory=RunConfig)


class DemoSource(StrictModel):
    """A Zarr dataset in ms2flow's layout (data/obs/<key>, data/actions, meta/episode_ends)."""

    path: str = Field(..., description="the Zarr store directory")
    obs_keys: list[str] = Field(["state"], description="processed observation keys the policy reads")
    max_episodes: int | None = Field(None, gt=0, description="use only the first N committed episodes")


class DAPGParams(StrictModel):
    dapg_lambda: float = Field(0.1, ge=0, description="initial weight of the demo behaviour-cloning term")
    dapg_damping: float = Field(0.995, gt=0, le=1, description="per-update decay: weight_k = lambda * damping**k")
    demo_batch_size: int = Field(128, gt=0, description="demo transitions per PPO minibatch")
    demo_term_trains_std: bool = Field(
        True, description="the demo NLL's gradient reaches the policy's log_std (ManiSkill2-Learn's DAPG); false: "
        "it moves the mean only and exploration stays PPO's (a weighted term shrinks log_std toward the demos' "
        "residual, README: DAPG at scale)")
    bc_pretrain_steps: int = Field(
        0, ge=0, description="before any env step, fit the actor's mean to the demos for this many gradient steps "
        "(DAPG as Rajeswaran et al. 2018 run it; 0 = ManiSkill2-Learn's DAPG, no pre-training). Skipped on resume"
    )
    bc_pretrain_batch_size: int = Field(256, gt=0, description="demo transitions per pre-training step")
    bc_pretrain_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the pre-training (its own optimizer)")
    bc_pretrain_state_noise: float = Field(
        0.1, ge=0, description="pre-training: Gaussian noise on obs['state'], in units of each dimension's demo std "
        "(as BC's train.state_noise_std)"
    )


class DAPGConfig(StrictModel):
    algo: Literal["dapg"] = "dapg"
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    net: NetConfig = Field(default_factory=NetConfig)
    ppo: PPOParams = Field(default_factory=PPOParams)
    dapg: DAPGParams = Field(default_factory=DAPGParams)
    demos: DemoSource
    run: RunConfig = Field(default_factory=RunConfig)


class SACParams(StrictModel):
    """SAC with automatic entropy tuning (ManiSkill2-Learn's SAC defaults)."""

    buffer_capacity: int = Field(1_000_000, gt=0, description="replay buffer size in transitions")
    batch_size: int = Field(256, gt=0, description="transitions per gradient step")
    learning_starts: int = Field(4_000, ge=0, description="env steps of uniform random actions before learning")
    updates_per_env_step: float = Field(1.0, gt=0, description="gradient steps per env step (UTD ratio)")
    gamma: float = Field(0.95, gt=0, le=1, description="discount")
    n_step: int = Field(1, ge=1, description="n-step returns in the replay targets")
    tau: float = Field(0.005, gt=0, le=1, description="Polyak rate of the target critics")
    actor_lr: float = Field(3e-4, gt=0)
    critic_lr: float = Field(3e-4, gt=0)
    alpha_lr: float = Field(3e-4, gt=0)
    init_alpha: float = Field(1.0, gt=0, description="initial entropy temperature")
    target_entropy: float | None = Field(None, description="None = -action_dim")
    auto_alpha: bool = Field(True, description="tune alpha so the policy entropy tracks target_entropy")
    actor_update_interval: int = Field(1, ge=1, description="critic steps per actor/alpha step")


class SACConfig(StrictModel):
    algo: Literal["sac"] = "sac"
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    net: NetConfig = Field(default_factory=NetConfig)
    sac: SACParams = Field(default_factory=SACParams)
    run: RunConfig = Field(default_factory=RunConfig)


class GAILParams(StrictModel):
    discriminator_lr: float = Field(3e-4, gt=0)
    discriminator_hidden_sizes: list[int] = Field([256, 256])
    discriminator_batch_size: int = Field(256, gt=0, description="demo pairs and agent pairs per discriminator step")
    discriminator_updates_per_env_step: float = Field(
        0.1, gt=0, description="discriminator steps per env step (after learning_starts)"
    )
    gradient_penalty: float = Field(0.0, ge=0, description="weight of a zero-centred gradient penalty on demo inputs")
    env_reward_weight: float = Field(0.0, ge=0, description="reward = gail_reward + w * env_reward (0 = pure GAIL)")


class GAILConfig(StrictModel):
    """GAIL with SAC as the policy learner (the discriminator reward replaces the env reward)."""

    algo: Literal["gail"] = "gail"
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    net: NetConfig = Field(default_factory=NetConfig)
    sac: SACParams = Field(default_factory=SACParams)
    gail: GAILParams = Field(default_factory=GAILParams)
    demos: DemoSource
    run: RunConfig = Field(default_factory=RunConfig)
