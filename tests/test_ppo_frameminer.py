"""FrameMiner-MixAction: frame transforms by hand, per-frame branches, action-level mixing, PPO compatibility."""

import math

import pytest
import torch

from ms2core.algos._nets import MixActionActor, gaussian_log_prob, points_to_frame, quaternion_to_matrix

torch.set_num_threads(1)


def test_points_to_frame_by_hand():
    # frame at (1, 0, 0) rotated +90 deg about z: world point (1, 1, 0) is 1 m along the frame's x axis
    quat = torch.tensor([[math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]])
    R = quaternion_to_matrix(quat)[0]
    torch.testing.assert_close(R, torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), atol=1e-6, rtol=0)
    local = points_to_frame(torch.tensor([[[1.0, 1.0, 0.0], [1.0, 0.0, 2.0]]]), torch.tensor([[1.0, 0.0, 0.0]]), quat)
    torch.testing.assert_close(local, torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]]), atol=1e-6, rtol=0)


class MeanXYZ(torch.nn.Module):
    """Stand-in branch: mean point position (the lead plugs ms2core.nn's PointNet here)."""

    out_dim = 3

    def forward(self, obs):
        return obs["xyz"].mean(1)


def tcp_frame(obs):
    return obs["state"][:, :3], obs["state"][:, 3:7]


def test_branches_see_their_own_frame_and_actions_are_mixed():
    actor = MixActionActor([None, tcp_frame], [MeanXYZ(), MeanXYZ()], action_dim=2)
    xyz = torch.tensor([[[1.0, 1.0, 1.0], [3.0, 1.0, 1.0]]])
    state = torch.tensor([[2.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])  # tcp at the cloud's centre, identity rotation
    obs = {"xyz": xyz, "state": state}
    world, tcp = actor.branch_inputs(obs)
    torch.testing.assert_close(world["xyz"], xyz)
    torch.testing.assert_close(tcp["xyz"].mean(1), torch.zeros(1, 3))
    with torch.no_grad():
        for head in actor.heads:
            head.weight.zero_()
        actor.heads[0].bias.copy_(torch.tensor([1.0, 0.0]))
        actor.heads[1].bias.copy_(torch.tensor([0.0, 1.0]))
        actor.gate.weight.zero_(), actor.gate.bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # weights 1/4, 3/4
    mean, log_std = actor(obs)
    torch.testing.assert_close(mean, torch.tensor([[0.25, 0.75]]))
    lp = gaussian_log_prob(torch.zeros(1, 2), mean, log_std)  # the PPO interface works on the mixture mean
    assert lp.shape == (1,)


def test_mismatched_frames_and_branches():
    with pytest.raises(ValueError, match="one branch per frame"):
        MixActionActor([None, tcp_frame], [MeanXYZ()], action_dim=2)


class MeanState(torch.nn.Module):
    out_dim = 51

    def forward(self, obs):
        return obs["state"]


def test_train_ppo_accepts_a_mix_action_actor(tmp_path):
    from ms2core.algos._common import load_checkpoint
    from ms2core.algos.ppo import train_ppo
    from storage_schemas.rl import PPOConfig

    actor = MixActionActor([None, None], [MeanState(), MeanState()], action_dim=4)
    actor.xyz_key = "state"  # the fake env's state stands in for a point cloud here
    cfg = PPOConfig.model_validate(dict(
        rollout=dict(env=dict(backend="fake", control_mode="pd_ee_delta_pos", max_episode_steps=10), num_envs=2),
        net=dict(hidden_sizes=[8]), ppo=dict(rollout_steps=20, minibatch_size=10, critic_warmup_epochs=0),
        run=dict(total_env_steps=40, run_dir=str(tmp_path))))
    result = train_ppo(cfg, actor=actor)
    assert result.updates == 2 and "gate.weight" in load_checkpoint(result.checkpoint, "ppo")["actor"]
