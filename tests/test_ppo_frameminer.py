"""FrameMiner-MixAction: frames from the state layout, transforms by hand, action-level mixing, gradients, PPO/DAPG."""

import math

import numpy as np
import pytest
import torch

from ms2core.errors import ConfigError
from ms2core.nn.frameminer import (
    Frame,
    FrameMinerBackbone,
    MixActionActor,
    cloud_in_frame,
    points_to_frame,
    quaternion_to_matrix,
    resolve_frames,
)

torch.set_num_threads(1)
QUAT_Z90 = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]  # +90 deg about z, wxyz


def fake_pointcloud_env():
    from ms2core.envs import make_env

    return make_env("PickCube-v0", "pointcloud", "pd_ee_delta_pos", backend="fake", n_points=256)


def test_quaternion_and_points_to_frame_by_hand():
    R = quaternion_to_matrix(torch.tensor([QUAT_Z90]))[0]
    torch.testing.assert_close(R, torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), atol=1e-6, rtol=0)
    # frame at (1, 0, 0) rotated +90 deg about z: world (1, 1, 0) lies 1 m along the frame's x axis
    points = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 0.0, 2.0]]])
    local = points_to_frame(points, torch.tensor([[1.0, 0.0, 0.0]]), R[None])
    torch.testing.assert_close(local, torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]]), atol=1e-6, rtol=0)


def test_frames_resolve_from_the_envs_state_layout():
    from ms2core.obs import state_layout

    layout = state_layout(fake_pointcloud_env().observation_space)  # qpos 9, qvel 9, tcp_pose 7, goal_pos 3
    assert resolve_frames(["obs", "tcp", "goal"], layout) == [
        Frame("obs"), Frame("tcp", pos_index=18, quat_index=21), Frame("goal", pos_index=25)]
    with pytest.raises(ConfigError, match="'hand'"):
        resolve_frames(["hand"], layout)
    with pytest.raises(ConfigError, match="extra/goal_pos"):
        resolve_frames(["goal"], {"agent/qpos": slice(0, 9)})


def hand_made_obs():
    """Four points; the TCP at (1, 0, 0) turned +90 deg about z; the goal at (0, 0, 1)."""
    xyz = torch.tensor([[[1.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.5]]])
    state = torch.tensor([[9.0, 1.0, 0.0, 0.0, *QUAT_Z90, 0.0, 0.0, 1.0]])  # [junk, tcp pos, tcp quat, goal pos]
    rgb = torch.zeros(1, 4, 3, dtype=torch.uint8)
    return {"xyz": xyz, "rgb": rgb, "state": state}


FRAMES = [Frame("obs"), Frame("tcp", 1, 4), Frame("goal", 8)]


