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
from tests.dashboards.sample_data import BC_UPDATES, NUM_POINTS, PPO_ENV_STEPS, TASK, SampleData, stored

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


def frame_with(at: AppTest, *columns: str):
    """The first table showing these columns."""
    return next(df.value for df in at.dataframe if set(columns) <= set(df.value.columns))


def all_cells(at: AppTest) -> str:
    return "\n".join(df.value.to_string() for df in at.dataframe)


def label(store) -> str:
    return f"{TASK} / {SampleData.name_of(store)}"


def success_at_end(store) -> np.ndarray:
    import zarr

    _, ends = stored(store)
    return zarr.open_group(str(store), mode="r")["data/success"][:][ends - 1]


def test_datasets_page_lists_datasets_with_manifest_and_validation_findings(dashboard_env):
    from storage_schemas.validation import ValidationReport

    store = dashboard_env.pointcloud_store
    manifest, ends = stored(store)
    at = run_page("datasets")
    assert at.selectbox(key="dataset").options == [label(dashboard_env.pointcloud_store), label(dashboard_env.rgbd_store),
                                                   label(dashboard_env.state_store)]
    shown = metrics(at)
    badges = at.markdown[0].value
    assert f"task: {TASK}" in badges and "obs mode: pointcloud" in badges and "control mode: pd_ee_delta_pose" in badges
    assert shown["Episodes"] == str(len(ends)) and shown["Transitions"] == str(ends[-1])
    assert shown["Success at end"] == f"{success_at_end(store).mean():.0%}"
    assert not at.warning  # the manifest parsed
    overview = at.dataframe[0].value
    assert set(overview["control mode"]) == {"pd_ee_delta_pose"} and set(overview["obs mode"]) == {"pointcloud", "rgbd", "state"}
    fields = dict(zip(*frame_with(at, "field", "value")[["field", "value"]].T.values))
    assert fields["source digest"] == manifest.source.digest and fields["dataset version"] == manifest.dataset_version
    options = frame_with(at, "option", "value")
    assert dict(zip(options["option"], options["value"]))["obs.n_points"] == str(NUM_POINTS)  # one row per option
    versions = frame_with(at, "package", "version")
    assert dict(zip(versions["package"], versions["version"])) == manifest.versions
    arrays = frame_with(at, "array", "shape").to_string()
    assert "data/obs/xyz" in arrays and f"({ends[-1]}, {NUM_POINTS}, 3)" in arrays
    # The validation report beside the store: verdict, counts and the findings table.
    written = ValidationReport.model_validate_json(store.with_name(store.name[:-5] + ".validation.json").read_text())
    assert shown["Verdict"] == "failed" and shown["Errors"] == str(written.n_errors) and shown["Warnings"] == str(written.n_warnings)
    findings = frame_with(at, "code", "severity")
    assert list(findings.columns[:5]) == ["code", "severity", "episode", "key", "index"]
    assert set(findings["code"]) == {f.code for f in written.findings} and "action_bounds" in set(findings["code"])


def test_point_cloud_is_subsampled_and_coloured_by_rgb_or_segmentation(dashboard_env):
    at = run_page("datasets")
    cloud = plotly_specs(at)[0]["data"][0]
    assert cloud["type"] == "scatter3d"
    assert len(trace_values(cloud, "x")) == NUM_POINTS  # fewer stored than the default 5000 drawn
    assert cloud["marker"]["color"][0].startswith("rgb(")
    at.radio(key="color_by").set_value("segmentation").run()
    cloud = plotly_specs(at)[0]["data"][0]
    assert len(set(cloud["marker"]["color"])) == 2  # the robot, and no segment
    at.select_slider(key="max_points").set_value(1000).run()
    assert len(trace_values(plotly_specs(at)[0]["data"][0], "x")) == 1000


def test_episode_viewer_reads_the_selected_episode(dashboard_env):
    store = dashboard_env.pointcloud_store
    _, ends = stored(store)
    success = success_at_end(store)
    at = run_page("datasets")
    at.number_input(key="episode").set_value(2).run()
    assert not at.exception
    shown = metrics(at)
    length = int(ends[2] - ends[1])
    assert shown["Episode length"] == f"{length} steps" and shown["Episode success"] == ("yes" if success[2] else "no")
    assert any("**Episode 2**" in m.value and f"transitions {ends[1]}–{ends[2] - 1}" in m.value for m in at.markdown)
    timeseries = plotly_specs(at)[-1]["data"]
    names = [t["name"] for t in timeseries]
    assert names[:7] == [f"a[{i}]" for i in range(7)] and "reward" in names and "success" in names
    assert len(trace_values(timeseries[names.index("reward")], "y")) == length
    other = int(np.flatnonzero(success != success[2])[0])  # the fixture has both outcomes
    at.number_input(key="episode").set_value(other).run()
    assert metrics(at)["Episode success"] == ("yes" if success[other] else "no")


