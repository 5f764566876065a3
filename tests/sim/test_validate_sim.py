"""Validation against the real simulator: a PickCube-v0 demo recorded here (random actions, env states
from env.unwrapped.get_state()), its replay, real action bounds, and a Zarr dataset's state rows
re-derived without rendering (obs mode "none" + agent/extra)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ms2core.envs import make_env
from ms2core.trajectory import Episode, write_demo_pair
from pipelines.validate import run
from storage_schemas.demos import EnvInfo, EpisodeMeta
from storage_schemas.validation import ValidationConfig
from tests.validate_fixtures import render_fake_dataset

pytestmark = pytest.mark.sim
CONTROL_MODE = "pd_ee_delta_pose"


@pytest.fixture(scope="module")
def real_demos(tmp_path_factory):
    env = make_env("PickCube-v0", "none", CONTROL_MODE)
    u = env.unwrapped
    rng = np.random.default_rng(0)
    episodes = []
    for i, seed in enumerate((11, 12)):
        env.reset(seed=seed)
        states, actions, success = [u.get_state()], [], []
        for _ in range(8):
            action = rng.uniform(-0.5, 0.5, env.action_space.shape).astype(np.float32)
            _, _, _, _, info = env.step(action)
            actions.append(action)
            states.append(u.get_state())
            success.append(bool(info["success"]))
        meta = EpisodeMeta(episode_id=i, episode_seed=seed, reset_kwargs={"seed": seed}, control_mode=CONTROL_MODE,
                           elapsed_steps=len(actions))
        episodes.append(Episode(meta=meta, actions=np.asarray(actions), success=np.asarray(success),
                                env_states=np.asarray(states)))
    env.close()
    path = tmp_path_factory.mktemp("real") / "pick"
    write_demo_pair(path, EnvInfo(env_id="PickCube-v0", max_episode_steps=100,
                                  env_kwargs={"obs_mode": "none", "control_mode": CONTROL_MODE}), episodes)
    return path


def cfg(path, **kw):
    return ValidationConfig(path=str(path), success_only=False, progress=False, write_report=False, **kw)


def test_real_demo_replays_and_respects_bounds(real_demos, tmp_path):
    report = run(cfg(real_demos, replay_sample=2)).report
    assert report.status == "passed", [(f.code, f.key, f.message) for f in report.findings]
    assert report.replayed_episodes == [0, 1]
    # defects: a state that the actions do not lead to, an action beyond the controller's bounds
    broken = tmp_path / "pick"
    for suffix in (".h5", ".json"):
        broken.with_suffix(suffix).write_bytes(real_demos.with_suffix(suffix).read_bytes())
    with h5py.File(broken.with_suffix(".h5"), "r+") as f:
        s = f["traj_1/env_states"][()]
        s[4:, 0:3] += 0.05  # the cube's position (actor 0) jumps
        f["traj_1/env_states"][...] = s
        a = f["traj_0/actions"][()]
        a[2, 0] = 1.7
        f["traj_0/actions"][...] = a
    report = run(cfg(broken, replay_sample=2)).report
    found = {(f.code, f.episode, f.index) for f in report.findings}
    assert ("action_bounds", 0, 2) in found
    assert ("replay_state", 1, 4) in found


@pytest.mark.parametrize("obs_mode", ["state", "pointcloud"])
def test_real_zarr_state_rows_rederived(real_demos, tmp_path, obs_mode):
    built = render_fake_dataset(real_demos, tmp_path / f"real.{obs_mode}.zarr", obs_mode=obs_mode, n_points=128,
                                backend="sapien")
    report = run(cfg(built.store, replay_sample=2)).report
    assert report.status == "passed", [(f.code, f.key, f.message) for f in report.findings]
    assert report.replayed_episodes == [0, 1]
    import zarr

    from tests.validate_fixtures import write_array

    state = zarr.open_group(str(built.store), mode="r")["data/obs/state"][:]
    state[10, 0] += 0.01
    write_array(built.store, "data/obs/state", state)  # through the real writer: only replay can tell
    report = run(cfg(built.store, replay_sample=2)).report
    assert {(f.code, f.episode, f.index) for f in report.findings} == {("replay_state", 1, 2)}
