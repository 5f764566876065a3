"""Online-RL checkpoints as policies: rebuild, deterministic env-unit actions, evaluation, export, bad inputs."""

import numpy as np
import pytest
import torch

from ms2core.algos.policies import RLPolicy, load_policy, write_policy_file
from ms2core.errors import CheckpointError, ConfigError
from storage_schemas.rl import PPOConfig, SACConfig

torch.set_num_threads(1)


def fake_rollout(control_mode="pd_ee_delta_pos", steps=10):
    return dict(env=dict(env_id="PickCube-v0", backend="fake", control_mode=control_mode, max_episode_steps=steps),
                num_envs=2, num_procs=0)


def tiny_ppo_checkpoint(tmp_path, control_mode="pd_ee_delta_pos"):
    from ms2core.algos.ppo import train_ppo

    cfg = PPOConfig.model_validate(dict(
        rollout=fake_rollout(control_mode), net=dict(hidden_sizes=[16], init_log_std=0.0),
        ppo=dict(rollout_steps=40, minibatch_size=20, critic_warmup_epochs=0),
        run=dict(total_env_steps=40, run_dir=str(tmp_path / "ppo"))))
    return cfg, train_ppo(cfg).final_checkpoint


def tiny_sac_checkpoint(tmp_path):
    from ms2core.algos.sac import train_sac

    cfg = SACConfig.model_validate(dict(
        rollout=fake_rollout(), net=dict(hidden_sizes=[16]),
        sac=dict(learning_starts=10, batch_size=8, buffer_capacity=200),
        run=dict(total_env_steps=30, run_dir=str(tmp_path / "sac"))))
    return cfg, train_sac(cfg).final_checkpoint


def test_ppo_policy_acts_with_the_mean_scaled_to_the_env_bounds(tmp_path):
    from ms2core.algos._common import load_checkpoint
    from ms2core.envs.fake import fake_action_space

    _, ckpt = tiny_ppo_checkpoint(tmp_path, "pd_joint_pos")  # bounds = Panda joint limits, not [-1, 1]
    policy, view = load_policy(ckpt)
    assert isinstance(policy, RLPolicy) and not policy.squashed
    assert view["config"]["env"]["control_mode"] == "pd_joint_pos" and view["step"] == 40
    assert view["extra"]["obs_shapes"] == {"state": [51]} and view["extra"]["obs_processing"]["obs_mode"] == "state"
    obs = {"state": torch.randn(4, 51) * 3}
    mean = policy.actor(obs)[0]
    space = fake_action_space("pd_joint_pos")
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    expected = low + (mean.clamp(-1, 1) + 1) / 2 * (high - low)  # what VectorEnv did with the same action
    torch.testing.assert_close(policy.act(obs), expected)
    torch.testing.assert_close(policy(obs), expected)
    # sampling: the same scaling around the mean, reproducible with a generator
    a = policy.act(obs, "sample", torch.Generator().manual_seed(1))
    b = policy.act(obs, "sample", torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, expected) and ((a >= low) & (a <= high)).all()
    # the weights are the checkpoint's actor
    state = load_checkpoint(ckpt, "ppo")
    for k, v in state["actor"].items():
        torch.testing.assert_close(policy.actor.state_dict()[k], v)


def test_sac_policy_is_tanh_of_the_mean(tmp_path):
    _, ckpt = tiny_sac_checkpoint(tmp_path)
    policy, view = load_policy(ckpt)
    assert policy.squashed and view["extra"]["algo"] == "sac"
    obs = {"state": torch.randn(3, 51)}
    torch.testing.assert_close(policy.act(obs), torch.tanh(policy.actor(obs)[0]))  # fake bounds: [-1, 1]


def test_policy_file_is_the_actor_only_and_loads_the_same(tmp_path):
    _, ckpt = tiny_sac_checkpoint(tmp_path)
    slim = write_policy_file(ckpt, tmp_path / "policy.pt")
    content = torch.load(slim, weights_only=False)
    assert "buffer" not in content and "agent" not in content and set(content["actor"]) == set(
        torch.load(ckpt, weights_only=False)["agent"]["actor"])
    assert slim.stat().st_size < (tmp_path / "sac" / "checkpoint.pt").stat().st_size / 2
    obs = {"state": torch.randn(2, 51)}
    torch.testing.assert_close(load_policy(slim)[0].act(obs), load_policy(ckpt)[0].act(obs))


