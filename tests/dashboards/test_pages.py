"""The dashboard's pages render real small data (Streamlit's AppTest client runs each page script).

Each test reads what a user would see: metric values, table cells, chart data,
alert texts; so removing a feature (manifest, findings, point cloud, curves,
aliases, eval results, videos, the Prefect note) fails a test.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboards.conftest import CLOSED_PORT_API
from tests.dashboards.sample_data import POINTCLOUD_NAME, PPO_SUCCESS_RATE, RGBD_NAME, TASK

TIMEOUT_S = 120


def page_test(name: str) -> AppTest:
    """The page as Streamlit runs it: dashboards.views.<name>.render() in a script run."""
    return AppTest.from_string(f"from dashboards.views import {name}\n{name}.render()\n", default_timeout=TIMEOUT_S)


def run_page(name: str) -> AppTest:
    at = page_test(name)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def trace_values(trace: dict, axis: str) -> np.ndarray:
    """Plotly sends numeric arrays as {'dtype', 'bdata'} (base64) or as plain lists."""
    value = trace[axis]
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value)


def all_cells(at: AppTest) -> str:
    return "\n".join(df.value.to_string() for df in at.dataframe)


def test_datasets_page_lists_datasets_with_manifest_and_validation_findings(dashboard_env):
    at = run_page("datasets")
    assert at.selectbox(key="dataset").options == [f"{TASK} / {POINTCLOUD_NAME}", f"{TASK} / {RGBD_NAME}"]
    shown = metrics(at)
    badges = at.markdown[0].value
    assert f"task: {TASK}" in badges and "obs mode: pointcloud" in badges and "control mode: pd_ee_delta_pose" in badges
    assert shown["Episodes"] == "3" and shown["Transitions"] == "36" and shown["Success at end"] == "67%"
    assert shown["Size on disk"].endswith("MB")
    cells = all_cells(at)
    assert "sha256:3f1c0ffee" in cells and "mani_skill2" in cells  # manifest: source digest, versions
    assert "data/obs/xyz" in cells and "(36, 6000, 3)" in cells  # array shapes
    # The validation report beside the store: verdict, counts and the findings table.
    assert shown["Verdict"] == "failed" and shown["Errors"] == "1" and shown["Warnings"] == "1"
    findings = next(df.value for df in at.dataframe if "severity" in df.value.columns)
    assert list(findings.columns[:5]) == ["code", "severity", "episode", "key", "message"]
    assert set(findings["code"]) == {"action_out_of_bounds", "constant_rgb"}


def test_point_cloud_is_subsampled_and_coloured_by_rgb_or_segmentation(dashboard_env):
    at = run_page("datasets")
    cloud = plotly_specs(at)[0]["data"][0]
    assert cloud["type"] == "scatter3d"
    assert len(trace_values(cloud, "x")) == 5000  # 6000 stored, at most 5000 drawn
    assert cloud["marker"]["color"][0].startswith("rgb(")
    at.radio(key="color_by").set_value("segmentation").run()
    cloud = plotly_specs(at)[0]["data"][0]
    colors = set(cloud["marker"]["color"])
    assert 3 <= len(colors) <= 4  # table (no segment), cube, gripper
    at.select_slider(key="max_points").set_value(1000).run()
    assert len(trace_values(plotly_specs(at)[0]["data"][0], "x")) == 1000


def test_episode_viewer_reads_the_selected_episode(dashboard_env):
    at = run_page("datasets")
    at.number_input(key="episode").set_value(2).run()
    assert not at.exception
    shown = metrics(at)
    assert shown["Episode length"] == "15 steps" and shown["Episode success"] == "yes"
    assert any("**Episode 2**" in m.value and "transitions 21–35" in m.value for m in at.markdown)
    timeseries = plotly_specs(at)[-1]["data"]
    names = [t["name"] for t in timeseries]
    assert names[:7] == [f"a[{i}]" for i in range(7)] and "reward" in names and "success" in names
    assert len(trace_values(timeseries[names.index("reward")], "y")) == 15
    at.number_input(key="episode").set_value(1).run()
    assert metrics(at)["Episode success"] == "no"


def test_rgbd_dataset_shows_rgb_and_depth_of_each_camera_and_report_from_attrs(dashboard_env):
    at = run_page("datasets")
    at.selectbox(key="dataset").select(f"{TASK} / {RGBD_NAME}").run()
    assert not at.exception
    shown = metrics(at)
    assert "obs mode: rgbd" in at.markdown[0].value and shown["Episodes"] == "2" and shown["Verdict"] == "passed"
    assert len(at.get("image")) == 2  # hand_camera and base_camera rgb
    assert not at.radio  # point-cloud controls only for point-cloud datasets
    depth_titles = [spec["layout"]["title"]["text"] for spec in plotly_specs(at) if spec["data"][0]["type"] == "heatmap"]
    assert depth_titles == ["hand_camera depth", "base_camera depth"]
    assert any("No findings" in s.value for s in at.success)


def test_training_page_overlays_runs_and_compares_parameters(dashboard_env):
    at = run_page("training")
    assert at.selectbox(key="task").value == TASK
    runs_table = at.dataframe[0].value
    assert set(runs_table["run_name"]) == {"bc-seed0", "ppo-seed0"}
    assert PPO_SUCCESS_RATE in set(runs_table["eval/success_rate"])
    specs = {spec["layout"]["title"]["text"]: spec for spec in plotly_specs(at)}
    assert {"eval/success_rate", "rollout/return", "train/loss"} <= set(specs)
    curves = specs["eval/success_rate"]["data"]
    assert sorted(t["name"] for t in curves) == ["bc-seed0 (bc)", "ppo-seed0 (ppo)"]
    ppo = next(t for t in curves if t["name"].startswith("ppo"))
    assert trace_values(ppo, "x")[-1] == 50_000 and trace_values(ppo, "y")[-1] == pytest.approx(PPO_SUCCESS_RATE)
    params = at.dataframe[-1].value  # only differing parameters by default
    assert {"lr", "batch_size", "algo"} <= set(params.index) and "seed" not in params.index
    assert params.loc["batch_size"].tolist() == ["2048", "256"] or params.loc["batch_size"].tolist() == ["256", "2048"]
    at.toggle(key="only_diff").set_value(False).run()
    assert "seed" in at.dataframe[-1].value.index


def test_models_page_shows_aliases_eval_results_and_video(dashboard_env):
    at = run_page("models")
    assert at.selectbox(key="model").value == f"ms2-{TASK}-ppo"
    shown = metrics(at)
    assert shown["Versions"] == "2" and shown["Champion"] == "v1" and shown["Candidate"] == "v2"
    versions = next(df.value for df in at.dataframe if "aliases" in df.value.columns)
    assert dict(zip(versions["version"], versions["aliases"])) == {"v1": "champion", "v2": "candidate"}
    assert dict(zip(versions["version"], versions["eval success rate"])) == {"v1": pytest.approx(0.85), "v2": pytest.approx(0.60)}
    assert at.selectbox(key="version").value == "1"  # the champion is shown first
    assert shown["success rate"] == "0.85" and shown["mean return"] == "27.40" and shown["mean episode length"] == "57.50"
    videos = at.get("video")
    assert len(videos) == 1 and videos[0].proto.url  # served as a media file the browser can play
    assert any("eval/videos/episode_0.mp4" in c.value for c in at.caption)


def test_pipeline_page_says_clearly_when_prefect_is_not_reachable(dashboard_env):
    at = run_page("pipeline")
    assert len(at.warning) == 1
    assert f"Prefect API not reachable at {CLOSED_PORT_API}" in at.warning[0].value


def test_empty_data_directory_gives_hints_and_creates_nothing(tmp_path, monkeypatch):
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path))
    assert "No datasets under" in run_page("datasets").info[0].value
    assert "No MLflow store yet" in run_page("training").info[0].value
    assert "No MLflow store yet" in run_page("models").info[0].value
    assert list(tmp_path.iterdir()) == []  # the dashboard only reads: no mlflow.db appears


def test_mlflow_server_down_is_reported_on_the_pages(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    from dashboards.read_mlflow import MLFLOW_CLIENT_ENV

    for key, value in MLFLOW_CLIENT_ENV.items():  # as dashboards.server sets them
        monkeypatch.setenv(key, value)
    for page in ("training", "models"):
        at = run_page(page)
        assert len(at.error) == 1 and "MLflow not reachable at `http://127.0.0.1:9`" in at.error[0].value


def test_dataset_and_episode_can_be_linked_by_url(dashboard_env):
    at = page_test("datasets")
    at.query_params["dataset"] = f"{TASK} / {RGBD_NAME}"
    at.query_params["episode"] = "1"
    at.run()
    assert not at.exception
    assert "obs mode: rgbd" in at.markdown[0].value
    assert any("**Episode 1**" in m.value for m in at.markdown)
    assert metrics(at)["Episode length"] == "8 steps"
