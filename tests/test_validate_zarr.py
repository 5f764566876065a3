"""Each defect injected into a real small Zarr dataset is reported with the right code, episode and key;
a clean dataset passes. Datasets come from fake-env demos rendered by tests/validate_fixtures.py."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipelines.validate import run
from storage_schemas.dataset import MANIFEST_ATTR
from storage_schemas.validation import ValidationConfig, ValidationReport
from tests.validate_fixtures import build, render_fake_dataset, set_manifest, write_array, write_rows


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    base = tmp_path_factory.mktemp("templates")
    return {mode: build(base / mode, mode) for mode in ("pointcloud", "rgbd", "state")}


@pytest.fixture
def dataset(templates, tmp_path):
    """A private copy (store + its source demos) of a template, defaults to pointcloud."""

    def make(mode: str = "pointcloud"):
        t = templates[mode]
        demos_dir = tmp_path / "demos"
        shutil.copytree(t.demos.parent, demos_dir)
        store = tmp_path / t.store.name
        shutil.copytree(t.store, store)
        set_manifest(store, source={**t.manifest.source.model_dump(mode="json"), "path": str(demos_dir / "pick")})
        return store

    return make


def validate(store: Path, **kw) -> ValidationReport:
    kw.setdefault("progress", False)
    return run(ValidationConfig(path=str(store), **kw)).report


def codes(report: ValidationReport) -> set[str]:
    return {f.code for f in report.findings}


def only(report: ValidationReport, code: str):
    found = [f for f in report.findings if f.code == code]
    assert found, f"no {code} finding; got {[(f.code, f.key, f.message) for f in report.findings]}"
    return found


def ends_of(store: Path) -> np.ndarray:
    return zarr.open_group(str(store), mode="r")["meta/episode_ends"][:]


@pytest.mark.parametrize("mode", ["pointcloud", "rgbd", "state"])
def test_clean_dataset_passes_with_replay(dataset, mode):
    store = dataset(mode)
    report = validate(store, replay_sample=4)
    assert report.status == "passed", [(f.code, f.key, f.message) for f in report.findings]
    assert report.n_errors == 0 and report.n_warnings == 0
    assert report.replayed_episodes == [0, 1, 2, 3]
    assert report.bytes_checked > 0 and report.n_rows == int(ends_of(store)[-1])
    assert {"non_finite", "action_bounds", "episode_ends", "replay_state"} <= set(report.checks_run)


def test_nan_in_state_reported_with_episode_key_and_step(dataset):
    store = dataset()
    ends = ends_of(store)
    row = int(ends[1]) + 2  # episode 2, step 2
    write_rows(store, "data/obs/state", row, np.nan)
    report = validate(store)
    (f,) = only(report, "non_finite")
    assert (f.episode, f.key, f.index, f.row, f.value, f.expected) == (2, "obs/state", 2, row, "nan", "finite")
    assert report.status == "failed" and report.n_errors >= 1


def test_inf_in_points_reported(dataset):
    store = dataset()
    write_rows(store, "data/obs/xyz", 0, np.inf)
    (f,) = only(validate(store), "non_finite")
    assert (f.episode, f.key, f.index) == (0, "obs/xyz", 0)


def test_action_outside_bounds(dataset):
    store = dataset()
    row = int(ends_of(store)[0])  # first step of episode 1
    write_rows(store, "data/actions", (row, 4), 3.5)
    (f,) = only(validate(store), "action_bounds")
    assert (f.episode, f.key, f.index, f.value, f.expected) == (1, "actions", 0, 3.5, [-1.0, 1.0])


def test_negative_depth(dataset):
    store = dataset("rgbd")
    write_rows(store, "data/obs/depth", (5, 0, 0, 0), -0.5)
    (f,) = only(validate(store), "depth")
    assert f.key == "obs/depth" and f.row == 5 and f.value == -0.5


def test_rgb_not_uint8(dataset):
    store = dataset("rgbd")
    root = zarr.open_group(str(store), mode="r+")
    rgb = root["data/obs/rgb"][:]
    root.create_array("data/obs/rgb", data=rgb.astype(np.float32), chunks=(4, *rgb.shape[1:]), overwrite=True)
    report = validate(store)
    assert {f.key for f in only(report, "rgb")} == {"obs/rgb"}
    assert any(f.code == "dtype" and f.key == "obs/rgb" for f in report.findings)  # and against the manifest


def test_point_count_differs_from_n_points(dataset, templates):
    store = dataset()
    options = templates["pointcloud"].manifest.options.model_dump(mode="json")
    options["obs"]["n_points"] = 100
    set_manifest(store, options=options)
    found = only(validate(store), "point_count")
    assert {f.key for f in found} == {"obs/xyz", "obs/rgb"} and found[0].value == 64 and found[0].expected == 100


def test_obs_key_of_another_mode(dataset):
    store = dataset()
    zarr.open_group(str(store), mode="r+").create_array("data/obs/depth", shape=(22, 2, 2, 1), dtype="float32",
                                                        chunks=(4, 2, 2, 1))
    report = validate(store)
    assert only(report, "obs_keys")[0].key == "obs/depth"
    assert only(report, "unexpected_array")[0].severity == "warning"


def test_missing_array(dataset):
    store = dataset()
    del zarr.open_group(str(store), mode="r+")["data/obs/xyz"]
    assert only(validate(store), "missing_array")[0].key == "obs/xyz"


def test_shape_against_manifest(dataset, templates):
    store = dataset()
    arrays = templates["pointcloud"].manifest.model_dump(mode="json")["arrays"]
    arrays["obs/state"]["row_shape"] = [40]
    set_manifest(store, arrays=arrays)
    (f,) = only(validate(store), "shape")
    assert (f.key, f.expected) == ("obs/state", [40])


def test_dtype_against_contract(dataset):
    store = dataset()
    root = zarr.open_group(str(store), mode="r+")
    rewards = root["data/rewards"][:]
    root.create_array("data/rewards", data=rewards.astype(np.float64), chunks=(4,), overwrite=True)
    found = only(validate(store), "dtype")
    assert {f.key for f in found} == {"rewards"} and found[0].value == "float64"


def test_array_shorter_than_committed_rows(dataset):
    store = dataset()
    zarr.open_group(str(store), mode="r+")["data/actions"].resize((10, 7))
    (f,) = only(validate(store), "length")
    assert (f.key, f.value, f.expected) == ("actions", 10, 22)


def test_episode_ends_not_increasing(dataset):
    store = dataset()
    ends = ends_of(store)
    bad = ends.copy()
    bad[2] = bad[1]
    zarr.open_group(str(store), mode="r+")["meta/episode_ends"][:] = bad
    report = validate(store)
    found = only(report, "episode_ends")
    assert found[0].key == "meta/episode_ends" and found[0].index == 2


def test_episode_ends_disagree_with_rows(dataset):
    store = dataset()
    ends = ends_of(store)
    ends[-1] -= 1
    zarr.open_group(str(store), mode="r+")["meta/episode_ends"][:] = ends
    found = only(validate(store), "episode_ends")
    assert any(f.value == 21 and f.expected == 22 for f in found)
    assert any(f.code == "episode_length" and f.episode == 3 for f in validate(store, recheck=True).findings)


def test_last_step_not_success(dataset):
    store = dataset()
    last = int(ends_of(store)[2]) - 1
    write_rows(store, "data/success", last, False)
    report = validate(store)
    (f,) = only(report, "success")
    assert (f.episode, f.key, f.index, f.value, f.expected) == (2, "success", last - int(ends_of(store)[1]), False,
                                                                True)
    assert only(report, "success_claim")[0].episode == 2  # the manifest said it succeeded
    # a dataset of any outcome does not require it, but the claim still disagrees
    report = validate(store, success_only=False)
    assert "success" not in codes(report) and "success_claim" in codes(report)


def test_episode_end_flags_neither_terminated_nor_truncated_or_truncated_early(dataset):
    store = dataset()
    ends = ends_of(store)
    last = int(ends[0]) - 1
    write_rows(store, "data/terminated", last, False)
    write_rows(store, "data/truncated", last, False)
    write_rows(store, "data/truncated", int(ends[1]) + 1, True)  # episode 2, step 1: not its last row
    found = only(validate(store), "dones")
    got = sorted((f.episode, f.index, f.key) for f in found)
    assert got == [(0, last, "truncated"), (2, 1, "truncated")]


def test_a_store_rendered_before_terminated_and_truncated_is_refused_with_a_rerender_hint(dataset):
    store = dataset()
    root = zarr.open_group(str(store), mode="r+")
    last = np.zeros(root["data/success"].shape[0], bool)
    last[ends_of(store) - 1] = True
    root.create_array("data/dones", data=root["data/success"][:] | last, chunks=(4,))
    for key in ("terminated", "truncated"):
        del root[f"data/{key}"]
    raw = dict(root.attrs[MANIFEST_ATTR])
    raw["arrays"] = {k: v for k, v in raw["arrays"].items() if k not in ("terminated", "truncated")}
    raw["arrays"]["dones"] = raw["arrays"]["success"]
    del raw["render_version"]  # written before the field existed
    root.attrs.update({MANIFEST_ATTR: raw})
    report = validate(store)
    assert report.status == "failed"
    found = {f.key: f for f in only(report, "old_layout")}
    assert set(found) == {"dones", "ms2flow.render_version"} and "re-render" in str(found["dones"].expected)
    assert found["ms2flow.render_version"].value == 1
    assert not codes(report) & {"missing_array", "unexpected_array"}


def test_duplicate_episode(tmp_path):
    from ms2core.trajectory import DemoPair, write_demo_pair
    from tests.validate_fixtures import record_fake_demos

    demos = record_fake_demos(tmp_path / "orig", n_episodes=3)
    with DemoPair(demos) as pair:
        episodes = list(pair.iter_episodes())
        env_info = pair.env_info
    copy = dataclasses.replace(episodes[1], meta=episodes[1].meta.model_copy(update={"episode_id": 3}))
    dup = write_demo_pair(tmp_path / "dup", env_info, [*episodes, copy],
                          extra_json={"ms2flow": {"key": {"backend": "fake"}}})[0].with_suffix("")
    store = render_fake_dataset(dup, tmp_path / "dup.zarr").store
    (f,) = only(validate(store), "duplicate")
    assert (f.episode, f.key, f.severity) == (3, "actions", "warning")
    assert validate(store).status == "passed"  # a warning does not fail the dataset


def test_provenance_changed_demos(dataset, tmp_path):
    store = dataset()
    js = tmp_path / "demos" / "pick.json"
    raw = json.loads(js.read_text())
    raw["note"] = "edited after rendering"
    js.write_text(json.dumps(raw))
    report = validate(store, replay_sample=2)
    assert only(report, "provenance")[0].key == "source.digest"
    assert "replay_skipped" in codes(report)


def test_provenance_missing_demos_is_a_warning(dataset, tmp_path):
    store = dataset()
    shutil.rmtree(tmp_path / "demos")
    report = validate(store)
    assert only(report, "provenance_missing")[0].severity == "warning"
    assert report.status == "passed"


def test_replay_detects_changed_state(dataset):
    store = dataset()
    row = int(ends_of(store)[0]) + 1  # episode 1 step 1
    state = zarr.open_group(str(store), mode="r")["data/obs/state"][:]
    state[row, 0] += 0.01  # plausible value written by a buggy writer: only replay can tell
    write_array(store, "data/obs/state", state)
    assert validate(store).status == "passed"
    (f,) = only(validate(store, replay_sample=4, recheck=True), "replay_state")
    assert (f.episode, f.key, f.index) == (1, "obs/state", 1)


def test_replay_detects_changed_action_reward_and_success(dataset):
    store = dataset()
    ends = ends_of(store)
    write_rows(store, "data/actions", (int(ends[1]) + 1, 0), 0.123)
    write_rows(store, "data/rewards", int(ends[2]) + 1, 0.5)
    write_rows(store, "data/success", int(ends[0]), True)  # episode 1 step 0
    write_rows(store, "data/terminated", 2, True)  # episode 0 step 2
    report = validate(store, replay_sample=4)
    assert only(report, "replay_actions")[0].episode == 2
    assert only(report, "replay_reward")[0].episode == 3
    assert only(report, "replay_success")[0].episode == 1
    (f,) = only(report, "replay_terminated")
    assert (f.episode, f.key, f.index, f.value, f.expected) == (0, "terminated", 2, True, False)


def test_replay_compares_rewards_bit_for_bit(dataset):
    store = dataset()
    row = int(ends_of(store)[1]) + 2  # episode 2 step 2
    rewards = zarr.open_group(str(store), mode="r")["data/rewards"][:]
    write_rows(store, "data/rewards", row, np.nextafter(rewards[row], np.float32(np.inf)))  # one ulp off
    (f,) = only(validate(store, replay_sample=4), "replay_reward")
    assert (f.episode, f.index) == (2, 2) and "bit for bit" in f.message


def test_unreadable_chunk_is_a_finding(dataset):
    store = dataset()
    chunk = store / "data" / "obs" / "state" / "c" / "2" / "0"  # rows 8-11
    chunk.write_bytes(b"\x00garbage" * 10)
    report = validate(store)
    (f,) = only(report, "unreadable")
    assert f.key == "obs/state" and f.row == 8
    assert f.episode is not None
    assert report.status == "failed"


def test_missing_or_invalid_manifest(dataset):
    store = dataset()
    root = zarr.open_group(str(store), mode="r+")
    raw = dict(root.attrs[MANIFEST_ATTR])
    raw["n_committed_rows"] = "many"
    root.attrs.put({MANIFEST_ATTR: raw})
    assert only(validate(store), "manifest_schema")[0].key == f"{MANIFEST_ATTR}.n_committed_rows"
    root.attrs.put({})
    report = validate(store)
    assert only(report, "manifest_schema")[0].key == MANIFEST_ATTR and report.status == "failed"


def test_incomplete_dataset_is_an_error(dataset):
    store = dataset()
    set_manifest(store, complete=False)
    report = validate(store)
    assert only(report, "incomplete")[0].severity == "error" and report.status == "failed"


def test_many_defects_are_capped_but_counted(dataset):
    store = dataset()
    write_rows(store, "data/obs/xyz", slice(None), np.nan)
    report = validate(store, max_findings_per_check=3)
    assert len([f for f in report.findings if f.code == "non_finite"]) == 3
    assert next(c for c in report.counts if c.code == "non_finite").count == 22  # every row


def test_not_a_store_is_a_finding_not_a_crash(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    report = validate(tmp_path / "x.zarr")
    assert only(report, "unreadable") and report.status == "failed"


def test_sharded_arrays_stream_and_a_broken_shard_is_located(tmp_path):
    built = build(tmp_path, "state", shard_chunks=2)  # shards of 8 rows (2 chunks of 4)
    assert validate(built.store, replay_sample=4).status == "passed"
    shard = built.store / "data" / "obs" / "state" / "c" / "1" / "0"  # rows 8-15
    blob = bytearray(shard.read_bytes())
    blob[10:20] = b"\xff" * 10  # inside the first chunk's compressed bytes
    shard.write_bytes(bytes(blob))
    report = validate(built.store)
    found = only(report, "unreadable")
    assert {f.key for f in found} == {"obs/state"} and min(f.row for f in found) == 8