def test_each_branch_sees_the_cloud_in_its_own_frame():
    backbone = FrameMinerBackbone(FRAMES, state_dim=11, point_mlp=[4], hidden=[4])
    world, tcp, goal = (o["xyz"] for o in backbone.frame_inputs(hand_made_obs()))
    torch.testing.assert_close(world, hand_made_obs()["xyz"])
    # in the TCP frame: x_tcp = world +y, y_tcp = world -x (relative to (1, 0, 0))
    torch.testing.assert_close(tcp, torch.tensor([[[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 1.0],
                                                   [0.0, 0.0, 0.5]]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(goal, hand_made_obs()["xyz"] - torch.tensor([0.0, 0.0, 1.0]))


def test_tcp_branch_matches_the_renderers_ee_frame():
    """The TCP branch of a world-frame cloud = the cloud ms2core.obs processes with obs_frame=ee."""
    from ms2core.obs import process_observation, state_layout
    from storage_schemas.dataset import ObsProcessConfig

    env = fake_pointcloud_env()
    env.reset(seed=3)
    raw, *_ = env.step(env.action_space.sample())
    frames = resolve_frames(["tcp"], state_layout(raw))
    world = process_observation(raw, ObsProcessConfig(n_points=64), np.random.default_rng(0))
    ee = process_observation(raw, ObsProcessConfig(n_points=64, obs_frame="ee"), np.random.default_rng(0))
    mine = cloud_in_frame(torch.as_tensor(world["xyz"])[None], torch.as_tensor(world["state"])[None], frames[0])
    np.testing.assert_allclose(mine[0].numpy(), ee["xyz"], atol=1e-5)


def make_actor(action_dim=2):
    torch.manual_seed(0)
    return MixActionActor(FrameMinerBackbone(FRAMES, 11, [8], [6]), action_dim, gate_hidden=[5])


def test_starts_with_uniform_weights_and_zero_actions():
    actor = make_actor()
    mixed = actor.mix(actor.backbone(hand_made_obs()))
    torch.testing.assert_close(mixed.weights, torch.full((1, 3, 2), 1 / 3))
    torch.testing.assert_close(mixed.mean, torch.zeros(1, 2))


def test_output_is_the_weighted_mix_of_branch_proposals():
    actor = make_actor()
    with torch.no_grad():
        for k, head in enumerate(actor.heads):
            head.bias.copy_(torch.tensor([float(k), 10.0 * k]))  # proposals (0, 0), (1, 10), (2, 20)
        # gate logits per (frame, action dim): dim 0 -> weights (1/4, 3/4, 0); dim 1 -> all on frame 0
        actor.gate[-1].bias.copy_(torch.tensor([0.0, 50.0, math.log(3.0), 0.0, -50.0, 0.0]))
    mean, log_std = actor(hand_made_obs())
    torch.testing.assert_close(mean, torch.tensor([[0.75 * 1 + 0.0 * 2, 0.0]]), atol=1e-5, rtol=0)
    assert log_std.shape == (1, 2)

    for layer in [*actor.heads, actor.gate[-1]]:  # general weights: sum-to-one and the mix, batched
        torch.nn.init.normal_(layer.weight), torch.nn.init.normal_(layer.bias)
    obs = {"xyz": torch.randn(5, 4, 3), "rgb": torch.randint(0, 256, (5, 4, 3), dtype=torch.uint8),
           "state": torch.randn(5, 11).index_put_((torch.arange(5), torch.full((5,), 4)), torch.ones(5))}
    mixed = actor.mix(actor.backbone(obs))
    torch.testing.assert_close(mixed.weights.sum(1), torch.ones(5, 2))
    assert (mixed.weights > 0).all() and mixed.weights.std() > 0
    torch.testing.assert_close(mixed.mean, (mixed.weights * mixed.proposals).sum(1))
    torch.testing.assert_close(actor(obs)[0], mixed.mean)


def test_gradients_reach_every_branch_and_the_gate():
    actor = make_actor()
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-2)
    obs = hand_made_obs()
    # Zero-initialised heads and gate output: step 1 trains the heads (proposals stop being equal), step 2
    # the gate's output layer, and from step 3 on the loss reaches every layer of every branch and of the gate.
    for _ in range(3):
        optimizer.zero_grad()
        ((actor(obs)[0] - torch.tensor([[1.0, -1.0]])) ** 2).sum().backward()
        optimizer.step()
    for k, branch in enumerate(actor.backbone.branches):
        grads = [p.grad for p in branch.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, f"branch {k}"
    assert actor.gate[0].weight.grad.abs().sum() > 0


def pointcloud_ppo_config(tmp_path, **net):
    from storage_schemas.rl import PPOConfig

    return PPOConfig.model_validate(dict(
        rollout=dict(env=dict(backend="fake", obs_mode="pointcloud", control_mode="pd_ee_delta_pos",
                              max_episode_steps=10), num_envs=2),
        net=dict(backbone="frameminer_mixaction", hidden_sizes=[16], pointnet_point_mlp=[8, 16],
                 frames=["obs", "tcp", "goal"], mix_gate_hidden=[8], shared_backbone=True, **net),
        ppo=dict(rollout_steps=20, minibatch_size=10, critic_warmup_epochs=0),
        run=dict(total_env_steps=40, run_dir=str(tmp_path), eval_every_steps=20, eval_every_episodes=2)))


def test_ppo_selects_frameminer_from_the_config_and_the_policy_reloads(tmp_path):
    from ms2core.algos._common import load_checkpoint
    from ms2core.algos.policies import load_policy
    from ms2core.algos.ppo import train_ppo

    result = train_ppo(pointcloud_ppo_config(tmp_path))
    assert result.updates == 2 and [p["env_steps"] for p in result.eval_curve] == [0, 20, 40]
    state = load_checkpoint(result.final_checkpoint, "ppo")
    assert {"gate.0.weight", "backbone.branches.2.point_mlp.0.weight"} <= set(state["actor"])
    assert state["policy_spec"]["frames"] == [Frame("obs").to_dict(), Frame("tcp", 18, 21).to_dict(),
                                              Frame("goal", 25).to_dict()]
    policy, view = load_policy(result.final_checkpoint)
    assert isinstance(policy.actor, MixActionActor) and view["extra"]["obs_shapes"]["xyz"] == [1200, 3]
    obs = {"xyz": torch.randn(3, 1200, 3), "rgb": torch.zeros(3, 1200, 3, dtype=torch.uint8),
           "state": torch.randn(3, 28)}
    from ms2core.algos.ppo import build_actor_critic
    from storage_schemas.rl import NetConfig

    fresh, _ = build_actor_critic({k: tuple(v) for k, v in view["extra"]["obs_shapes"].items()}, 4,
                                  NetConfig.model_validate(state["config"]["net"]),
                                  frames=[Frame(**f) for f in state["policy_spec"]["frames"]])
    fresh.load_state_dict(state["actor"])
    torch.testing.assert_close(policy.act(obs), fresh(obs)[0].clamp(-1, 1))  # fake env's bounds are [-1, 1]


def test_frameminer_needs_point_clouds_and_is_ppo_only(tmp_path):
    from ms2core.algos.ppo import train_ppo
    from ms2core.algos.sac import check_sac_config
    from storage_schemas.rl import PPOConfig, SACConfig

    cfg = PPOConfig.model_validate(dict(rollout=dict(env=dict(backend="fake"), num_envs=1),
                                        net=dict(backbone="frameminer_mixaction"), run=dict(total_env_steps=10)))
    with pytest.raises(ConfigError, match="point-cloud observations"):
        train_ppo(cfg)
    with pytest.raises(ConfigError, match="not available for sac"):
        check_sac_config(SACConfig.model_validate(dict(net=dict(backbone="frameminer_mixaction"))))
    with pytest.raises(ValueError, match="frames"):
        PPOConfig.model_validate(dict(net=dict(frames=["elbow"])))


def test_dapg_trains_frameminer_on_point_cloud_demos(tmp_path, monkeypatch):
    from ms2core.algos.dapg import train_dapg
    from ms2core.algos.policies import load_policy
    from ms2core.metrics import read_jsonl_metrics
    from storage_schemas.rl import DAPGConfig
    from tests.flows.conftest import build_fake_dataset

    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    store = build_fake_dataset("pointcloud", num_episodes=2, n_points=1200)  # the rollouts' default processing
    cfg = DAPGConfig.model_validate(dict(
        rollout=dict(env=dict(backend="fake", obs_mode="pointcloud", control_mode="pd_ee_delta_pose",
                              max_episode_steps=10), num_envs=2),
        net=dict(backbone="frameminer_mixaction", hidden_sizes=[16], pointnet_point_mlp=[8, 16], mix_gate_hidden=[8]),
        ppo=dict(rollout_steps=20, minibatch_size=10, critic_warmup_epochs=0), dapg=dict(demo_batch_size=8),
        demos=dict(path=store, obs_keys=["xyz", "rgb", "state"]),
        run=dict(total_env_steps=40, log_every_steps=20, run_dir=str(tmp_path / "run"))))
    result = train_dapg(cfg)
    logged = read_jsonl_metrics(tmp_path / "run" / "metrics.jsonl")
    assert result.updates == 2 and all(r["metrics"]["demo_nll"] > 0 for r in logged)
    assert isinstance(load_policy(result.final_checkpoint)[0].actor, MixActionActor)


def test_example_frameminer_config_trains_tiny(tmp_path, repo_root):
    from ms2core.algos.ppo import train_ppo
    from ms2core.config import load_config
    from storage_schemas.rl import PPOConfig

    cfg = load_config(PPOConfig, repo_root / "configs/ppo/pickcube_pointcloud_frameminer.yaml", [
        "rollout.env.backend=fake", "rollout.env.max_episode_steps=10", "rollout.num_envs=2", "rollout.num_procs=0",
        "ppo.rollout_steps=20", "ppo.minibatch_size=10", "ppo.critic_warmup_epochs=1", "run.total_env_steps=20",
        "run.eval_episodes=0", f"run.run_dir={tmp_path}"])
    result = train_ppo(cfg)
    from ms2core.algos.policies import load_policy

    policy, _ = load_policy(result.final_checkpoint)
    assert [f.name for f in policy.actor.backbone.frames] == ["obs", "tcp"]
    assert policy.actor.backbone.branches[0].point_mlp[-2].out_features == 300  # [..., Linear, ReLU]



def test_a_frameminer_policy_exports_and_runs_from_raw_point_clouds(tmp_path):
    from ms2core.algos.ppo import train_ppo
    from ms2core.export import evaluate_exported, export_policy, load_exported

    cfg = pointcloud_ppo_config(tmp_path / "run")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"total_env_steps": 20, "eval_every_steps": 0})})
    out = export_policy(train_ppo(cfg).final_checkpoint, tmp_path / "pkg")  # TorchScript trace of the mixed policy
    _, meta = load_exported(out)
    assert meta["obs_keys"] == ["rgb", "state", "xyz"] and meta["env_obs_mode"] == "pointcloud"
    evaluated = evaluate_exported(out, num_episodes=1, max_episode_steps=10, backend="fake")
    assert evaluated.num_episodes == 1 and 1 <= evaluated.episode_length.mean <= 10
