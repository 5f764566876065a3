"""The ml2l layout on the real PickCube-v0, against an independent computation from the raw observation
with sapien's own Pose maths (what ManiSkill2-Learn uses), in the ee frame with 50 goal points and in rgbd."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.sim

N_ALL = 40000  # more than the 2 x 128 x 128 camera pixels: every visible point, repeated in order


def _stepped_raw(obs_mode: str):
    from ms2core.envs import make_env

    env = make_env("PickCube-v0", obs_mode, "pd_ee_delta_pose")
    raw, _ = env.reset(seed=7)
    rng = np.random.default_rng(7)
    for _ in range(4):  # move the arm off its rest pose so that the frames are not trivial
        raw, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
    env.close()
    return raw


def test_pickcube_pointcloud_ml2l_layout_equals_an_independent_computation():
    from sapien.core import Pose

    from ms2core.obs import process_observation
    from storage_schemas.dataset import ObsProcessConfig

    raw = _stepped_raw("pointcloud")
    agent, extra, pc = raw["agent"], raw["extra"], raw["pointcloud"]
    tcp = Pose(extra["tcp_pose"][:3], extra["tcp_pose"][3:])
    base = Pose(agent["base_pose"][:3], agent["base_pose"][3:])
    to_ee = tcp.inv()
    goal = np.asarray(extra["goal_pos"], np.float64)

    def in_ee(p):
        return to_ee.transform(Pose(np.asarray(p, np.float32))).p

    frame_states = np.stack([in_ee(base.p), in_ee(tcp.p), in_ee(goal), in_ee(goal - tcp.p)])  # last: as a point
    expected_state = np.concatenate([agent["qpos"], agent["qvel"], frame_states.ravel()])
    keep = (pc["xyzw"][:, 3] > 0.5) & (pc["xyzw"][:, 2] > 1e-4)
    matrix = to_ee.to_transformation_matrix()
    visible = pc["xyzw"][keep, :3] @ matrix[:3, :3].T + matrix[:3, 3]

    full = process_observation(raw, ObsProcessConfig(obs_layout="ml2l", obs_frame="ee", n_points=N_ALL),
                               np.random.default_rng(0))
    np.testing.assert_allclose(full["xyz"], np.resize(visible, (N_ALL, 3)), atol=2e-6)
    np.testing.assert_allclose(full["rgb"], np.resize(pc["rgb"][keep] / 255.0, (N_ALL, 3)), atol=1e-7)

    out = process_observation(raw, ObsProcessConfig(obs_layout="ml2l", obs_frame="ee", n_points=1200,
                                                    n_goal_points=50), np.random.default_rng(0))
    assert {k: v.shape for k, v in out.items()} == {"xyz": (1250, 3), "rgb": (1250, 3), "frame_related_states": (4, 3),
                                                    "to_frames": (2, 4, 4), "state": (30,)}
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out["frame_related_states"], frame_states, atol=2e-6)
    np.testing.assert_allclose(out["state"], expected_state, atol=2e-6)
    np.testing.assert_allclose(out["to_frames"], np.stack([(to_ee * base).inv().to_transformation_matrix(),
                                                           (to_ee * tcp).inv().to_transformation_matrix()]), atol=2e-6)
    assert np.linalg.norm(out["xyz"][1200:] - in_ee(goal), axis=1).max() <= np.sqrt(3) * 0.01 + 1e-5
    np.testing.assert_array_equal(out["rgb"][1200:], np.tile(np.float32([0, 1, 0]), (50, 1)))


def test_pickcube_rgbd_ml2l_layout_equals_an_independent_computation():
    from ms2core.obs import process_observation
    from storage_schemas.dataset import ObsProcessConfig

    raw = _stepped_raw("rgbd")
    agent, extra, images = raw["agent"], raw["extra"], raw["image"]
    tcp_to_goal = np.asarray(extra["goal_pos"], np.float64) - extra["tcp_pose"][:3]  # world frame
    expected_state = np.concatenate([agent["qpos"], agent["qvel"], agent["base_pose"], extra["tcp_pose"],
                                     extra["goal_pos"], tcp_to_goal]).astype(np.float32)
    out = process_observation(raw, ObsProcessConfig(obs_mode="rgbd", obs_layout="ml2l"))
    np.testing.assert_array_equal(out["state"], expected_state)
    cams = ("hand_camera", "base_camera")
    np.testing.assert_array_equal(out["rgb"], np.concatenate([images[c]["rgb"] for c in cams], axis=2).transpose(2, 0, 1))
    depth = np.concatenate([images[c]["depth"] for c in cams], axis=2).astype(np.float16).transpose(2, 0, 1)
    np.testing.assert_array_equal(out["depth"], depth)
    assert (out["rgb"].shape, out["depth"].dtype, out["state"].shape) == ((6, 128, 128), np.float16, (38,))
