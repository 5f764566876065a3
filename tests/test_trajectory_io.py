"""Demo pairs in ManiSkill2's format: round trip, atomic writes, and clear errors on bad files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from ms2core.errors import DemoFileError
from ms2core.trajectory import DemoPair, Episode, demo_digest, pair_paths, write_demo_pair
from storage_schemas.demos import EpisodeMeta

ENV_INFO = {"env_id": "PickCube-v0", "max_episode_steps": 200,
            "env_kwargs": {"obs_mode": "none", "control_mode": "pd_joint_pos"}}


def make_episode(episode_id: int, steps: int = 4, rng=None) -> Episode:
    rng = rng or np.random.default_rng(episode_id)
    return Episode(
        meta=EpisodeMeta(episode_id=episode_id, episode_seed=100 + episode_id, reset_kwargs={"seed": 100 + episode_id},
                         control_mode="pd_joint_pos", elapsed_steps=steps, info={"success": True}),
        actions=rng.normal(size=(steps, 8)).astype(np.float32),
        success=np.array([False] * (steps - 1) + [True]),
        env_states=rng.normal(size=(steps + 1, 10)).astype(np.float32),
    )


@pytest.fixture
def pair(tmp_path):
    write_demo_pair(tmp_path / "demo.h5", ENV_INFO, [make_episode(i, steps=3 + i) for i in range(3)])
    return tmp_path / "demo.h5"


def test_round_trip_keeps_everything(pair):
    with DemoPair(pair) as demos:
        assert len(demos) == 3 and demos.env_info.env_id == "PickCube-v0"
        assert demos.meta.control_mode == "pd_joint_pos"
        ep = demos.read_episode(2)
        expected = make_episode(2, steps=5)
        np.testing.assert_array_equal(ep.actions, expected.actions)
        np.testing.assert_array_equal(ep.env_states, expected.env_states)
        assert ep.meta.seed == 102 and ep.success[-1] and ep.num_steps == 5
    with h5py.File(pair) as f:  # exact ManiSkill2 key layout
        assert sorted(f["traj_0"].keys()) == ["actions", "env_states", "success"]
        assert f["traj_0/actions"].dtype == np.float32 and f["traj_0/success"].dtype == bool


def test_digest_changes_with_content(pair, tmp_path):
    d1 = demo_digest(pair)
    write_demo_pair(tmp_path / "other.h5", ENV_INFO, [make_episode(0, steps=3)])
    assert d1 != demo_digest(tmp_path / "other.h5") and len(d1) == 64


def test_truncated_h5_is_reported_with_the_file(pair):
    data = pair.read_bytes()
    pair.write_bytes(data[: len(data) // 3])
    with pytest.raises(DemoFileError, match=r"demo\.h5.*(truncated|corrupt|readable)"):
        DemoPair(pair)


def test_json_h5_episode_mismatch_names_the_episode(pair):
    json_path = pair_paths(pair)[1]
    meta = json.loads(json_path.read_text())
    meta["episodes"][1]["elapsed_steps"] = 99
    json_path.write_text(json.dumps(meta))
    with pytest.raises(DemoFileError, match="episode 1: json says elapsed_steps=99 but h5 has 4 actions"):
        DemoPair(pair)
    meta["episodes"].append({**meta["episodes"][0], "episode_id": 7})
    meta["episodes"][1]["elapsed_steps"] = 4
    json_path.write_text(json.dumps(meta))
    with pytest.raises(DemoFileError, match="episode 7: the json lists it but the h5 has no group traj_7"):
        DemoPair(pair)


def test_other_layout_is_rejected_with_the_keys_found(tmp_path):
    h5_path, json_path = pair_paths(tmp_path / "old.h5")
    with h5py.File(h5_path, "w") as f:
        f["traj_0/actions"] = np.zeros((2, 8), np.float32)
        f["traj_0/dones"] = np.zeros(2, bool)  # ManiSkill 1 style: no success/env_states
    json_path.write_text(json.dumps({"env_info": ENV_INFO, "episodes": [{"episode_id": 0, "elapsed_steps": 2}]}))
    with pytest.raises(DemoFileError, match=r"lacks success, env_states or env_init_state.*'actions', 'dones'"):
        DemoPair(h5_path)


def test_bad_json_and_missing_files(tmp_path, pair):
    with pytest.raises(DemoFileError, match="does not exist"):
        DemoPair(tmp_path / "nope.h5")
    pair_paths(pair)[1].write_text("{not json")
    with pytest.raises(DemoFileError, match="not valid JSON"):
        DemoPair(pair)
    pair_paths(pair)[1].write_text(json.dumps({"episodes": []}))
    with pytest.raises(DemoFileError, match="env_info"):
        DemoPair(pair)


def test_failed_write_leaves_no_file_that_looks_complete(tmp_path):
    def episodes():
        yield make_episode(0)
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_demo_pair(tmp_path / "x.h5", ENV_INFO, episodes())
    assert list(tmp_path.iterdir()) == []
