"""The fake env: same spaces as ManiSkill2's PickCube-v0, deterministic, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from ms2core.envs import make_env
from ms2core.envs.fake import FAKE_STATE_DIM
from ms2core.errors import UnknownEnvError, UnsupportedModeError


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}/{k}")
    else:
        yield prefix, tree


@pytest.mark.parametrize("obs_mode", ["state", "state_dict", "rgbd", "pointcloud", "rgbd_robot_seg", "pointcloud_robot_seg"])
@pytest.mark.parametrize("control_mode", ["pd_ee_delta_pose", "pd_joint_delta_pos", "pd_joint_pos"])
def test_observations_lie_in_their_spaces(obs_mode, control_mode):
    env = make_env("PickCube-v0", obs_mode, control_mode, backend="fake", camera_size=(32, 24), n_points=256)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs), obs_mode
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert isinstance(info["success"], bool) and np.isfinite(reward)


def test_visual_layouts_match_maniskill2_names():
    env = make_env("PickCube-v0", "rgbd", backend="fake", camera_size=(32, 24))
    obs, _ = env.reset(seed=0)
    keys = {k for k, _ in _leaves(obs)}
    assert {"/image/base_camera/rgb", "/image/hand_camera/depth", "/agent/qpos", "/extra/tcp_pose",
            "/camera_param/base_camera/intrinsic_cv"} <= keys
    assert obs["image"]["base_camera"]["rgb"].shape == (24, 32, 3)
    assert obs["image"]["base_camera"]["rgb"].std() > 5  # not blank
    pc = make_env("PickCube-v0", "pointcloud", backend="fake", n_points=512).reset(seed=0)[0]["pointcloud"]
    assert set(pc) == {"xyzw", "rgb"} and pc["xyzw"].shape == (512, 4)


def test_reset_is_deterministic_per_seed_and_state_round_trips():
    env = make_env("PickCube-v0", "state", backend="fake")
    a, _ = env.reset(seed=7)
    b, _ = env.reset(seed=7)
    c, _ = env.reset(seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    env.reset(seed=7)
    for _ in range(3):
        env.step(env.action_space.sample())
    state = env.unwrapped.get_state()
    assert state.shape == (FAKE_STATE_DIM,)
    obs_before = env.unwrapped.get_obs()
    env.reset(seed=99)
    env.unwrapped.set_state(state)
    np.testing.assert_allclose(env.unwrapped.get_obs(), obs_before, atol=1e-6)  # states are float32, as in ManiSkill2


def test_goal_seeking_policy_succeeds_and_random_mostly_does_not():
    env = make_env("PickCube-v0", "state_dict", backend="fake", max_episode_steps=50)
    obs, _ = env.reset(seed=0)
    for _ in range(50):
        delta = obs["extra"]["goal_pos"] - obs["extra"]["tcp_pose"][:3]
        action = np.zeros(7, np.float32)
        action[:3] = np.clip(delta / 0.05, -1, 1)
        obs, _, _, truncated, info = env.step(action)
        if info["success"]:
            break
    assert info["success"]


def test_time_limit_truncates():
    env = make_env("PickCube-v0", "state", backend="fake", max_episode_steps=5)
    env.reset(seed=0)
    truncs = [env.step(np.zeros(7, np.float32))[3] for _ in range(5)]
    assert truncs == [False] * 4 + [True]


def test_bad_modes_name_the_value_and_the_allowed_ones():
    with pytest.raises(UnknownEnvError, match="PickCub-v0.*") as exc:
        make_env("PickCub-v0", backend="fake")
    assert "PickCube-v0" in exc.value.hint
    with pytest.raises(UnsupportedModeError, match="'rgb'") as exc:
        make_env("PickCube-v0", "rgb", backend="fake")
    assert "rgbd" in exc.value.hint
    with pytest.raises(UnsupportedModeError, match="pd_ee_delta'") as exc:
        make_env("PickCube-v0", "state", "pd_ee_delta", backend="fake")
    assert "pd_ee_delta_pose" in exc.value.hint
