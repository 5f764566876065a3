"""The pure checks on hand-made arrays (numbers worked out by hand), and the findings sink."""

from __future__ import annotations

import numpy as np

from ms2core.validation.checks import (
    RowLocator, check_block, check_duplicates, check_episode_ends, check_last_steps, expected_obs_keys, rules_for,
)
from ms2core.validation.findings import FindingSink, jsonable


def test_locator_maps_rows_to_episode_and_step():
    loc = RowLocator(np.array([3, 5, 9]), [10, 11, 12])
    assert [loc.locate(r) for r in (0, 2, 3, 4, 5, 8)] == [(10, 0), (10, 2), (11, 0), (11, 1), (12, 0), (12, 3)]
    assert loc.locate(9) == (None, None)  # past the committed rows
    assert RowLocator(None).locate(0) == (None, None)


def test_non_finite_and_bounds_in_one_block():
    sink = FindingSink()
    block = np.array([[0.0, 0.5], [np.nan, 0.0], [1.2, -1.0], [0.0, -1.0000001]], np.float32)
    rules = rules_for("actions", block.dtype, low=[-1, -1], high=[1, 1], bounds_tol=1e-5)
    check_block(sink, rules, block, start_row=10, locator=RowLocator(np.array([12, 20]), [0, 1]))
    got = sorted((f.code, f.row, f.episode, f.index, f.value) for f in sink.findings)
    # row 11: NaN (bounds ignore NaN); row 12: 1.2 > 1; row 13: -1.0000001 within the 1e-5 slack
    assert [g[:4] for g in got] == [("action_bounds", 12, 1, 0), ("non_finite", 11, 0, 11)]
    assert got[0][4] == np.float32(1.2).item() and got[1][4] == "nan"


def test_depth_negative_and_caps_with_exact_counts():
    sink = FindingSink(max_per_check=2)
    depth = np.zeros((5, 2, 2, 1), np.float32)
    depth[1:, 0, 0, 0] = -1
    check_block(sink, rules_for("obs/depth", depth.dtype), depth, 0, RowLocator(np.array([5])))
    assert [f.row for f in sink.findings] == [1, 2] and sink.total["depth"] == 4 and sink.n_errors == 4


def test_integer_arrays_are_not_checked_for_finiteness():
    sink = FindingSink()
    check_block(sink, rules_for("obs/rgb", np.dtype(np.uint8)), np.full((3, 4, 3), 255, np.uint8), 0,
                RowLocator(np.array([3])))
    assert not sink.findings


def test_episode_ends_rules():
    sink = FindingSink()
    assert check_episode_ends(sink, np.array([2, 5, 9]), 9)
    assert not sink.findings
    assert not check_episode_ends(sink, np.array([0, 5, 5, 4]), 4)
    got = sorted((f.index, f.value, f.expected) for f in sink.findings)
    assert got == [(0, 0, "> 0"), (2, 5, "> 5"), (3, 4, "> 5")]
    sink = FindingSink()
    check_episode_ends(sink, np.array([2, 5]), 6)
    (f,) = sink.findings
    assert (f.index, f.value, f.expected) == (1, 5, 6)


def test_last_steps_and_duplicates():
    sink = FindingSink()
    # (terminated, truncated) at the last rows: 7 neither, 8 truncated, 9 both
    ends = (np.array([False, False, True]), np.array([False, True, True]))
    check_last_steps(sink, [7, 8, 9], np.array([True, False, True]), ends, np.array([3, 4, 2]),
                     success_only=True, claimed_success=[True, True, None])
    got = sorted((f.code, f.episode, f.index) for f in sink.findings)
    assert got == [("dones", 7, 2), ("dones", 9, 1), ("success", 8, 3), ("success_claim", 8, 3)]
    sink = FindingSink()
    check_duplicates(sink, [0, 1, 2, 3], [5, 5, 6, 5], ["a", "b", "a", "a"])
    assert [(f.code, f.episode) for f in sink.findings] == [("duplicate", 3)]  # same seed 5 and digest "a" as 0


def test_expected_obs_keys_per_mode():
    assert expected_obs_keys("state") == {"obs/state"}
    assert expected_obs_keys("pointcloud", include_seg=True) == {"obs/state", "obs/xyz", "obs/rgb", "obs/seg"}
    assert expected_obs_keys("rgbd", include_depth=False) == {"obs/state", "obs/rgb"}


def test_sink_merge_keeps_caps_and_counts():
    a, b = FindingSink(max_per_check=1), FindingSink(max_per_check=1)
    a.add("non_finite", "x", key="k")
    b.add("non_finite", "y", key="k")
    b.add("duplicate", "z", key="k")
    a.merge(b)
    assert [f.message for f in a.findings] == ["x", "z"]
    assert a.n_errors == 2 and a.n_warnings == 1


def test_jsonable():
    assert jsonable(np.float32(np.inf)) == "inf" and jsonable(np.int64(3)) == 3
    assert jsonable(np.arange(3)) == [0, 1, 2] and jsonable(np.zeros((5, 5))) == "array(5, 5)"
