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
from tests.dashboards.sample_data import NUM_POINTS, POINTCLOUD_NAME, TASK


def entry_of(store) -> rd.DatasetEntry:
    return rd.DatasetEntry(env_id=store.parent.name, name=store.name[: -len(".zarr")], path=store)


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
    assert POINTCLOUD_NAME in names and len(names) == 2


def test_store_without_episodes_or_manifest_summarizes_as_empty(tmp_path):
    store = tmp_path / "datasets" / TASK / "empty.zarr"
    zarr.open_group(str(store), mode="w", zarr_format=3)
    summary = rd.summarize(entry_of(store))
    assert summary.num_episodes == 0 and summary.manifest == {} and summary.known_manifest_fields() == {}
    assert summary.obs_mode == "state"


def test_episode_and_step_out_of_range_say_the_valid_range(sample_data):
    entry = entry_of(sample_data.pointcloud_store)
    with pytest.raises(IndexError, match=r"episode 3 is out of range: the dataset has 3 episodes \(0..2\)"):
        rd.read_episode_series(entry, 3)
    with pytest.raises(IndexError, match="step 12 is out of range for episode 0 of length 12"):
        rd.read_frame(entry, 0, 12)


def test_episode_reads_only_its_rows(sample_data):
    entry = entry_of(sample_data.pointcloud_store)
    series = rd.read_episode_series(entry, 1)
    assert (series.start, series.end, series.length) == (12, 21, 9)
    root = zarr.open_group(str(sample_data.pointcloud_store), mode="r")
    np.testing.assert_array_equal(series.actions, root["data/actions"][12:21])
    assert series.terminated[-1] != series.truncated[-1] and not series.truncated[:-1].any()


def test_point_cloud_subsample_is_fixed_bounded_and_keeps_colours_and_labels(sample_data):
    idx = rd.subsample_indices(NUM_POINTS, 5000)
    assert len(idx) == 5000 and len(np.unique(idx)) == 5000 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, rd.subsample_indices(NUM_POINTS, 5000))
    np.testing.assert_array_equal(rd.subsample_indices(10, 5000), np.arange(10))
    frame = rd.read_frame(entry_of(sample_data.pointcloud_store), 0, 3, max_points=500)
    root = zarr.open_group(str(sample_data.pointcloud_store), mode="r")
    keep = rd.subsample_indices(NUM_POINTS, 500)
    np.testing.assert_array_equal(frame.xyz, root["data/obs/xyz"][3][keep])
    np.testing.assert_array_equal(frame.point_rgb, root["data/obs/rgb"][3][keep])
    assert frame.num_points_total == NUM_POINTS
    assert set(np.unique(frame.point_seg)) == {-1, 0, 1}  # table (none), cube, gripper


def test_rgbd_frame_splits_cameras_in_contract_order(sample_data):
    frame = rd.read_frame(entry_of(sample_data.rgbd_store), 1, 0)
    assert list(frame.rgb_by_camera) == ["hand_camera", "base_camera"]
    assert frame.rgb_by_camera["base_camera"].shape == (64, 64, 3) and frame.depth_by_camera["hand_camera"].shape == (64, 64)
    assert frame.xyz is None


def test_camera_names_prefer_the_manifest():
    assert rd.camera_names({"cameras": ["left", "right"]}, 2) == ["left", "right"]
    assert rd.camera_names({"render_options": {"cameras": ["a"]}}, 1) == ["a"]
    assert rd.camera_names({"cameras": ["only-one"]}, 2) == ["hand_camera", "base_camera"]  # count mismatch
    assert rd.camera_names({}, 3) == ["hand_camera", "base_camera", "camera_2"]


def test_validation_report_file_beats_attrs_and_corrupt_file_is_reported(sample_data, tmp_path):
    report = rd.read_validation_report(entry_of(sample_data.pointcloud_store))
    assert report.source.endswith(f"{POINTCLOUD_NAME}.validation.json") and len(report.findings) == 2
    assert rd.read_validation_report(entry_of(sample_data.rgbd_store)).source == "store attrs['ms2flow_validation']"
    store = tmp_path / TASK / "x.zarr"
    zarr.open_group(str(store), mode="w", zarr_format=3)
    assert rd.read_validation_report(entry_of(store)) is None
    (tmp_path / TASK / "x.validation.json").write_text("{not json")
    broken = rd.read_validation_report(entry_of(store))
    assert "unreadable report" in broken.report["error"] and broken.findings == []
    (tmp_path / TASK / "x.validation.json").write_text(json.dumps({"findings": ["free text finding"]}))
    assert rd.read_validation_report(entry_of(store)).findings[0]["message"] == "free text finding"


def test_artifact_picking_and_eval_headline():
    artifacts = ["eval/results.json", "eval/videos/episode_0.mp4", "config.json", "policy/MLmodel", "x/eval/more.json", "a.MP4"]
    assert read_mlflow.eval_json_paths(artifacts) == ["eval/results.json", "x/eval/more.json"]
    assert read_mlflow.video_paths(artifacts) == ["eval/videos/episode_0.mp4", "a.MP4"]
    headline = read_mlflow.eval_headline({"success_rate": 0.5, "episode_lengths": [10, 20], "note": "x"})
    assert headline == {"success_rate": 0.5, "mean_episode_length": 15.0}


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
