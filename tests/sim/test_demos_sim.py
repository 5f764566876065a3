"""Real SAPIEN: mplib demos for PickCube/LiftCube/StackCube, conversion by replay, ManiSkill2's tools on our files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ms2core.envs.replay import run_maniskill2_replay_tool
from ms2core.trajectory import DemoPair, pair_paths
from pipelines import demos, replay
from storage_schemas.demos import GenerateDemosConfig, ReplayConfig

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def pick_demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("pick") / "pick"
    return demos.run(GenerateDemosConfig(env_id="PickCube-v0", num_episodes=2, output=str(out), progress=False))


def test_generated_pickcube_demos_are_official_format_and_deterministic(pick_demos, tmp_path):
    assert pick_demos.num_episodes == 2 and pick_demos.success_rate > 0
    with DemoPair(pick_demos.h5_path) as pair:
        assert pair.env_info.env_kwargs == {"obs_mode": "none", "control_mode": "pd_joint_pos", "reward_mode": "dense"}
        assert pair.env_info.max_episode_steps == 200
        first = pair.read_episode(0)
        assert first.success[-1] and first.actions.shape[1] == 8 and first.num_steps <= 200
        assert first.env_states.shape[0] == first.num_steps + 1
        assert set(np.unique(first.actions[:, 7])) <= {-1.0, 1.0}  # gripper open / closed
    again = demos.run(GenerateDemosConfig(env_id="PickCube-v0", num_episodes=1, output=str(tmp_path / "again"),
                                          progress=False))
    with DemoPair(again.h5_path) as pair:
        np.testing.assert_array_equal(pair.read_episode(0).actions, first.actions)
        np.testing.assert_array_equal(pair.read_episode(0).env_states, first.env_states)


def test_a_demo_does_not_depend_on_the_seeds_its_worker_solved_before():
    from ms2core.envs.planner import EpisodeSolver

    worked = EpisodeSolver("PickCube-v0")
    for seed in (0, 1, 2):
        worked.solve(seed)
    after_others, alone = worked.solve(4), EpisodeSolver("PickCube-v0").solve(4)
    assert after_others.success and alone.success
    np.testing.assert_array_equal(after_others.episode.actions, alone.episode.actions)
    np.testing.assert_array_equal(after_others.episode.env_states, alone.episode.env_states)


def test_grasp_waits_only_until_the_fingers_settle(pick_demos):
    # Identical static "gripper closed, arm holding" states before the lift would teach a cloned policy a
    # fixed point; the planner stops actuating once the fingers stop moving (2-3 steps), not after 8.
    with DemoPair(pick_demos.h5_path) as pair:
        actions = pair.read_episode(0).actions
    close = int(np.argmax(actions[:, 7] < 0))
    held = 0
    while np.array_equal(actions[close + held, :7], actions[close, :7]):
        held += 1
    assert 2 <= held <= 4


def test_joint_target_noise_is_seeded_and_still_solves(pick_demos, tmp_path):
    cfg = dict(env_id="PickCube-v0", num_episodes=1, action_noise_rad=0.015, progress=False)
    noisy = demos.run(GenerateDemosConfig(**cfg, output=str(tmp_path / "noisy")))
    again = demos.run(GenerateDemosConfig(**cfg, output=str(tmp_path / "again"), num_workers=2))
    with DemoPair(pick_demos.h5_path) as clean, DemoPair(noisy.h5_path) as a, DemoPair(again.h5_path) as b:
        ea, eb, ec = a.read_episode(0), b.read_episode(0), clean.read_episode(0)
        assert ea.success[-1]
        np.testing.assert_array_equal(ea.actions, eb.actions)  # the seed decides the noise, not the worker
        n = min(len(ea.actions), len(ec.actions))
        deviation = np.abs(ea.actions[:n, :7] - ec.actions[:n, :7]).max()
        assert 0.005 < deviation < 0.2
    assert GenerateDemosConfig(**cfg).action_noise_rad == 0.015
    assert demos.default_generate_output(GenerateDemosConfig(**cfg)).name == "mplib.s0.n1.noise0.015.pd_joint_pos"


def test_planner_speed_solves_the_same_seed_in_fewer_larger_steps(pick_demos, tmp_path):
    fast = demos.run(GenerateDemosConfig(env_id="PickCube-v0", num_episodes=1, planner_speed=3.0, progress=False,
                                         output=str(tmp_path / "fast")))
    with DemoPair(pick_demos.h5_path) as clean, DemoPair(fast.h5_path) as quick:
        slow, rapid = clean.read_episode(0), quick.read_episode(0)
    assert rapid.success[-1] and rapid.meta.episode_seed == slow.meta.episode_seed
    assert len(rapid.actions) < 0.6 * len(slow.actions)
    step = lambda ep: np.abs(np.diff(ep.actions[:, :7], axis=0)).max(axis=1).mean()  # noqa: E731
    assert step(rapid) > 2 * step(slow)
    cfg = GenerateDemosConfig(env_id="PickCube-v0", num_episodes=1, planner_speed=3.0)
    assert demos.default_generate_output(cfg).name == "mplib.s0.n1.speed3.pd_joint_pos"
    # the speed is part of the cache key, and the default speed leaves the key of earlier demos as it was
    default = GenerateDemosConfig(env_id="PickCube-v0", num_episodes=1)
    assert demos._generation_key(cfg) != demos._generation_key(default)
    assert "planner_speed" not in demos._generation_key(default)


def test_convert_to_pd_ee_delta_pose_succeeds_in_closed_and_open_loop(pick_demos, tmp_path):
    result = replay.run(ReplayConfig(input=pick_demos.h5_path, target_control_mode="pd_ee_delta_pose",
                                     output=str(tmp_path / "ee"), progress=False))
    report = result.report
    assert report.num_converted == 2, report.excluded
    assert report.open_loop_successes == 2  # converted actions alone, from the seed, solve the task
    with DemoPair(result.h5_path) as pair:
        ep = pair.read_episode(0)
        assert ep.meta.control_mode == "pd_ee_delta_pose" and ep.actions.shape[1] == 7
        assert np.abs(ep.actions).max() <= 1.0 + 1e-6 and ep.success[-1]


@pytest.mark.parametrize("mode", ["pd_ee_delta_pos", "pd_joint_delta_pos"])
def test_convert_to_other_modes(pick_demos, tmp_path, mode):
    result = replay.run(ReplayConfig(input=pick_demos.h5_path, target_control_mode=mode, max_episodes=1,
                                     output=str(tmp_path / mode), progress=False))
    assert result.report.num_converted == 1 and result.report.open_loop_successes == 1


def test_maniskill2_replay_tool_reads_our_demos_and_we_read_its_output(pick_demos, tmp_path):
    copy = tmp_path / "ours.h5"
    for src, dst in zip(pair_paths(pick_demos.h5_path), pair_paths(copy)):
        shutil.copyfile(src, dst)
    out_h5 = run_maniskill2_replay_tool(str(copy), "pd_ee_delta_pose", count=1)
    with DemoPair(out_h5) as pair:  # RecordEpisode's output, read by our reader
        assert len(pair) == 1 and pair.meta.control_mode == "pd_ee_delta_pose"
        assert pair.read_episode(0).success[-1]


@pytest.mark.parametrize("env_id", ["LiftCube-v0", "StackCube-v0", "PegInsertionSide-v0"])
def test_planner_solves_lift_stack_and_peg_insertion(env_id, tmp_path):
    result = demos.run(GenerateDemosConfig(env_id=env_id, num_episodes=1, max_attempts=3,
                                           output=str(tmp_path / env_id), progress=False))
    with DemoPair(result.h5_path) as pair:
        assert pair.read_episode(0).success[-1]


def test_generator_refuses_tasks_it_has_no_planner_for(tmp_path):
    from ms2core.errors import UnsupportedModeError

    with pytest.raises(UnsupportedModeError, match=r"(?s)no motion-planning expert for 'PlugCharger-v0'.*demos import"):
        demos.run(GenerateDemosConfig(env_id="PlugCharger-v0", num_episodes=1, output=str(tmp_path / "x")))
    assert list(tmp_path.iterdir()) == []
