"""The scaled-out topology end to end (issue #11): flows through deployments on a Prefect server
backed by PostgreSQL, rendering on an external Dask scheduler with two workers, datasets and
MLflow artifacts in an S3-compatible object store; then faults: a Dask worker killed mid-render,
the Prefect worker restarted mid-flow, MLflow stopped during training. Fake backend, tiny configs.

The tests share one topology (module fixture) and run in file order: later tests use the dataset
of the first.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.services.topology import descendants

pytestmark = pytest.mark.services

ENV_ID = "PickCube-v0"
MODEL_NAME = f"ms2-{ENV_ID}-bc"


def demo_params(**overrides) -> dict:
    config = dict(backend="fake", num_episodes=6, workers=2, validate_replay_sample=1,
                  render={"obs": {"obs_mode": "state"}})
    return {"config": {**config, **overrides}}


def bc_params(store: str, run_name: str, num_steps: int = 200, log_every_steps: int = 20) -> dict:
    return {"config": {
        "env": {"env_id": ENV_ID, "obs_mode": "state", "control_mode": "pd_ee_delta_pose", "backend": "fake"},
        "dataset": {"paths": [store], "mode": "ram", "prefetch_batches": 0},
        "net": {"hidden_sizes": [32, 32]},
        "train": {"num_steps": num_steps, "batch_size": 16,
                  "log_every_steps": log_every_steps, "checkpoint_every_steps": max(num_steps // 4, 1)},
        "run": {"device": "cpu", "torch_threads": 1, "eval_episodes": 0, "run_name": run_name},
    }}


def stores_in(topology, prefix: str) -> list[str]:
    return sorted({f"s3://ms2flow/{k[: k.index('.zarr/') + 5]}" for k in topology.s3_keys(prefix) if ".zarr/" in k})


def states(topology, flow_run_id: str) -> dict[str, list[str]]:
    return {name: [r["state"]["name"] for r in runs] for name, runs in topology.task_runs(flow_run_id).items()}


def mlflow_client(topology):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=topology.mlflow_url, registry_uri=topology.mlflow_url)


@pytest.fixture(scope="module")
def shared(topology):
    """Results handed from one test to the next (the dataset the training tests use)."""
    return {}


# -- part 2: the integration --------------------------------------------------------------------
def test_demo_to_dataset_renders_on_the_scheduler_into_the_object_store(topology, shared):
    from distributed import Client

    from ms2core import zarr_io
    from pipelines import validate
    from storage_schemas.validation import ValidationConfig

    run_id = topology.run_deployment("demo-to-dataset/services", demo_params())
    run = topology.wait_flow_run(run_id)
    assert run["state"]["type"] == "COMPLETED", (run["state"], topology.services["prefect-worker"].log_tail())
    assert set(states(topology, run_id)) == {"generate-demos", "replay-demos", "render-dataset", "validate-dataset"}

    stores = stores_in(topology, f"datasets/{ENV_ID}/")
    assert len(stores) == 1, stores
    store = shared["store"] = stores[0]
    root = zarr_io.open_dataset(store, topology.storage_options())
    manifest = zarr_io.read_manifest(root)
    assert manifest.complete and manifest.n_committed_episodes == 6
    assert root["data/obs/state"].shape[0] == manifest.n_committed_rows
    # The flow's own validation report sits beside the store, and an independent validation passes.
    assert any(k.endswith(".zarr/validation.json") for k in topology.s3_keys(f"datasets/{ENV_ID}/"))
    report = validate.run(ValidationConfig(path=store, storage_options=topology.storage_options(), progress=False))
    assert report.report.status == "passed", report.report.findings[:3]
    # Rendered by the external workers (each keeps a cached env), not by a LocalCluster in the flow.
    with Client(topology.scheduler_address, timeout="10s") as client:
        cached = client.run(lambda: len(__import__("ms2core.envs.cache").envs.cache.PROCESS_CACHE))
    assert sum(cached.values()) >= 1, cached
    # Nothing went to the local data directory but demos: datasets live only in the object store.
    assert not list((topology.data_dir / "datasets").rglob("zarr.json"))
    assert list((topology.data_dir / "demos").rglob("*.h5"))


def _dataset(shared) -> str:
    if "store" not in shared:
        pytest.skip("needs the dataset that test_demo_to_dataset_renders_on_the_scheduler_into_the_object_store makes")
    return shared["store"]


def test_train_bc_tracks_and_registers_with_artifacts_in_the_object_store(topology, shared):
    store = _dataset(shared)
    run_id = topology.run_deployment("train-bc/services", bc_params(store, "services-bc"))
    run = topology.wait_flow_run(run_id)
    assert run["state"]["type"] == "COMPLETED", (run["state"], topology.services["prefect-worker"].log_tail())

    client = mlflow_client(topology)
    experiment = client.get_experiment_by_name(ENV_ID)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server's S3 destination
    (mlrun,) = client.search_runs([experiment.experiment_id], "tags.algo = 'bc'")
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["dataset.paths"] == str([store])
    losses = client.get_metric_history(mlrun.info.run_id, "train/loss")
    assert [m.step for m in losses] == list(range(20, 201, 20))
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id, "checkpoint")} == {"checkpoint/final.pt"}
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert len(versions) == 1 and versions[0].run_id == mlrun.info.run_id
    keys = topology.s3_keys("mlartifacts/")
    assert any(k.endswith(f"{mlrun.info.run_id}/artifacts/checkpoint/final.pt") for k in keys), keys[:20]
    model_keys = [k for k in keys if "/models/" in k]  # the registered pyfunc model (MLflow 3 logged model)
    assert any(k.endswith("/MLmodel") for k in model_keys) and any(k.endswith("/final.pt") for k in model_keys), keys
    shared["bc_metrics_steps"] = [m.step for m in losses]


# -- part 3: faults -----------------------------------------------------------------------------
def _render_cfg(topology, demo: Path, output_dir: str):
    from storage_schemas.dataset import RenderConfig

    return RenderConfig.model_validate(dict(
        source=str(demo), output_dir=output_dir, storage_options=topology.storage_options(),
        options=dict(backend="fake", obs=dict(obs_mode="pointcloud", n_points=256)),
        scheduler=topology.scheduler_address, episodes_per_range=1, progress=False))


def test_killing_a_dask_worker_mid_render_completes_with_identical_output(topology, tmp_path):
    from distributed import Client

    from ms2core import zarr_io
    from pipelines import render
    from tests.demo_fixtures import fake_demo_pair

    # Long enough that worker 1 still holds a range after the first commit: the render submits every range
    # at once, and 10 short episodes were sometimes all done by then.
    n = 24
    demo = fake_demo_pair(tmp_path / "kill.h5", n_episodes=n, steps=(60, 120))
    reference = render.run(_render_cfg(topology, demo, "s3://ms2flow/fault-reference"))
    assert reference.ranges_rendered == n

    cfg = _render_cfg(topology, demo, "s3://ms2flow/fault-killed")
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=render.run(cfg)), daemon=True)
    thread.start()
    store = reference.store.replace("fault-reference", "fault-killed")
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and thread.is_alive():
        try:
            manifest = zarr_io.read_manifest(zarr_io.open_dataset(store, topology.storage_options()))
            committed = manifest.n_committed_episodes
        except Exception:  # noqa: BLE001 - not created yet
            committed = 0
        if committed >= 1:
            break
        time.sleep(0.05)
    assert thread.is_alive() and 1 <= committed < n, f"render finished before the kill ({committed} committed)"
    with Client(topology.scheduler_address, timeout="10s") as client:
        address = {w["name"]: a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}["dask-worker-1"]
        while not client.processing(workers=[address])[address] and thread.is_alive():
            time.sleep(0.02)  # kill it while it holds a range
        in_flight = client.processing(workers=[address])[address]
    assert in_flight, "the render finished before worker 1 took another range"
    killed = topology.services["dask-worker-1"].signal_tree(signal.SIGKILL)  # the machine is gone: nanny too
    assert killed
    thread.join(180)
    assert not thread.is_alive(), "render did not finish after losing a worker"
    result = outcome["result"]
    assert result.n_episodes == n and result.ranges_rendered + result.ranges_reused >= n - committed
    assert topology.dask_workers() == ["dask-worker-2"]

    expected = zarr_io.open_dataset(reference.store, topology.storage_options())
    got = zarr_io.open_dataset(result.store, topology.storage_options())
    assert zarr_io.read_episode_ends(got).tolist() == zarr_io.read_episode_ends(expected).tolist()
    arrays = zarr_io.list_arrays(expected["data"])
    assert set(arrays) == set(zarr_io.list_arrays(got["data"]))
    for key, arr in arrays.items():
        np.testing.assert_array_equal(got["data"][key][:], arr[:], err_msg=key)
    assert "ranges" not in got  # no staging left behind
    topology.start_dask_worker("dask-worker-1")  # back to two workers for the next tests
    topology.wait_for_dask_workers(2)


def test_restarting_the_prefect_worker_crashes_the_run_and_a_rerun_reuses_finished_stages(topology):
    from ms2core import zarr_io

    params = demo_params(num_episodes=24, seed_start=1000,
                         render={"obs": {"obs_mode": "pointcloud", "n_points": 1024}})
    run_id = topology.run_deployment("demo-to-dataset/services", params)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # wait until the render stage is under way
        runs = topology.task_runs(run_id)
        render_runs = runs.get("render-dataset", [])
        if render_runs and render_runs[-1]["state"]["type"] == "RUNNING":
            break
        assert topology.flow_run(run_id)["state"]["type"] not in ("COMPLETED", "FAILED", "CRASHED")
        time.sleep(0.1)
    assert states(topology, run_id)["replay-demos"] == ["Completed"]
    # The render checks the demo pair (the demo gate) before it creates the store: kill it once the store
    # exists, not after a fixed pause (a second was once enough to reach the ranges, now not on a loaded machine).
    while time.monotonic() < deadline and not stores_in(topology, f"datasets/{ENV_ID}/mplib.s1000"):
        assert topology.flow_run(run_id)["state"]["type"] not in ("COMPLETED", "FAILED", "CRASHED")
        time.sleep(0.1)

    # A host/service restart: SIGTERM to the flow run the worker started, then to the worker; a new
    # worker comes up. (Flow run first: its logs go through a pipe to the worker, and a flow-run process
    # whose worker is already gone dies on SIGTERM without reporting, staying "Running" in the server.)
    worker = topology.services["prefect-worker"]
    flow_processes = [pid for pid in descendants(worker.proc.pid) if os.getpgid(pid) != worker.pgid]
    assert flow_processes, "the process worker runs the flow in its own process"
    for pid in flow_processes:
        os.kill(pid, signal.SIGTERM)
    crashed = topology.wait_flow_run(run_id, timeout_s=60)
    worker.stop(signal.SIGTERM)
    assert crashed["state"]["type"] == "CRASHED", crashed["state"]
    assert states(topology, run_id)["render-dataset"] == ["Crashed"]
    assert not zarr_io.read_manifest(zarr_io.open_dataset(
        stores_in(topology, f"datasets/{ENV_ID}/mplib.s1000")[0], topology.storage_options())).complete
    topology.start_prefect_worker("cpu")

    rerun_id = topology.run_deployment("demo-to-dataset/services", params)
    rerun = topology.wait_flow_run(rerun_id)
    assert rerun["state"]["type"] == "COMPLETED", rerun["state"]
    rerun_states = states(topology, rerun_id)
    assert rerun_states["generate-demos"] == ["Cached"] and rerun_states["replay-demos"] == ["Cached"], rerun_states
    (store,) = stores_in(topology, f"datasets/{ENV_ID}/mplib.s1000")
    manifest = zarr_io.read_manifest(zarr_io.open_dataset(store, topology.storage_options()))
    assert manifest.complete and manifest.n_committed_episodes == 24


def _metrics_file(topology, run_name: str) -> Path | None:
    found = list((topology.data_dir / "runs" / "bc").rglob(f"{run_name}/*/metrics.jsonl"))  # <run name>/<run id>/
    return found[0] if found else None


def _logged_steps(path: Path) -> list[int]:
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            pass  # a line being written
    return steps


def test_stopping_mlflow_during_training_loses_neither_metrics_nor_the_checkpoint(topology, shared):
    run_name = "services-bc-outage"
    # Long enough (~1 min on a quiet 2-core machine: the tiny MLP does ~1000 updates/s) that the outage
    # below starts and lasts well inside training; 10k steps once finished before MLflow was down.
    num_steps, every = 60000, 600
    run_id = topology.run_deployment("train-bc/services",
                                     bc_params(_dataset(shared), run_name, num_steps=num_steps, log_every_steps=every))
    deadline = time.monotonic() + 180
    metrics = None
    while time.monotonic() < deadline:
        metrics = _metrics_file(topology, run_name)
        if metrics and len(_logged_steps(metrics)) >= 1:
            break
        assert topology.flow_run(run_id)["state"]["type"] not in ("COMPLETED", "FAILED", "CRASHED")
        time.sleep(0.1)
    assert metrics is not None and len(_logged_steps(metrics)) < num_steps // every, "training ended too soon"

    topology.services["mlflow"].stop(signal.SIGTERM)
    assert not _port_open(topology.ports["mlflow"])
    seen = len(_logged_steps(metrics))
    assert seen < num_steps // every, "training finished before MLflow was stopped: lengthen it"
    outage_deadline = time.monotonic() + 30
    during = seen
    while during <= seen and time.monotonic() < outage_deadline:
        time.sleep(0.5)
        during = len(_logged_steps(metrics))
    assert during > seen, "training stalled while MLflow was down"
    topology.start_mlflow()
    topology.wait_for("mlflow", lambda: topology._http_ok(f"{topology.mlflow_url}/health"), 120)

    run = topology.wait_flow_run(run_id, timeout_s=600)
    assert run["state"]["type"] == "COMPLETED", (run["state"], topology.services["prefect-worker"].log_tail())
    assert (metrics.parent / "checkpoints" / "final.pt").exists() or list(metrics.parent.rglob("final.pt"))
    client = mlflow_client(topology)
    experiment = client.get_experiment_by_name(ENV_ID)
    (mlrun,) = client.search_runs([experiment.experiment_id], f"attributes.run_name LIKE '%{run_name}%'")
    history = [m.step for m in client.get_metric_history(mlrun.info.run_id, "train/loss")]
    assert history == list(range(every, num_steps + 1, every))  # buffered through the outage, none lost
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id, "checkpoint")} == {"checkpoint/final.pt"}


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def test_every_service_shuts_down(topology):
    ports = dict(topology.ports)
    topology.stop()
    print("stop seconds", {k: round(v, 1) for k, v in topology.stop_seconds.items()})
    assert topology.leftovers() == {}
    assert [name for name, port in ports.items() if _port_open(port)] == []
