"""Demo generation, import and merge orchestration on the fake env: ordering, determinism, idempotency, atomicity."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import ms2core.envs.planner as planner
from ms2core.errors import DemoFileError, UnknownEnvError
from ms2core.trajectory import DemoPair, demo_digest, pair_paths
from pipelines import demos
from storage_schemas.demos import GenerateDemosConfig, ImportDemosConfig, MergeDemosConfig


def generate(tmp_path, name="gen", **kw):
    cfg = GenerateDemosConfig(env_id="PickCube-v0", backend="fake", output=str(tmp_path / name), progress=False,
                              **{"num_episodes": 4, **kw})
    return demos.run(cfg)


def files_in(path):
    return sorted(p.name for p in path.iterdir())


def test_generate_writes_successful_episodes_in_seed_order(tmp_path):
    result = generate(tmp_path, seed_start=7)
    assert result.num_episodes == 4 and not result.skipped and result.success_rate == 1.0
    with DemoPair(result.h5_path) as pair:
        assert pair.env_info.env_kwargs["control_mode"] == "pd_joint_pos"
        seeds = [ep.seed for ep in pair.episodes]
        assert seeds == [7, 8, 9, 10]
        assert [ep.episode_id for ep in pair.episodes] == [0, 1, 2, 3]
        for i, meta in enumerate(pair.episodes):
            ep = pair.read_episode(i)
            assert meta.control_mode == "pd_joint_pos" and meta.reset_kwargs == {"seed": meta.episode_seed}
            assert ep.success[-1] and not ep.success[:-1].any()  # the episode ends at its first success
            assert ep.env_states.shape == (ep.num_steps + 1, 10)
    assert result.digest == demo_digest(result.h5_path)


def test_generate_keeps_only_successes_and_says_why_seeds_failed(tmp_path):
    # Two control steps cannot reach far goals: those seeds fail on the time limit and are not kept.
    result = generate(tmp_path, num_episodes=3, max_episode_steps=2, max_attempts=60)
    assert result.failed_seeds and all("time limit" in why for why in result.failed_seeds.values())
    assert result.seeds_tried == 3 + len(result.failed_seeds)
    with DemoPair(result.h5_path) as pair:
        kept = [ep.seed for ep in pair.episodes]
        assert not set(kept) & set(result.failed_seeds)
        assert kept == sorted(kept) and all(pair.read_episode(i).success[-1] for i in range(3))


def test_generate_is_the_same_with_two_workers(tmp_path):
    one = generate(tmp_path, name="one", num_episodes=3, max_episode_steps=3, max_attempts=40)
    two = generate(tmp_path, name="two", num_episodes=3, max_episode_steps=3, max_attempts=40, num_workers=2)
    assert one.failed_seeds == two.failed_seeds
    with DemoPair(one.h5_path) as a, DemoPair(two.h5_path) as b:
        assert [e.seed for e in a.episodes] == [e.seed for e in b.episodes]
        for i in range(len(a)):
            np.testing.assert_array_equal(a.read_episode(i).actions, b.read_episode(i).actions)
            np.testing.assert_array_equal(a.read_episode(i).env_states, b.read_episode(i).env_states)


def test_generate_rerun_does_no_work(tmp_path, monkeypatch):
    first = generate(tmp_path)
    mtime = os.path.getmtime(first.h5_path)
    monkeypatch.setattr(planner.EpisodeSolver, "solve", lambda *a: pytest.fail("rerun must not simulate"))
    again = generate(tmp_path)
    assert again.skipped and again.digest == first.digest and os.path.getmtime(first.h5_path) == mtime


def test_generate_redoes_an_incomplete_pair_and_clears_dead_temporaries(tmp_path):
    first = generate(tmp_path)
    h5_path, json_path = pair_paths(first.h5_path)
    json_path.unlink()  # a run killed between h5 and json: the pair is not complete
    stale = tmp_path / ".gen.h5.tmp-999999999"
    stale.write_bytes(b"half")
    again = generate(tmp_path)
    assert not again.skipped and json_path.exists() and not stale.exists()


def test_killed_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real_solve = planner.EpisodeSolver.solve

    def solve_then_die(self, seed):
        if seed == 2:
            raise KeyboardInterrupt  # the user's Ctrl-C mid-run
        return real_solve(self, seed)

    monkeypatch.setattr(planner.EpisodeSolver, "solve", solve_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path)
    assert files_in(tmp_path) == []


def test_generate_fails_clearly_when_too_few_seeds_succeed(tmp_path):
    with pytest.raises(DemoFileError, match=r"only \d+ of 5 episodes succeeded in 6 seeds.*nothing written"):
        generate(tmp_path, num_episodes=5, max_episode_steps=1, max_attempts=6)
    assert files_in(tmp_path) == []


def test_generate_rejects_unknown_env(tmp_path):
    with pytest.raises(UnknownEnvError, match="Nope-v0"):
        demos.run(GenerateDemosConfig(env_id="Nope-v0", backend="fake", output=str(tmp_path / "x")))


# -- import -------------------------------------------------------------------
def test_import_validates_registers_and_keeps_the_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    src = generate(tmp_path)
    record = demos.import_demos(ImportDemosConfig(path=src.h5_path, backend="fake", name="official"))
    assert record.h5_path == str(tmp_path / "data/demos/PickCube-v0/official.h5")
    assert record.digest == src.digest == demo_digest(record.h5_path)
    assert record.num_episodes == 4 and record.control_mode == "pd_joint_pos" and record.has_env_states
    again = demos.import_demos(ImportDemosConfig(path=src.h5_path, backend="fake", name="official"))
    assert again.skipped
    other = generate(tmp_path, name="other", seed_start=50)
    with pytest.raises(DemoFileError, match="already registered with different content"):
        demos.import_demos(ImportDemosConfig(path=other.h5_path, backend="fake", name="official"))


def test_import_rejects_a_control_mode_the_robot_lacks(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    src = generate(tmp_path)
    json_path = pair_paths(src.h5_path)[1]
    meta = json.loads(json_path.read_text())
    for ep in meta["episodes"]:
        ep["control_mode"] = "pd_base_vel"
    json_path.write_text(json.dumps(meta))
    with pytest.raises(DemoFileError, match=r"(?s)gen\.h5 fails the demo-pair checks.*control_mode.*pd_base_vel"):
        demos.import_demos(ImportDemosConfig(path=src.h5_path, backend="fake"))
    assert not (tmp_path / "data").exists()


def test_import_rejects_truncated_h5_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    src = generate(tmp_path)
    data = open(src.h5_path, "rb").read()
    open(src.h5_path, "wb").write(data[: len(data) // 2])
    with pytest.raises(DemoFileError, match=r"gen\.h5"):
        demos.import_demos(ImportDemosConfig(path=src.h5_path, backend="fake"))
    assert not (tmp_path / "data").exists()


def test_import_rejects_a_maniskill3_layout_naming_episode(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    src = generate(tmp_path)
    with h5py.File(src.h5_path, "a") as f:  # ManiSkill3 stores env_states as a group of per-actor arrays
        del f["traj_1/env_states"]
        f.create_group("traj_1/env_states/actors").create_dataset("cube", data=np.zeros((5, 13)))
    with pytest.raises(DemoFileError, match=r"(?s)gen\.h5 episode 1: env_states .*group.*ManiSkill3"):
        demos.import_demos(ImportDemosConfig(path=src.h5_path, backend="fake"))


# -- merge --------------------------------------------------------------------
def test_merge_renumbers_and_is_idempotent(tmp_path):
    a, b = generate(tmp_path, name="a", num_episodes=2), generate(tmp_path, name="b", num_episodes=3, seed_start=10)
    cfg = MergeDemosConfig(inputs=[a.h5_path, b.h5_path], output=str(tmp_path / "merged"))
    merged = demos.merge(cfg)
    with DemoPair(merged.h5_path) as pair, DemoPair(b.h5_path) as pb:
        assert [e.episode_id for e in pair.episodes] == [0, 1, 2, 3, 4]
        assert [e.seed for e in pair.episodes] == [0, 1, 10, 11, 12]
        np.testing.assert_array_equal(pair.read_episode(2).actions, pb.read_episode(0).actions)
    assert demos.merge(cfg).skipped


def test_merge_rejects_pairs_of_different_tasks(tmp_path):
    a = generate(tmp_path, name="a", num_episodes=1)
    b = demos.run(GenerateDemosConfig(env_id="LiftCube-v0", backend="fake", num_episodes=1,
                                      output=str(tmp_path / "b"), progress=False))
    with pytest.raises(DemoFileError, match=r"b\.json: env_info .* differs"):
        demos.merge(MergeDemosConfig(inputs=[a.h5_path, b.h5_path], output=str(tmp_path / "m")))
    assert not pair_paths(tmp_path / "m")[0].exists()


# -- CLI ----------------------------------------------------------------------
def test_cli_generate_and_import(tmp_path, monkeypatch):
    from flows.cli import app

    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    res = runner.invoke(app, ["demos", "generate", "-n", "2", "--output", str(tmp_path / "cli"),
                              "--set", "backend=fake", "--set", "progress=false"])
    assert res.exit_code == 0, res.output
    assert "2 episodes of PickCube-v0" in res.output and "digest" in res.output
    res = runner.invoke(app, ["demos", "generate", "-n", "2", "--output", str(tmp_path / "cli"),
                              "--set", "backend=fake", "--set", "progress=false"])
    assert "up to date" in res.output
    res = runner.invoke(app, ["demos", "import", str(tmp_path / "cli.h5"), "--no-check-env"])
    assert res.exit_code == 0 and "registered" in res.output
    res = runner.invoke(app, ["demos", "generate", "--set", "num_episods=3"])
    assert isinstance(res.exception, Exception) and "num_episodes" in str(res.exception)
