"""Real SAPIEN on this CPU: PickCube-v0 resets, steps and renders real pictures in every obs mode."""

from __future__ import annotations

import numpy as np
import pytest

from ms2core.envs import make_env

pytestmark = pytest.mark.sim

CONTROL_MODES = ["pd_ee_delta_pose", "pd_joint_delta_pos"]


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}/{k}")
    else:
        yield prefix, np.asarray(tree)


@pytest.fixture(scope="module")
def envs():
    made = {}
    yield made
    for env in made.values():
        env.close()


def _env(envs, obs_mode, control_mode):
    key = (obs_mode, control_mode)
    if key not in envs:
        envs[key] = make_env("PickCube-v0", obs_mode, control_mode)
    return envs[key]


@pytest.mark.parametrize("control_mode", CONTROL_MODES)
def test_state_mode_resets_and_steps(envs, control_mode):
    env = _env(envs, "state", control_mode)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (51,) and np.isfinite(obs).all()
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert "success" in info and np.isfinite(reward)
    # Deterministic per seed.
    again, _ = env.reset(seed=0)
    first, _ = env.reset(seed=0)
    np.testing.assert_allclose(again, first)


@pytest.mark.parametrize("control_mode", CONTROL_MODES)
def test_rgbd_pictures_are_real(envs, control_mode):
    env = _env(envs, "rgbd", control_mode)
    obs, _ = env.reset(seed=1)
    obs, *_ = env.step(env.action_space.sample())
    assert list(obs["image"]) == ["base_camera", "hand_camera"]
    for cam, image in obs["image"].items():
        rgb, depth = image["rgb"], image["depth"]
        assert rgb.dtype == np.uint8 and rgb.shape == (128, 128, 3)
        assert rgb.astype(np.float32).var() > 50.0, f"{cam} rgb is blank"
        assert depth.dtype == np.float32 and depth.shape == (128, 128, 1)
        assert np.isfinite(depth).all() and depth.min() >= 0.0 and 0.01 < depth.max() < 10.0
        assert depth.std() > 1e-3, f"{cam} depth is flat"


@pytest.mark.parametrize("control_mode", CONTROL_MODES)
def test_pointcloud_has_documented_keys(envs, control_mode):
    env = _env(envs, "pointcloud", control_mode)
    obs, _ = env.reset(seed=2)
    obs, *_ = env.step(env.action_space.sample())
    assert set(obs) == {"agent", "extra", "pointcloud"}
    assert set(obs["agent"]) == {"qpos", "qvel", "base_pose"}
    pc = obs["pointcloud"]
    assert set(pc) == {"xyzw", "rgb"}
    xyzw, rgb = pc["xyzw"], pc["rgb"]
    assert xyzw.shape[1] == 4 and rgb.shape == (xyzw.shape[0], 3) and rgb.dtype == np.uint8
    valid = xyzw[:, 3] > 0
    assert valid.sum() > 1000
    assert np.ptp(xyzw[valid, :3], axis=0).min() > 0.1  # a real 3D scene, not a point
    assert rgb[valid].std() > 5


@pytest.mark.parametrize("obs_mode", ["state", "rgbd", "pointcloud"])
def test_fake_env_has_the_real_spaces(envs, obs_mode):
    real = _env(envs, obs_mode, "pd_ee_delta_pose")
    fake = make_env("PickCube-v0", obs_mode, "pd_ee_delta_pose", backend="fake")
    assert fake.action_space == real.action_space
    real_obs, _ = real.reset(seed=0)
    fake_obs, _ = fake.reset(seed=0)
    real_leaves = {k: (v.shape, v.dtype) for k, v in _leaves(real_obs)}
    fake_leaves = {k: (v.shape, v.dtype) for k, v in _leaves(fake_obs)}
    if obs_mode == "pointcloud":  # the real cloud size depends on the cameras; only the per-point width is fixed
        real_leaves = {k: (s[1:], d) if "pointcloud" in k else (s, d) for k, (s, d) in real_leaves.items()}
        fake_leaves = {k: (s[1:], d) if "pointcloud" in k else (s, d) for k, (s, d) in fake_leaves.items()}
    assert fake_leaves == real_leaves
    for name in ("pd_joint_pos", "pd_ee_delta_pos"):
        fake_space = make_env("PickCube-v0", "state", name, backend="fake").action_space
        real_space = make_env("PickCube-v0", "state", name).action_space
        assert fake_space.shape == real_space.shape
        np.testing.assert_allclose(fake_space.low, real_space.low, atol=1e-3)
        np.testing.assert_allclose(fake_space.high, real_space.high, atol=1e-3)