def test_rgbd_dataset_shows_rgb_and_depth_of_each_camera(dashboard_env):
    at = run_page("datasets")
    at.selectbox(key="dataset").select(label(dashboard_env.rgbd_store)).run()
    assert not at.exception
    shown = metrics(at)
    _, ends = stored(dashboard_env.rgbd_store)
    assert "obs mode: rgbd" in at.markdown[0].value and shown["Episodes"] == str(len(ends)) and shown["Verdict"] == "passed"
    assert len(at.get("image")) == 2  # hand_camera and base_camera rgb
    assert not at.radio  # point-cloud controls only for point-cloud datasets
    depth_titles = [spec["layout"]["title"]["text"] for spec in plotly_specs(at) if spec["data"][0]["type"] == "heatmap"]
    assert depth_titles == ["hand_camera depth", "base_camera depth"]
    assert any("No findings" in s.value for s in at.success)


def test_training_page_labels_bc_by_updates_and_rl_by_env_steps(dashboard_env):
    from mlflow.tracking import MlflowClient

    at = run_page("training")
    assert at.selectbox(key="task").value == TASK
    runs_table = at.dataframe[0].value
    assert set(runs_table["run_name"]) == {"bc-default", "ppo-seed0", "ppo-seed1"}
    bc_success = MlflowClient(dashboard_env.tracking_uri).get_run(dashboard_env.bc_run_id).data.metrics["eval/success_rate"]
    assert bc_success in set(runs_table["eval/success_rate"])
    specs = {spec["layout"]["title"]["text"]: spec for spec in plotly_specs(at)}
    assert {"eval/success_rate", "success_rate", "mean_return", "train/loss"} <= set(specs)
    loss = specs["train/loss"]  # BC only: its x axis counts gradient updates
    assert loss["layout"]["xaxis"]["title"]["text"] == "updates"
    assert [t["name"] for t in loss["data"]] == ["bc-default (bc)"] and trace_values(loss["data"][0], "x")[-1] == BC_UPDATES
    ret = specs["mean_return"]  # PPO only: env steps
    assert ret["layout"]["xaxis"]["title"]["text"] == "env steps"
    assert {trace_values(t, "x")[-1] for t in ret["data"]} == {PPO_ENV_STEPS}
    mixed = specs["eval/success_rate"]  # both: each run names its unit
    assert mixed["layout"]["xaxis"]["title"]["text"] in ("updates / env steps", "env steps / updates")
    assert sorted(t["name"] for t in mixed["data"]) == ["bc-default (bc) [updates]", "ppo-seed0 (ppo) [env steps]",
                                                        "ppo-seed1 (ppo) [env steps]"]
    client = MlflowClient(dashboard_env.tracking_uri)
    by_name = {r.info.run_name: r.info.run_id
               for r in client.search_runs([client.get_experiment_by_name(TASK).experiment_id])}
    ppo_ids = [by_name["ppo-seed0"], by_name["ppo-seed1"]]
    at.multiselect(key="runs").set_value(ppo_ids).run()
    params = at.dataframe[-1].value  # only differing parameters by default: the two PPO runs differ in seed
    assert "run.seed" in params.index and "ppo.rollout_steps" not in params.index
    assert params.loc["run.seed"].tolist() == ["0", "1"]
    at.toggle(key="only_diff").set_value(False).run()
    assert "ppo.rollout_steps" in at.dataframe[-1].value.index


def test_models_page_shows_aliases_eval_results_and_video(dashboard_env):
    from mlflow.tracking import MlflowClient

    from storage_schemas.training import EvaluationResult

    client = MlflowClient(dashboard_env.tracking_uri, dashboard_env.tracking_uri)
    at = run_page("models")
    assert at.selectbox(key="model").options == [f"ms2-{TASK}-bc", f"ms2-{TASK}-ppo"]
    assert at.selectbox(key="model").value == f"ms2-{TASK}-bc"
    shown = metrics(at)
    assert shown["Versions"] == "1" and shown["Champion"] == "v1" and shown["Candidate"] == "v1"
    local = client.download_artifacts(dashboard_env.bc_run_id, "eval/results.json", str(dashboard_env.root / ".dl"))
    result = EvaluationResult.model_validate_json(open(local).read())
    s = result.success_once
    assert shown["success once"] == f"{s.mean:.2f} ({s.ci95_low:.2f}–{s.ci95_high:.2f})"
    assert shown["episodes"] == str(result.num_episodes)
    videos = at.get("video")
    assert len(videos) == result.num_episodes and videos[0].proto.url  # served as media files the browser can play
    assert any("eval/videos/episode_0.mp4" in c.value for c in at.caption)
    at.selectbox(key="model").select(f"ms2-{TASK}-ppo").run()
    name = f"ms2-{TASK}-ppo"
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    shown = metrics(at)
    assert shown["Versions"] == "2" and shown["Champion"] == f"v{champion}" and shown["Candidate"] == "v2"
    versions = next(df.value for df in at.dataframe if "aliases" in df.value.columns)
    assert dict(zip(versions["version"], versions["aliases"]))["v2"].startswith("candidate")


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
    at.query_params["dataset"] = label(dashboard_env.rgbd_store)
    at.query_params["episode"] = "1"
    at.run()
    assert not at.exception
    assert "obs mode: rgbd" in at.markdown[0].value
    assert any("**Episode 1**" in m.value for m in at.markdown)
    _, ends = stored(dashboard_env.rgbd_store)
    assert metrics(at)["Episode length"] == f"{ends[1] - ends[0]} steps"
