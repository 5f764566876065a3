"""Observation processing: the processed-observation contract, frames, downsampling, camera order."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from ms2core.envs import make_env
from ms2core.errors import UnsupportedModeError
from ms2core.obs import observe_env, ordered_cameras, process_observation, quat_to_matrix
from storage_schemas.dataset import ObsProcessConfig


def _raw_pointcloud(n=500, seed=0, with_seg=False):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-0.5, 0.5, (n, 3)).astype(np.float32)
    xyz[: n // 5, 2] = 0.0  # ground
    w = np.ones(n, np.float32)
    w[-10:] = 0.0  # nothing hit
    pc = OrderedDict(xyzw=np.column_stack([xyz, w]), rgb=rng.integers(0, 255, (n, 3), dtype=np.uint8))
    if with_seg:
        pc["robot_seg"] = (np.arange(n) % 3 == 0)[:, None]
    return OrderedDict(
        agent=OrderedDict(qpos=np.arange(9, dtype=np.float32), qvel=np.ones(9, np.float32),
                          base_pose=np.array([-0.615, 0, 0, 1, 0, 0, 0], np.float32)),
        extra=OrderedDict(tcp_pose=np.array([0.1, 0.2, 0.3, 0, 0, 0, 1], np.float32),  # 180 deg about z
                          goal_pos=np.array([0.0, 0.1, 0.2])),
        pointcloud=pc,
    )


def test_state_mode_passes_the_flat_vector_through():
    env = make_env("PickCube-v0", "state", backend="fake")
    raw, _ = env.reset(seed=0)
    out = process_observation(raw, ObsProcessConfig(obs_mode="state"))
    assert list(out) == ["state"] and out["state"].dtype == np.float32 and out["state"].shape == (51,)
    np.testing.assert_allclose(out["state"], raw.astype(np.float32))


def test_pointcloud_contract_ground_and_invalid_points_removed():
    raw = _raw_pointcloud()
    cfg = ObsProcessConfig(obs_mode="pointcloud", n_points=64)
    out = process_observation(raw, cfg, np.random.default_rng(0))
    assert list(out) == ["xyz", "rgb", "state"]
    assert out["xyz"].shape == (64, 3) and out["xyz"].dtype == np.float32
    assert out["rgb"].shape == (64, 3) and out["rgb"].dtype == np.uint8
    assert (out["xyz"][:, 2] >= cfg.ground_z_m).all()
    # Every kept point is a real, hit, non-ground input point with its own colour.
    src = raw["pointcloud"]
    lookup = {tuple(p[:3]): tuple(c) for p, c in zip(src["xyzw"], src["rgb"]) if p[3] > 0 and p[2] >= 1e-3}
    assert all(lookup[tuple(p)] == tuple(c) for p, c in zip(out["xyz"], out["rgb"]))
    # state = qpos, qvel, tcp_pose, goal_pos (no base_pose)
    assert out["state"].shape == (9 + 9 + 7 + 3,)
    np.testing.assert_allclose(out["state"][:9], np.arange(9))
    np.testing.assert_allclose(out["state"][-3:], [0.0, 0.1, 0.2], atol=1e-7)
    with_ground = process_observation(raw, cfg.model_copy(update={"remove_ground": False, "n_points": 2000}),
                                      np.random.default_rng(0))
    assert (with_ground["xyz"][:, 2] == 0).any()


def test_random_downsampling_is_reproducible_with_a_seeded_rng_and_pads_small_clouds():
    raw = _raw_pointcloud()
    cfg = ObsProcessConfig(obs_mode="pointcloud", n_points=100)
    a = process_observation(raw, cfg, np.random.default_rng(7))
    b = process_observation(raw, cfg, np.random.default_rng(7))
    c = process_observation(raw, cfg, np.random.default_rng(8))
    np.testing.assert_array_equal(a["xyz"], b["xyz"])
    assert not np.array_equal(a["xyz"], c["xyz"])
    big = process_observation(raw, cfg.model_copy(update={"n_points": 1200}), np.random.default_rng(0))
    assert big["xyz"].shape == (1200, 3)  # fewer visible points than asked: resampled up
    visible = ((raw["pointcloud"]["xyzw"][:, 3] > 0) & (raw["pointcloud"]["xyzw"][:, 2] >= 1e-3)).sum()
    assert len(np.unique(big["xyz"], axis=0)) == visible


def test_fps_spreads_points_wider_than_random():
    rng = np.random.default_rng(0)
    # A dense blob plus a sparse shell: FPS must reach the shell, random mostly samples the blob.
    blob = rng.normal(0, 0.01, (5000, 3)) + [0, 0, 0.5]
    shell = rng.uniform(-1, 1, (100, 3)) + [0, 0, 2]
    xyz = np.concatenate([blob, shell]).astype(np.float32)
    raw = _raw_pointcloud()
    raw["pointcloud"] = OrderedDict(xyzw=np.column_stack([xyz, np.ones(len(xyz), np.float32)]),
                                    rgb=np.zeros((len(xyz), 3), np.uint8))
    fps = process_observation(raw, ObsProcessConfig(obs_mode="pointcloud", n_points=50, downsample="fps"),
                              np.random.default_rng(0))
    rand = process_observation(raw, ObsProcessConfig(obs_mode="pointcloud", n_points=50), np.random.default_rng(0))
    assert (fps["xyz"][:, 2] > 1.0).sum() > 30 > (rand["xyz"][:, 2] > 1.0).sum()


def test_obs_frames_move_points_and_extra_poses():
    raw = _raw_pointcloud()
    cfg = ObsProcessConfig(obs_mode="pointcloud", n_points=32, remove_ground=False)
    world = process_observation(raw, cfg, np.random.default_rng(1))
    base = process_observation(raw, cfg.model_copy(update={"obs_frame": "base"}), np.random.default_rng(1))
    ee = process_observation(raw, cfg.model_copy(update={"obs_frame": "ee"}), np.random.default_rng(1))
    np.testing.assert_allclose(base["xyz"], world["xyz"] - np.array([-0.615, 0, 0], np.float32), atol=1e-6)
    # TCP frame: rotated 180 deg about z around (0.1, 0.2, 0.3)
    expected = (world["xyz"] - [0.1, 0.2, 0.3]) * [-1, -1, 1]
    np.testing.assert_allclose(ee["xyz"], expected, atol=1e-6)
    tcp_in_ee = ee["state"][18:25]
    np.testing.assert_allclose(tcp_in_ee[:3], 0, atol=1e-6)
    np.testing.assert_allclose(np.abs(tcp_in_ee[3]), 1, atol=1e-6)  # identity rotation
    np.testing.assert_allclose(ee["state"][25:28], (np.array([0, 0.1, 0.2]) - [0.1, 0.2, 0.3]) * [-1, -1, 1], atol=1e-6)


def test_goal_points_are_appended_around_the_goal():
    raw = _raw_pointcloud()
    cfg = ObsProcessConfig(obs_mode="pointcloud", n_points=40, n_goal_points=10)
    out = process_observation(raw, cfg, np.random.default_rng(0))
    assert out["xyz"].shape == (50, 3)
    goal = out["xyz"][40:]
    assert np.abs(goal - [0.0, 0.1, 0.2]).max() <= cfg.goal_point_radius_m + 1e-6
    assert (out["rgb"][40:] == [0, 255, 0]).all()


def test_pointcloud_seg_is_kept_aligned():
    raw = _raw_pointcloud(with_seg=True)
    out = process_observation(raw, ObsProcessConfig(obs_mode="pointcloud", n_points=64, include_seg=True),
                              np.random.default_rng(0))
    assert out["seg"].shape == (64, 1) and out["seg"].dtype == bool
    src = raw["pointcloud"]
    seg_of = {tuple(p[:3]): bool(s[0]) for p, s in zip(src["xyzw"], src["robot_seg"])}
    assert all(seg_of[tuple(p)] == bool(s[0]) for p, s in zip(out["xyz"], out["seg"]))
    with pytest.raises(UnsupportedModeError, match="robot_seg"):
        process_observation(_raw_pointcloud(), ObsProcessConfig(obs_mode="pointcloud", include_seg=True))


def test_rgbd_camera_order_is_fixed_regardless_of_dict_order():
    assert ordered_cameras(["base_camera", "zcam", "hand_camera", "acam"]) == [
        "hand_camera", "base_camera", "acam", "zcam"]
    env = make_env("PickCube-v0", "rgbd_robot_seg", camera_size=(16, 12), backend="fake")
    raw, _ = env.reset(seed=3)
    assert list(raw["image"]) == ["base_camera", "hand_camera"]  # the env's own order
    out = process_observation(raw, ObsProcessConfig(obs_mode="rgbd", include_seg=True))
    assert list(out) == ["rgb", "depth", "seg", "state"]
    assert out["rgb"].shape == (12, 16, 6) and out["rgb"].dtype == np.uint8
    assert out["depth"].shape == (12, 16, 2) and out["depth"].dtype == np.float32
    assert out["seg"].shape == (12, 16, 2) and out["seg"].dtype == bool
    np.testing.assert_array_equal(out["rgb"][..., :3], raw["image"]["hand_camera"]["rgb"])
    np.testing.assert_array_equal(out["rgb"][..., 3:], raw["image"]["base_camera"]["rgb"])
    no_depth = process_observation(raw, ObsProcessConfig(obs_mode="rgbd", include_depth=False))
    assert list(no_depth) == ["rgb", "state"]


def test_wrong_raw_observation_for_the_mode_is_a_clear_error():
    env = make_env("PickCube-v0", "state", backend="fake")
    raw, _ = env.reset(seed=0)
    with pytest.raises(UnsupportedModeError, match="needs a dict observation.*ndarray"):
        process_observation(raw, ObsProcessConfig(obs_mode="pointcloud"))
    rgbd_raw = make_env("PickCube-v0", "rgbd", backend="fake").reset(seed=0)[0]
    with pytest.raises(UnsupportedModeError, match="'pointcloud' key"):
        process_observation(rgbd_raw, ObsProcessConfig(obs_mode="pointcloud"))


def test_observe_env_matches_step_output():
    env = make_env("PickCube-v0", "pointcloud", backend="fake")
    env.reset(seed=0)
    stepped, *_ = env.step(env.action_space.sample())
    again = observe_env(env)
    np.testing.assert_array_equal(again["pointcloud"]["xyzw"], stepped["pointcloud"]["xyzw"])


def test_quaternion_matrix_is_a_rotation():
    q = np.array([0.9, 0.1, -0.3, 0.2])
    r = quat_to_matrix(q)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)
