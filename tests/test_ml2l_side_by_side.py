"""benchmarks/ml2l_side_by_side's comparisons, on files the project's writers make: an obs_layout ml2l render
(fake env) exported by ``export-h5`` against the same episodes written as ManiSkill2-Learn's convert_state
writes them (benchmarks/ml2l_h5). Equal data must read as equal, and a changed reward or flag must show."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import ml2l_h5, ml2l_side_by_side as side, storage_reads
from ms2core.data.store import DatasetStore
from pipelines import export, render
from storage_schemas.dataset import ExportConfig, RenderConfig
from tests.demo_fixtures import fake_demo_pair


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("side")
    demo = fake_demo_pair(tmp / "demos" / "pick.h5", n_episodes=4, steps=(6, 14))
    cfg = RenderConfig.model_validate(dict(
        source=str(demo), output_dir=str(tmp / "ds"), workers=0, episodes_per_range=4, progress=False,
        options=dict(backend="fake", camera_size=(16, 12), xyz_keep_bits=None,
                     obs=dict(obs_mode="pointcloud", obs_layout="ml2l", obs_frame="ee", n_points=64, n_goal_points=8))))
    store = render.run(cfg).store
    ours = export.run(ExportConfig(store=store, output=str(tmp / "ours.h5"))).output
    return tmp, store, ours, storage_reads.episodes_of(DatasetStore.open(store))


def test_the_same_episodes_compare_equal(rendered):
    tmp, store, ours, episodes = rendered
    theirs = ml2l_h5.write_ml2l_h5(tmp / "ml2l_same.h5", episodes)
    t, o = side._trajs(theirs), side._trajs(ours)
    rewards = side.compare_rewards(t, o)
    assert rewards["max_abs_diff"] == 0 and rewards["steps_differing"] == 0 and rewards["steps"] == sum(
        len(e["actions"]) for e in episodes)
    dones = side.compare_dones(t, store, o)
    assert {k: v for k, v in dones.items() if k.endswith("mismatches")} == dict.fromkeys(
        ["dones_vs_terminated_mismatches", "dones_vs_success_mismatches", "episode_dones_vs_episode_ends_mismatches",
         "cut_vs_truncated_mismatches"], 0)
    assert dones["ends_are_terminated_or_truncated"] and dones["is_truncated_exported_equal"]
    assert dones["ml2l_cut_episodes"] == dones["ms2_truncated_episodes"]
    assert dones["ml2l_terminated_episodes"] + dones["ml2l_cut_episodes"] == len(episodes)
    layout = side.compare_layout(theirs, ours)
    assert layout["only_ml2l"] == [] and layout["only_ms2"] == ["success"]  # worker_indices exported too
    assert layout["obs_keys"] == ["obs/frame_related_states", "obs/rgb", "obs/state", "obs/to_frames", "obs/xyz"]
    assert layout["shapes_and_dtypes_equal"] and layout["within_tolerance"] and layout["state_dim"] == 30
    assert layout["max_abs_diff"] == 0 and layout["xyz_centroid_mm"] == 0


def test_a_changed_reward_flag_or_array_shows(rendered):
    tmp, store, ours, episodes = rendered
    changed = [{k: v.copy() for k, v in e.items()} for e in episodes]
    changed[1]["rewards"][2] += 0.5
    changed[2]["success"][:] = ~changed[2]["success"]
    changed[0]["obs/state"][0, 3] += 1e-3
    theirs = ml2l_h5.write_ml2l_h5(tmp / "ml2l_changed.h5", changed)
    t, o = side._trajs(theirs), side._trajs(ours)
    rewards = side.compare_rewards(t, o)
    assert rewards["steps_differing"] == 1 and rewards["max_abs_diff"] == pytest.approx(0.5)
    dones = side.compare_dones(t, store, o)
    assert dones["dones_vs_terminated_mismatches"] == len(episodes[2]["actions"])
    layout = side.compare_layout(theirs, ours)
    assert layout["max_abs_diff_key"] == "obs/state" and not layout["within_tolerance"]
    result = dict(frames=10, rewards=rewards, dones=dones, layout=layout,
                  storage=dict(ms2_bytes_per_frame=1, ml2l_bytes_per_frame=2, size_ratio=0.5, ms2_random_per_s=4,
                               ml2l_random_per_s=2, random_ratio=2.0),
                  render=dict(ms2_1_frames_per_s=2, ml2l_1_frames_per_s=1, ratio_1=2.0))
    text = side.table({"pointcloud_ee": result})
    assert "| rewards: per-step max abs diff (steps differing) | 0.5 (1/" in text
    assert "| render frames/s, 2 process(es): ms2flow / ML2L (ratio) | - |" in text  # not measured: a dash
