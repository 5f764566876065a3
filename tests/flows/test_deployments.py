"""A real Prefect server, `ms2 serve` serving every deployment, and `prefect deployment run train-bc/default`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture
def local_server(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "ms2data"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from flows.server import start_local_server

    server = start_local_server()
    yield server
    server.stop()


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_serve_and_trigger_train_bc_through_the_cli(local_server, tmp_path):
    from tests.flows.conftest import build_fake_dataset

    store = build_fake_dataset("state", num_episodes=6)
    env = {**os.environ, "PREFECT_API_URL": local_server.api_url, "MS2FLOW_DATA_DIR": str(tmp_path / "ms2data"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'ms2data' / 'mlflow.db'}"}
    import mlflow
    from mlflow.tracking import MlflowClient

    # Create the MLflow SQLite store (its migrations) here, before the served flow run opens it too: two
    # processes migrating one new SQLite file at once race (alembic: "expected to match one row").
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    MlflowClient().search_experiments()
    serve = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve"], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        config = {"env": {"env_id": "PickCube-v0", "obs_mode": "state", "backend": "fake"},
                  "dataset": {"paths": [str(store)], "mode": "ram", "prefetch_batches": 0},
                  "train": {"num_steps": 40, "batch_size": 32, "log_every_steps": 10,
                            "checkpoint_every_steps": 20},
                  "run": {"device": "cpu", "eval_episodes": 0, "run_name": "served"}}

        def deployment_ready():
            out = subprocess.run([sys.executable, "-m", "prefect", "deployment", "ls"], env=env,
                                 capture_output=True, text=True)
            return "train-bc/default" in out.stdout.replace("\n", "")

        _wait_for(deployment_ready, 180, "ms2 serve to register its deployments")
        trigger = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", "train-bc/default",
             "--param", "task=PickCube-v0", "--param", f"config={json.dumps(config)}",
             "--param", "eval_episodes=3"],
            env=env, capture_output=True, text=True, timeout=120)
        assert trigger.returncode == 0, trigger.stdout + trigger.stderr

        client = MlflowClient()

        def registered():
            try:
                return client.get_model_version_by_alias("ms2-PickCube-v0-bc", "champion")
            except Exception:  # noqa: BLE001 - not there yet
                return None

        version = _wait_for(registered, 400, "the served train-bc run to register a model")
        assert client.get_model_version_by_alias("ms2-PickCube-v0-bc", "candidate").version == version.version
        run = client.get_run(version.run_id)
        assert run.data.params["train.num_steps"] == "40" and run.data.tags["algo"] == "bc"
        losses = client.get_metric_history(run.info.run_id, "train/loss")
        assert [m.step for m in losses] == [10, 20, 30, 40]
        assert "eval/success_rate" in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"checkpoint", "eval", "config.yaml"} <= artifacts
        model = mlflow.pyfunc.load_model("models:/ms2-PickCube-v0-bc@champion")
        import numpy as np

        actions = model.predict({"state": np.zeros((2, 51), np.float32)})
        assert actions.shape == (2, 7)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
