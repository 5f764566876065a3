"""Control-mode conversion orchestration on the fake env: report, exclusions, ordering, idempotency, bad inputs."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import ms2core.envs.replay as replay_env
from ms2core.envs.fake import fake_action_space
from ms2core.errors import DemoFileError, UnsupportedModeError
from ms2core.trajectory import DemoPair, pair_paths
from pipelines import demos, replay
from storage_schemas.demos import GenerateDemosConfig, ReplayConfig, ReplayReport


@pytest.fixture
def source(tmp_path):
    cfg = GenerateDemosConfig(env_id="PickCube-v0", backend="fake", num_episodes=4, output=str(tmp_path / "src"),
                              progress=False)
    return demos.run(cfg).h5_path


def hold_still(h5_path, episode_ids):
    """In-bounds actions that never reach the goal (the middle of every pd_joint_pos joint range)."""
    space = fake_action_space("pd_joint_pos")
    with h5py.File(h5_path, "a") as f:
        for i in episode_ids:
            f[f"traj_{i}/actions"][...] = ((space.low + space.high) / 2).astype(np.float32)


def convert(path, **kw):
    return replay.run(ReplayConfig(input=str(path), backend="fake", progress=False,
                                   **{"target_control_mode": "pd_ee_delta_pose", **kw}))


def files_in(path):
    return sorted(p.name for p in path.iterdir())


def test_convert_writes_pair_and_report(source, tmp_path):
    result = convert(source)
    stem = tmp_path / "src.none.pd_ee_delta_pose"
    assert result.h5_path == str(stem) + ".h5" and result.report_path == str(stem) + ".report.json"
    report = ReplayReport.model_validate_json(open(result.report_path).read())
    assert report.num_converted == 4 and report.open_loop_successes == 4 and report.excluded == []
    assert report.source_control_mode == "pd_joint_pos" and report.target_control_mode == "pd_ee_delta_pose"
    with DemoPair(result.h5_path) as out, DemoPair(source) as src:
        assert out.env_info.env_kwargs["control_mode"] == "pd_ee_delta_pose"
        assert [e.seed for e in out.episodes] == [e.seed for e in src.episodes]
        assert [e.episode_id for e in out.episodes] == [0, 1, 2, 3]
        ep, sep = out.read_episode(1), src.read_episode(1)
        assert ep.meta.control_mode == "pd_ee_delta_pose" and ep.actions.shape == (sep.num_steps, 7)
        np.testing.assert_allclose(ep.actions[:, :3], sep.actions[:, :3] / 3.0, rtol=1e-6)
        assert ep.success[-1] and ep.env_states.shape == (ep.num_steps + 1, 10)


def test_convert_rerun_does_no_work_and_option_change_redoes(source, monkeypatch):
    first = convert(source)
    mtime = os.path.getmtime(first.h5_path)
    real = replay_env.EpisodeConverter.convert
    monkeypatch.setattr(replay_env.EpisodeConverter, "convert", lambda *a: pytest.fail("rerun must not simulate"))
    again = convert(source)
    assert again.skipped and again.digest == first.digest and os.path.getmtime(first.h5_path) == mtime
    monkeypatch.setattr(replay_env.EpisodeConverter, "convert", real)
    with pytest.raises(DemoFileError, match=r"(?s)already exists and was made from other inputs.*--overwrite"):
        convert(source, max_episodes=2)  # other options, same output: not replaced silently
    fewer = convert(source, max_episodes=2, overwrite=True)
    assert not fewer.skipped and fewer.report.num_episodes == 2


def test_failed_episodes_are_excluded_and_listed(source, tmp_path):
    hold_still(source, [2])  # episode 2 no longer reaches its goal
    result = convert(source)
    report = result.report
    assert report.num_converted == 3
    [bad] = report.excluded
    assert bad.episode_id == 2 and "without success" in bad.reason
    with DemoPair(result.h5_path) as out:
        assert [e.episode_id for e in out.episodes] == [0, 1, 3]
    extra = json.loads(pair_paths(result.h5_path)[1].read_text())["ms2flow"]
    assert extra["excluded_episode_ids"] == [2]


def test_wrong_action_width_is_excluded_with_reason(source, tmp_path):
    with h5py.File(source, "a") as f:
        n = f["traj_0/actions"].shape[0]
        del f["traj_0/actions"]
        f["traj_0/actions"] = np.zeros((n, 7), np.float32)
    with pytest.raises(DemoFileError, match=r"(?s)src\.h5 fails the demo-pair checks.*shape \(episode 0, key "
                                            r"traj_0/actions.*ms2 validate"):
        convert(source)  # the demo gate refuses it before any work
    forced = convert(source, force=True)  # forced through: the converter excludes it, the output records it
    [bad] = forced.report.excluded
    assert bad.episode_id == 0 and "shape" in bad.reason and "takes 8 numbers" in bad.reason
    extra = json.loads(pair_paths(forced.h5_path)[1].read_text())["ms2flow"]
    assert extra["demo_checks"] == "forced" and extra["demo_check_errors"] == ["shape"]


def test_no_episode_converting_writes_nothing(source, tmp_path):
    hold_still(source, range(4))
    before = files_in(tmp_path)
    with pytest.raises(DemoFileError, match=r"no episode converted.*nothing written"):
        convert(source)
    assert files_in(tmp_path) == before


def test_two_workers_give_the_same_output_in_order(source, tmp_path):
    one = convert(source, output=str(tmp_path / "one"))
    two = convert(source, output=str(tmp_path / "two"), num_workers=2)
    with DemoPair(one.h5_path) as a, DemoPair(two.h5_path) as b:
        assert [e.episode_id for e in a.episodes] == [e.episode_id for e in b.episodes] == [0, 1, 2, 3]
        for i in range(4):
            np.testing.assert_array_equal(a.read_episode(i).actions, b.read_episode(i).actions)
    assert [e.model_dump() for e in one.report.episodes] == [e.model_dump() for e in two.report.episodes]


def test_killed_replay_leaves_nothing_that_looks_complete(source, tmp_path, monkeypatch):
    real = replay_env.EpisodeConverter.convert
    calls = []

    def convert_then_die(self, episode):
        calls.append(episode.meta.episode_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, episode)

    monkeypatch.setattr(replay_env.EpisodeConverter, "convert", convert_then_die)
    before = files_in(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        convert(source)
    assert files_in(tmp_path) == before


# -- bad inputs: each names the file (and episode) and leaves no output ---------
def test_truncated_h5(source, tmp_path):
    data = open(source, "rb").read()
    open(source, "wb").write(data[: len(data) // 2])
    before = files_in(tmp_path)
    with pytest.raises(DemoFileError, match=r"src\.h5 is not a readable HDF5 file"):
        convert(source)
    assert files_in(tmp_path) == before


def test_corrupt_episode_data(source, tmp_path):
    with h5py.File(source, "a") as f:  # a compressed chunk whose bytes are garbage
        actions = f["traj_3/actions"][()]
        del f["traj_3/actions"]
        f.create_dataset("traj_3/actions", data=actions, chunks=actions.shape, compression="gzip")
        offset = f["traj_3/actions"].id.get_chunk_info(0).byte_offset
    with open(source, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 16)
    before = files_in(tmp_path)
    with pytest.raises(DemoFileError, match=r"src\.h5 episode 3: cannot read data"):
        convert(source)
    assert files_in(tmp_path) == before


def test_json_h5_episode_mismatch(source, tmp_path):
    json_path = pair_paths(source)[1]
    meta = json.loads(json_path.read_text())
    meta["episodes"][2]["elapsed_steps"] += 5
    json_path.write_text(json.dumps(meta))
    before = files_in(tmp_path)
    with pytest.raises(DemoFileError, match=r"src\.h5 episode 2: json says elapsed_steps=\d+ but h5 has"):
        convert(source)
    assert files_in(tmp_path) == before


def test_target_mode_the_robot_lacks(source, tmp_path):
    with pytest.raises(UnsupportedModeError, match=r"(?s)src\.json.*'pd_ee_delta_pse'.*did you mean pd_ee_delta_pose"):
        convert(source, target_control_mode="pd_ee_delta_pse")
    assert files_in(tmp_path) == ["src.h5", "src.json"]


def test_target_mode_not_convertible_from_the_source_mode(source, tmp_path):
    with pytest.raises(UnsupportedModeError, match=r"(?s)cannot convert pd_joint_pos demos of PickCube-v0 to "
                                                   r"'pd_joint_pos_vel'.*convertible targets"):
        convert(source, target_control_mode="pd_joint_pos_vel")
    first = convert(source)  # converted demos (end-effector mode) cannot be converted back to joint targets
    with pytest.raises(UnsupportedModeError, match=r"(?s)control mode 'pd_ee_delta_pose' cannot be converted"):
        convert(first.h5_path, target_control_mode="pd_joint_pos")


def test_unknown_env_id_names_the_json(source, tmp_path):
    json_path = pair_paths(source)[1]
    meta = json.loads(json_path.read_text())
    meta["env_info"]["env_id"] = "PickCub-v0"
    json_path.write_text(json.dumps(meta))
    with pytest.raises(DemoFileError, match=r"(?s)src\.h5 fails the demo-pair checks.*env_id \(key env_info.env_id, "
                                            r"value 'PickCub-v0'.*did you mean PickCube-v0"):
        convert(source)


def test_other_version_layout(source, tmp_path):
    with h5py.File(source, "a") as f:  # ManiSkill3 layout: env_states is a group, per-episode keys differ
        del f["traj_0/env_states"]
        f.create_group("traj_0/env_states/articulations").create_dataset("panda", data=np.zeros((3, 31)))
    with pytest.raises(DemoFileError, match=r"(?s)src\.h5 episode 0: env_states .*ManiSkill3"):
        convert(source)
    assert files_in(tmp_path) == ["src.h5", "src.json"]


def test_cli_replay_prints_summary_and_exclusions(source, tmp_path):
    from flows.cli import app

    hold_still(source, [1])
    res = CliRunner().invoke(app, ["replay", str(source), "--target-control-mode", "pd_ee_delta_pos",
                                   "--set", "backend=fake", "--set", "progress=false"])
    assert res.exit_code == 0, res.output
    assert "3/4 episodes converted pd_joint_pos -> pd_ee_delta_pos" in res.output
    assert "excluded episodes" in res.output and "without success" in res.output
    assert pair_paths(tmp_path / "src.none.pd_ee_delta_pos")[1].exists()