def test_evaluate_runs_an_rl_checkpoint_like_training_evaluated_it(tmp_path):
    """ms2 evaluate's episodes (seed + i) = the trainer's deterministic evaluation with one env (seed + i)."""
    from ms2core.evaluation import evaluate
    from ms2core.rollout import evaluate_deterministic
    from storage_schemas.training import EvalConfig

    cfg, ckpt = tiny_ppo_checkpoint(tmp_path)
    policy, _ = load_policy(ckpt)
    ours = evaluate(EvalConfig(checkpoint=ckpt, num_episodes=3, seed=5, output_dir=str(tmp_path / "eval")),
                    progress=False)

    def act(obs):
        with torch.no_grad():
            return policy.actor({k: torch.as_tensor(v) for k, v in obs.items()})[0].numpy()

    theirs = evaluate_deterministic(cfg.rollout.model_copy(update={"num_envs": 1}), act, 3, seed=5)
    assert ours.checkpoint_step == 40 and ours.obs_mode == "state"
    assert ours.episode_return.mean == pytest.approx(theirs.mean_return, rel=1e-5)
    assert ours.success_once.mean == theirs.success_rate
    assert (tmp_path / "eval" / "result.json").exists()


def test_export_packages_an_rl_policy(tmp_path):
    from ms2core.export import evaluate_exported, export_policy

    _, ckpt = tiny_ppo_checkpoint(tmp_path)
    out = export_policy(ckpt, tmp_path / "pkg")
    from ms2core.export import load_exported

    policy_cls, meta = load_exported(out)
    assert meta["obs_keys"] == ["state"] and meta["processing"]["obs_mode"] == "state" and meta["step"] == 40
    raw = np.random.default_rng(0).normal(size=51)
    exported = policy_cls("PickCube-v0").act(raw)
    mine = load_policy(ckpt)[0].act({"state": torch.as_tensor(raw, dtype=torch.float32)[None]})[0].numpy()
    np.testing.assert_allclose(exported, mine, atol=1e-5)
    assert evaluate_exported(out, num_episodes=2, backend="fake").num_episodes == 2


def test_bad_checkpoints_are_named(tmp_path):
    from ms2core.algos._common import save_checkpoint
    from ms2core.algos.ppo import train_ppo

    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not readable"):
        load_policy(tmp_path / "junk.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not an ms2flow checkpoint"):
        load_policy(tmp_path / "list.pt")
    save_checkpoint(tmp_path / "other.pt", {"algo": "dqn"})
    with pytest.raises(CheckpointError, match="'dqn'"):
        load_policy(tmp_path / "other.pt")

    class Custom(torch.nn.Module):  # a custom actor: the config cannot rebuild it, so no policy_spec is written
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(51, 4)
            self.log_std = torch.nn.Parameter(torch.zeros(4))

        def forward(self, obs):
            mean = self.linear(obs["state"].float())
            return mean, self.log_std.expand_as(mean)

    cfg = PPOConfig.model_validate(dict(rollout=fake_rollout(), net=dict(hidden_sizes=[8]),
                                        ppo=dict(rollout_steps=20, minibatch_size=10, critic_warmup_epochs=0),
                                        run=dict(total_env_steps=20, run_dir=str(tmp_path / "custom"))))
    custom = train_ppo(cfg, actor=Custom()).final_checkpoint
    with pytest.raises(CheckpointError, match="no policy_spec"):
        load_policy(custom)
    with pytest.raises(CheckpointError, match="no policy_spec"):
        write_policy_file(custom, tmp_path / "p.pt")


def test_gym_env_policies_load_but_are_not_evaluated_on_maniskill(tmp_path):
    from ms2core.algos.ppo import train_ppo
    from ms2core.evaluation import evaluate
    from storage_schemas.training import EvalConfig

    cfg = PPOConfig.model_validate(dict(
        rollout=dict(gym_env_id="Pendulum-v1", num_envs=1), net=dict(hidden_sizes=[8]),
        ppo=dict(rollout_steps=20, minibatch_size=10, critic_warmup_epochs=0),
        run=dict(total_env_steps=20, run_dir=str(tmp_path / "pendulum"))))
    ckpt = train_ppo(cfg).final_checkpoint
    policy, view = load_policy(ckpt)
    low, high = policy.action_low.item(), policy.action_high.item()
    assert (low, high) == (-2.0, 2.0) and view["extra"]["gym_env_id"] == "Pendulum-v1"
    with pytest.raises(ConfigError, match="Pendulum-v1"):
        evaluate(EvalConfig(checkpoint=ckpt, num_episodes=1, output_dir=str(tmp_path / "e")), progress=False)
