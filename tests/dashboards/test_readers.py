"""The dashboard's readers on real small files: bad inputs, partial stores, subsampling, artifact picking."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

from dashboards import read_datasets as rd
from dashboards import read_mlflow, read_prefect, server, sources
from tests.conftest import REPO_ROOT
from tests.dashboards.sample_data import BAD_ACTION_ROW, CAMERA_SIZE, NUM_POINTS, TASK, SampleData, stored
from tests.validate_fixtures import set_manifest


def entry_of(store) -> rd.DatasetEntry:
    return rd.DatasetEntry(env_id=store.parent.name, name=store.name[: -len(".zarr")], path=store)


def copy_of(store, tmp_path):
    import shutil

    target = tmp_path / "datasets" / TASK / store.name
    shutil.copytree(store, target)
    return target


def test_sources_follow_the_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path))
    assert sources.datasets_dir() == tmp_path / "datasets"
    assert sources.mlflow_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sources.prefect_api_url() == (sources.DEFAULT_PREFECT_API_URL, False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect:4200/api/")
    assert sources.mlflow_tracking_uri() == "http://mlflow:5000"
    assert sources.prefect_api_url() == ("http://prefect:4200/api", True)


def test_the_flows_default_tracking_uri_is_the_same(tmp_path, monkeypatch):
    from flows.settings import mlflow_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path))
    assert sources.mlflow_tracking_uri() == mlflow_tracking_uri()


def test_listing_skips_stores_without_metadata(sample_data, tmp_path):
    (tmp_path / "datasets" / TASK / "half-written.zarr").mkdir(parents=True)  # no zarr.json: not a store
    assert rd.list_datasets(tmp_path / "datasets") == []
    assert rd.list_datasets(tmp_path / "nothing-here") == []
    names = [e.name for e in rd.list_datasets(sample_data.root / "datasets")]
    assert SampleData.name_of(sample_data.pointcloud_store) in names and len(names) == 3


def test_store_without_episodes_or_manifest_summarizes_as_empty(tmp_path):
    store = tmp_path / "datasets" / TASK / "empty.zarr"
    zarr.open_group(str(store), mode="w", zarr_format=3)
    summary = rd.summarize(entry_of(store))
    assert summary.num_episodes == 0 and summary.manifest is None and summary.manifest_fields() == {}
    assert "no manifest" in summary.manifest_error and summary.render_option_rows() == []
    assert summary.obs_mode == "state"


def test_the_manifest_is_read_through_its_model(sample_data):
    """What the Datasets page shows is what pipelines.render stored (issue 17: it showed 'control mode: ?')."""
    manifest, ends = stored(sample_data.pointcloud_store)
    summary = rd.summarize(entry_of(sample_data.pointcloud_store))
    assert summary.manifest == manifest and summary.manifest_error is None
    assert (summary.task, summary.control_mode, summary.obs_mode) == (TASK, "pd_ee_delta_pose", "pointcloud")
    fields = summary.manifest_fields()
    assert fields["dataset version"] == manifest.dataset_version and fields["source digest"] == manifest.source.digest
    assert fields["episodes committed"].startswith(f"{len(ends)} of {len(manifest.episodes)}")
    options = {row["option"]: row["value"] for row in summary.render_option_rows()}
    assert options["obs.n_points"] == str(NUM_POINTS) and options["obs.include_seg"] == "True"
    assert options["backend"] == "fake" and options["camera_size"] == "(none)"  # one row per option, readable
    assert len(options) == len(rd._flatten(manifest.options.model_dump(mode="json")))
    versions = {row["package"]: row["version"] for row in summary.version_rows()}
    assert versions == manifest.versions and "zarr" in versions
    rgbd = {r["option"]: r["value"] for r in rd.summarize(entry_of(sample_data.rgbd_store)).render_option_rows()}
    assert rgbd["camera_size"] == " x ".join(map(str, CAMERA_SIZE))


def test_only_committed_episodes_count(sample_data, tmp_path):
    store = copy_of(sample_data.pointcloud_store, tmp_path)
    manifest, ends = stored(store)
    set_manifest(store, n_committed_episodes=2, n_committed_rows=int(ends[1]), complete=False)
    summary = rd.summarize(entry_of(store))
    assert summary.num_episodes == 2 and summary.num_transitions == int(ends[1]) and len(summary.episode_lengths) == 2
    assert summary.manifest_fields()["episodes committed"].startswith(f"2 of {len(manifest.episodes)}")
    with pytest.raises(IndexError, match="the dataset has 2 episodes"):
        rd.read_episode_series(entry_of(store), 2)


def test_a_manifest_of_another_schema_is_reported_not_guessed(sample_data, tmp_path):
    store = copy_of(sample_data.rgbd_store, tmp_path)
    set_manifest(store, env_id=TASK, control_mode="pd_ee_delta_pose")  # the keys the old dashboard invented
    summary = rd.summarize(entry_of(store))
    assert summary.manifest is None and "env_id" in summary.manifest_error and summary.manifest_fields() == {}
    assert summary.raw_manifest["env_id"] == TASK and summary.control_mode is None
    assert summary.obs_mode == "rgbd"  # inferred from the arrays


def test_episode_and_step_out_of_range_say_the_valid_range(sample_data):
    entry = entry_of(sample_data.pointcloud_store)
    _, ends = stored(sample_data.pointcloud_store)
    n = len(ends)
    with pytest.raises(IndexError, match=rf"episode {n} is out of range: the dataset has {n} episodes \(0..{n - 1}\)"):
        rd.read_episode_series(entry, n)
    with pytest.raises(IndexError, match=f"step {ends[0]} is out of range for episode 0 of length {ends[0]}"):
        rd.read_frame(entry, 0, int(ends[0]))


def test_episode_reads_only_its_rows(sample_data):
    entry = entry_of(sample_data.pointcloud_store)
    _, ends = stored(sample_data.pointcloud_store)
    series = rd.read_episode_series(entry, 1)
    assert (series.start, series.end, series.length) == (ends[0], ends[1], ends[1] - ends[0])
    root = zarr.open_group(str(sample_data.pointcloud_store), mode="r")
    np.testing.assert_array_equal(series.actions, root["data/actions"][ends[0]:ends[1]])
    assert series.terminated[-1] != series.truncated[-1] and not series.truncated[:-1].any()


def test_point_cloud_subsample_is_fixed_bounded_and_keeps_colours_and_labels(sample_data):
    idx = rd.subsample_indices(NUM_POINTS, 1000)
    assert len(idx) == 1000 and len(np.unique(idx)) == 1000 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, rd.subsample_indices(NUM_POINTS, 1000))
    np.testing.assert_array_equal(rd.subsample_indices(10, 5000), np.arange(10))
    frame = rd.read_frame(entry_of(sample_data.pointcloud_store), 0, 3, max_points=500)
    root = zarr.open_group(str(sample_data.pointcloud_store), mode="r")
    keep = rd.subsample_indices(NUM_POINTS, 500)
    np.testing.assert_array_equal(frame.xyz, root["data/obs/xyz"][3][keep])
    np.testing.assert_array_equal(frame.point_rgb, root["data/obs/rgb"][3][keep])
    assert frame.num_points_total == NUM_POINTS
    robot = root["data/obs/seg"][3][keep][:, 0]
    np.testing.assert_array_equal(frame.point_seg, np.where(robot, 0, -1))  # robot segment, or none


def test_rgbd_frame_splits_cameras_in_contract_order(sample_data):
    frame = rd.read_frame(entry_of(sample_data.rgbd_store), 1, 0)
    root = zarr.open_group(str(sample_data.rgbd_store), mode="r")
    _, ends = stored(sample_data.rgbd_store)
    width, height = CAMERA_SIZE
    assert list(frame.rgb_by_camera) == ["hand_camera", "base_camera"]
    assert frame.rgb_by_camera["base_camera"].shape == (height, width, 3)
    np.testing.assert_array_equal(frame.rgb_by_camera["base_camera"], root["data/obs/rgb"][ends[0]][..., 3:6])
    np.testing.assert_array_equal(frame.depth_by_camera["hand_camera"], root["data/obs/depth"][ends[0]][..., 0])
    assert frame.xyz is None


def test_camera_names_follow_the_contract_order():
    assert rd.camera_names(2) == ["hand_camera", "base_camera"]
    assert rd.camera_names(3) == ["hand_camera", "base_camera", "camera_2"]


def test_validation_report_is_read_through_its_model(sample_data, tmp_path):
    from storage_schemas.validation import ValidationReport

    report = rd.read_validation_report(entry_of(sample_data.pointcloud_store))
    written = ValidationReport.model_validate_json(rd.validation_report_path(entry_of(sample_data.pointcloud_store)).read_text())
    assert report.source.endswith(".pointcloud." + written.dataset_version + ".validation.json")
    assert (report.status, report.n_errors, report.n_warnings) == ("failed", written.n_errors, written.n_warnings)
    assert [f["code"] for f in report.findings] == [f.code for f in written.findings]
    bad = next(f for f in report.findings if f["code"] == "action_bounds")
    assert bad["row"] == BAD_ACTION_ROW and bad["value"] == "5.0" and bad["severity"] == "error"
    assert list(report.findings[0])[:5] == ["code", "severity", "episode", "key", "index"]
    # without the file, the summary record in the store's attrs
    store = copy_of(sample_data.rgbd_store, tmp_path)
    summary = rd.read_validation_report(entry_of(store))
    assert summary.source == "store attrs['ms2flow_validation']" and summary.status == "passed"
    assert not summary.full_report and summary.findings == []


def test_unreadable_or_foreign_reports_say_why(tmp_path):
    store = tmp_path / TASK / "x.zarr"
    zarr.open_group(str(store), mode="w", zarr_format=3)
    assert rd.read_validation_report(entry_of(store)) is None
    (tmp_path / TASK / "x.validation.json").write_text("{not json")
    broken = rd.read_validation_report(entry_of(store))
    assert "unreadable report" in broken.error and broken.status is None and broken.findings == []
    (tmp_path / TASK / "x.validation.json").write_text(json.dumps({"ok": False, "findings": ["free text"]}))
    foreign = rd.read_validation_report(entry_of(store))
    assert "does not match this version's schema" in foreign.error and foreign.report["ok"] is False


def test_artifact_picking_and_eval_headline(sample_data):
    from mlflow.tracking import MlflowClient

    from storage_schemas.training import EvaluationResult

    artifacts = ["eval/results.json", "eval/videos/episode_0.mp4", "config.json", "policy/MLmodel", "x/eval/more.json", "a.MP4"]
    assert read_mlflow.eval_json_paths(artifacts) == ["eval/results.json", "x/eval/more.json"]
    assert read_mlflow.video_paths(artifacts) == ["eval/videos/episode_0.mp4", "a.MP4"]
    assert read_mlflow.eval_headline({"success_rate": 0.5}) == {}  # not an EvaluationResult: shown raw
    client = MlflowClient(sample_data.tracking_uri)
    found = read_mlflow.list_artifacts_recursive(client, sample_data.bc_run_id)
    assert read_mlflow.video_paths(found), found  # the train-bc flow's evaluation videos
    results = read_mlflow.read_eval_results(client, sample_data.bc_run_id, found)
    stored_result = EvaluationResult.model_validate(results["eval/results.json"])
    headline = read_mlflow.eval_headline(results["eval/results.json"])
    s = stored_result.success_once
    assert headline["success once"] == f"{s.mean:.2f} ({s.ci95_low:.2f}–{s.ci95_high:.2f})"
    assert headline["episodes"] == str(stored_result.num_episodes) == "3"


def test_step_units_follow_the_algorithm():
    """BC logs its metrics by gradient update, the RL algorithms by env step (ms2core.algos)."""
    assert read_mlflow.step_unit("bc") == "updates"
    assert {read_mlflow.step_unit(a) for a in ("ppo", "dapg", "sac", "gail")} == {"env steps"}


def test_mlflow_store_is_never_created_by_the_dashboard(tmp_path):
    with pytest.raises(read_mlflow.StoreMissing):
        read_mlflow.client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()


def test_unreachable_prefect_api_is_a_value_not_an_exception():
    status = read_prefect.latest_flow_runs("http://127.0.0.1:9/api", timeout_s=1.0)
    assert not status.reachable and status.error and status.runs == []


def test_streamlit_runs_headless_without_telemetry():
    flags = server.streamlit_flags("127.0.0.1", 8765)
    pairs = dict(zip(flags[::2], flags[1::2]))
    assert pairs["--server.headless"] == "true" and pairs["--browser.gatherUsageStats"] == "false"
    assert pairs["--server.address"] == "127.0.0.1" and pairs["--server.port"] == "8765"
    assert server.APP_SCRIPT.is_file()


def test_cli_rejects_a_missing_data_dir(tmp_path):
    missing = tmp_path / "nope"
    done = subprocess.run([sys.executable, "-m", "flows.cli", "dashboard", "--data-dir", str(missing)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"--data-dir {missing} is not a directory" in done.stderr.replace("\n", "")
