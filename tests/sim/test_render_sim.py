"""Render real PickCube-v0 demos (SAPIEN on the CPU): point clouds and RGB-D match what the env shows,
rewards equal env.step from the recorded states (and are close to the recorded rollout's), success matches,
Dask workers render real envs, and bad inputs fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from ms2core.envs import make_env
from ms2core.errors import DemoFileError, UnsupportedModeError
from ms2core.obs import process_observation
from ms2core.trajectory import DemoPair, pair_paths
from pipelines import render
from storage_schemas.dataset import ObsProcessConfig, RenderConfig
from tests.demo_fixtures import record_episode, sim_demo_pair, write_pair

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return sim_demo_pair(tmp_path_factory.mktemp("demos") / "pick.h5", n_episodes=2, n_steps=6)


def _cfg(demo, tmp_path, obs, workers=0, **options):
    return RenderConfig.model_validate(dict(
        source=str(demo), output_dir=str(tmp_path), workers=workers, episodes_per_range=1, progress=False,
        options=dict(obs=obs, camera_size=(48, 48), **options)))


def test_pointcloud_render_matches_the_env_and_the_recorded_rewards(demo, tmp_path):
    result = render.run(_cfg(demo, tmp_path, dict(obs_mode="pointcloud", n_points=256)))
    root = zarr.open_group(result.store, mode="r")
    with DemoPair(demo) as pair:
        episodes = list(pair.iter_episodes())
    ends = np.cumsum([e.num_steps for e in episodes])
    np.testing.assert_array_equal(root["meta/episode_ends"][:], ends)
    xyz, rgb = root["data/obs/xyz"][:], root["data/obs/rgb"][:]
    assert xyz.shape == (ends[-1], 256, 3) and rgb.shape == (ends[-1], 256, 3)
    assert (xyz[..., 2] >= 1e-3).all()  # ground removed
    assert np.ptp(xyz[0], axis=0).max() > 0.05 and rgb[0].std() > 3  # a real scene: robot and cube
    # Rewards are env.step(a_t) from the recorded (float32) state s_t, bit for bit; the recording rollout's own
    # rewards came from its unrounded states, so they agree only closely.
    live = make_env("PickCube-v0", "state", "pd_ee_delta_pose")
    replayed = []
    for e in episodes:
        live.reset(seed=e.meta.seed)
        for t, action in enumerate(e.actions):
            live.unwrapped.set_state(e.env_states[t])
            replayed.append(live.step(action)[1])
    live.close()
    np.testing.assert_array_equal(root["data/rewards"][:], np.asarray(replayed, np.float32))
    rewards = np.concatenate([e.extras["rewards"] for e in episodes])
    np.testing.assert_allclose(root["data/rewards"][:], rewards, atol=1e-2)
    np.testing.assert_array_equal(root["data/success"][:], np.concatenate([e.success for e in episodes]))
    # Row 0 state equals the env's own observation after reset with the recorded seed.
    env = make_env("PickCube-v0", "pointcloud", "pd_ee_delta_pose", camera_size=(48, 48))
    raw, _ = env.reset(seed=episodes[0].meta.seed)
    expected = process_observation(raw, ObsProcessConfig(obs_mode="pointcloud"))["state"]
    env.close()
    np.testing.assert_allclose(root["data/obs/state"][0], expected, atol=1e-4)


def test_rgbd_render_on_a_dask_worker_stacks_hand_then_base_camera(demo, tmp_path):
    result = render.run(_cfg(demo, tmp_path, dict(obs_mode="rgbd"), workers=1))
    root = zarr.open_group(result.store, mode="r")
    rgb, depth = root["data/obs/rgb"][:], root["data/obs/depth"][:]
    assert rgb.shape[1:] == (48, 48, 6) and depth.shape[1:] == (48, 48, 2) and depth.dtype == np.float16
    with DemoPair(demo) as pair:
        ep = pair.read_episode(1)
    env = make_env("PickCube-v0", "rgbd", "pd_ee_delta_pose", camera_size=(48, 48))
    env.reset(seed=ep.meta.seed)
    env.unwrapped.set_state(ep.env_states[2])
    from ms2core.obs import observe_env

    raw = observe_env(env)
    env.close()
    row = root["meta/episode_ends"][0] + 2
    hand, base = raw["image"]["hand_camera"], raw["image"]["base_camera"]
    # Same state, same picture (lavapipe is deterministic; allow a little rasteriser noise).
    assert np.abs(rgb[row, ..., :3].astype(int) - hand["rgb"].astype(int)).mean() < 2.0
    assert np.abs(rgb[row, ..., 3:].astype(int) - base["rgb"].astype(int)).mean() < 2.0
    # stored as float16 (RenderOptions.depth_dtype): rounded to 11 significant bits, ManiSkill2-Learn's precision
    np.testing.assert_allclose(depth[row, ..., 1].astype(np.float32), base["depth"][..., 0], rtol=2**-11, atol=1e-3)
    assert rgb[..., :3].std() > 5 and depth.std() > 1e-3


def test_options_the_task_cannot_honour_and_mismatched_states_fail_clearly(demo, tmp_path):
    env = make_env("StackCube-v0", "state", "pd_ee_delta_pose")
    stack = write_pair(tmp_path / "stack.h5", "StackCube-v0",
                       [record_episode(env, 0, 5, 2, np.random.default_rng(0))])
    env.close()
    with pytest.raises(UnsupportedModeError, match="n_goal_points=8 needs extra/goal_pos"):
        render.run(_cfg(stack, tmp_path, dict(obs_mode="pointcloud", n_goal_points=8)))
    # PickCube states replayed in a StackCube env (different state size): the episode is named.
    h5, js = pair_paths(demo)
    wrong = tmp_path / "wrong.h5"
    wrong.write_bytes(h5.read_bytes())
    pair_paths(wrong)[1].write_text(js.read_text().replace("PickCube-v0", "StackCube-v0"))
    # (refused by the demo gate at the start of render: the state dimension does not fit the task)
    with pytest.raises(DemoFileError, match=r"wrong\.h5 fails the demo-pair checks.*shape \(episode 0, "
                                            r"key traj_0/env_states.*have \[73\] components.*has \[70\]"):
        render.run(_cfg(wrong, tmp_path, dict(obs_mode="state")))


def test_kill_9_mid_render_on_the_real_simulator_then_rerun_equals_an_uninterrupted_run(tmp_path):
    import sys

    from tests.test_render import kill_resume_and_compare

    demo = sim_demo_pair(tmp_path / "demos" / "kill.h5", n_episodes=8, n_steps=5, seed=3)
    store = tmp_path / "killed.zarr"
    args = [sys.executable, "-m", "flows.cli", "render", str(demo), "--store", str(store), "--workers", "0",
            "--obs-mode", "pointcloud", "--set", "options.camera_size=[48,48]", "--set", "episodes_per_range=1",
            "--set", "progress=false"]
    kill_resume_and_compare(args, store, tmp_path / "fresh.zarr", min_committed=2, timeout_s=240)
