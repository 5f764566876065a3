"""The per-step record a dataset stores (ms2core.envs.episode_sim) on the fake env: rewards are what
env.step returns from the recorded state, terminated/truncated keep ManiSkill2's meaning, render
stores exactly that, and stores written before render version 2 are refused with a re-render hint."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from ms2core.data.demo_dataset import open_demo_store
from ms2core.envs import make_env
from ms2core.envs.episode_sim import simulate_recorded_episode
from ms2core.errors import DatasetError
from ms2core.trajectory import Episode
from pipelines import render
from storage_schemas.dataset import RENDER_VERSION, DatasetManifest, RenderConfig
from storage_schemas.demos import EpisodeMeta
from tests.demo_fixtures import write_pair


def _record(env, seed: int, toward_goal: bool, n_steps: int, episode_id: int) -> Episode:
    """Drive the fake TCP toward the goal (succeeds, stops at termination) or away from it (cut at n_steps)."""
    env.reset(seed=seed)
    u = env.unwrapped
    states, actions, success = [u.get_state()], [], []
    for _ in range(n_steps):
        action = np.zeros(7, np.float32)
        action[:3] = np.clip((u._goal - u._tcp) / 0.05, -1, 1) if toward_goal else -np.sign(u._goal - u._tcp)
        _, _, terminated, _, info = env.step(action)
        actions.append(action)
        states.append(u.get_state())
        success.append(bool(info["success"]))
        if terminated:
            break
    meta = EpisodeMeta(episode_id=episode_id, episode_seed=seed, reset_kwargs={"seed": seed},
                       control_mode="pd_ee_delta_pose", elapsed_steps=len(actions), info={"success": success[-1]})
    return Episode(meta=meta, actions=np.stack(actions), success=np.array(success), env_states=np.stack(states))


@pytest.fixture
def env():
    return make_env("PickCube-v0", "state", "pd_ee_delta_pose", backend="fake", max_episode_steps=1000)


@pytest.fixture
def episodes(env):
    return [_record(env, 7, True, 30, 0), _record(env, 8, False, 9, 1)]


def _live_replay(env, episode: Episode):
    """What the env returns stepping each recorded action from its recorded state (reset to the seed first)."""
    env.reset(seed=episode.meta.seed)
    out = []
    for t, action in enumerate(episode.actions):
        env.unwrapped.set_state(episode.env_states[t])
        _, reward, terminated, truncated, info = env.step(action)
        out.append((reward, terminated, info["success"]))
    return out


def test_successful_episode_ends_terminated_and_a_cut_one_only_truncated_at_its_last_step(env, episodes):
    success, cut = (simulate_recorded_episode(env, ep, None) for ep in episodes)
    assert success.terminated[-1] and success.success[-1] and not success.truncated.any()
    assert not success.terminated[:-1].any()  # the recording stopped at the first termination
    assert not cut.terminated.any() and not cut.success.any()
    np.testing.assert_array_equal(cut.truncated, np.arange(9) == 8)


def test_rewards_and_flags_equal_env_step_from_the_recorded_state_bit_for_bit(env, episodes):
    other = make_env("PickCube-v0", "state", "pd_ee_delta_pose", backend="fake")
    for ep in episodes:
        sim = simulate_recorded_episode(env, ep, None)
        live = _live_replay(other, ep)
        assert sim.rewards.tolist() == [r for r, _, _ in live]
        assert sim.terminated.tolist() == [t for _, t, _ in live]
        assert sim.success.tolist() == [s for _, _, s in live]


def test_observations_are_taken_once_per_step_at_the_recorded_state(env, episodes):
    seen = []
    sim = simulate_recorded_episode(env, episodes[1], lambda e, raw: seen.append(e.unwrapped.get_state()) or len(seen))
    assert sim.observations == list(range(1, 10))
    np.testing.assert_array_equal(np.stack(seen), episodes[1].env_states[:-1])


def _render_cfg(source, tmp_path, **kw) -> RenderConfig:
    return RenderConfig.model_validate(dict(
        source=str(source), output_dir=str(tmp_path / "datasets"), workers=0, episodes_per_range=1, progress=False,
        options=dict(backend="fake", obs=dict(obs_mode="state")), **kw))


def test_render_stores_success_terminated_truncated_and_the_live_rewards(env, episodes, tmp_path):
    source = write_pair(tmp_path / "demos" / "pick.h5", "PickCube-v0", episodes)
    result = render.run(_render_cfg(source, tmp_path))
    root = zarr.open_group(result.store, mode="r")
    assert "dones" not in root["data"]
    n0 = episodes[0].num_steps
    terminated, truncated = root["data/terminated"][:], root["data/truncated"][:]
    assert terminated[n0 - 1] and not terminated[:n0 - 1].any() and not terminated[n0:].any()
    assert truncated.tolist() == [False] * (len(truncated) - 1) + [True]
    live = [r for ep in episodes for r, _, _ in _live_replay(env, ep)]
    np.testing.assert_array_equal(root["data/rewards"][:], np.asarray(live, np.float32))
    assert zarr.open_group(result.store, mode="r").attrs["ms2flow"]["render_version"] == RENDER_VERSION


def test_a_store_of_render_version_1_is_refused_by_render_and_by_the_reader(env, episodes, tmp_path):
    source = write_pair(tmp_path / "demos" / "pick.h5", "PickCube-v0", episodes)
    store = render.run(_render_cfg(source, tmp_path)).store
    root = zarr.open_group(store, mode="r+")
    raw = dict(root.attrs["ms2flow"])
    del raw["render_version"]  # what a store written before render version 2 holds
    root.attrs.update({"ms2flow": raw})
    with pytest.raises(DatasetError, match="render_version: 1 -> 2"):
        render.run(_render_cfg(source, tmp_path, store=store))
    old = DatasetManifest.model_validate(raw)
    assert old.identity()["render_version"] == 1  # so its version (and default store name) is not version 2's
    root.create_array("data/dones", data=root["data/terminated"][:] | root["data/truncated"][:])
    for key in ("terminated", "truncated"):
        del root[f"data/{key}"]
    with pytest.raises(DatasetError, match="rendered before render version 2") as err:
        open_demo_store(store)
    assert "re-render" in err.value.hint
