"""FrameMiner frames on the real PickCube-v0 point-cloud env: state layout and the TCP branch's transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.sim


def test_frames_from_the_real_envs_layout_match_the_renderers_ee_frame():
    from ms2core.envs import make_env
    from ms2core.nn.frameminer import Frame, cloud_in_frame, resolve_frames
    from ms2core.obs import process_observation, state_layout
    from storage_schemas.dataset import ObsProcessConfig

    env = make_env("PickCube-v0", "pointcloud", "pd_ee_delta_pose")
    try:
        frames = resolve_frames(["obs", "tcp", "goal"], state_layout(env.observation_space))
        assert frames == [Frame("obs"), Frame("tcp", 18, 21), Frame("goal", 25)]  # Panda: qpos 9, qvel 9
        env.reset(seed=1)
        raw, *_ = env.step(env.action_space.sample())
    finally:
        env.close()
    world = process_observation(raw, ObsProcessConfig(n_points=256), np.random.default_rng(0))
    ee = process_observation(raw, ObsProcessConfig(n_points=256, obs_frame="ee"), np.random.default_rng(0))
    mine = cloud_in_frame(torch.as_tensor(world["xyz"])[None], torch.as_tensor(world["state"])[None], frames[1])
    np.testing.assert_allclose(mine[0].numpy(), ee["xyz"], atol=1e-4)
