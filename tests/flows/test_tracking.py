"""MLflow tracking and registry against a real SQLite-backed store."""

from __future__ import annotations

import pytest

from flows.registry import CANDIDATE, CHAMPION, register_policy
from flows.tracking import MlflowSink, flatten_params, tracked_run


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MS2FLOW_MLFLOW_ARTIFACTS", (tmp_path / "artifacts").as_uri())
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def test_flatten_params_dots_nested_keys():
    assert flatten_params({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}) == {"a.b": "1", "a.c.d": "x", "e": "[1, 2]"}
    assert len(flatten_params({"long": "x" * 2000})["long"]) == 500


def test_run_params_and_buffered_metrics(mlflow_store):
    from mlflow.tracking import MlflowClient

    with tracked_run("PickCube-v0", "bc-test", {"train": {"lr": 0.001, "batch_size": 256}}) as run:
        sink = MlflowSink(run.info.run_id, flush_every=1000)
        for step in range(30):
            sink.log({"loss": 1.0 / (step + 1)}, step)
        assert sink.pending == 30  # batched, not sent one by one
        sink.close()
        assert sink.pending == 0
    client = MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.params["train.lr"] == "0.001"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == list(range(30))
    assert client.get_experiment_by_name("PickCube-v0").artifact_location.endswith("/PickCube-v0")


class _DownClient:
    def __init__(self):
        self.calls = 0

    def log_batch(self, run_id, metrics):
        self.calls += 1
        raise ConnectionError("tracking server down")


def test_sink_keeps_metrics_while_mlflow_is_down():
    client = _DownClient()
    sink = MlflowSink("run", client=client, flush_every=5)
    for step in range(12):
        sink.log({"loss": float(step)}, step)
    assert client.calls >= 2 and sink.pending == 12 and sink.failed_flushes >= 2
    sent = []
    client.log_batch = lambda run_id, metrics: sent.extend(metrics)  # server back
    assert sink.flush() and sink.pending == 0
    assert [m.step for m in sent] == list(range(12))


def test_champion_moves_only_on_a_better_success_rate(mlflow_store):
    import mlflow
    from mlflow.tracking import MlflowClient

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    uris = []
    for i in range(3):
        with tracked_run("PickCube-v0", f"r{i}", {}):
            uris.append(mlflow.pyfunc.log_model(name="policy", python_model=Constant()).model_uri)
    client = MlflowClient()
    first = register_policy(uris[0], "PickCube-v0", "bc", 0.5)
    assert first.champion_moved and first.name == "ms2-PickCube-v0-bc"
    worse = register_policy(uris[1], "PickCube-v0", "bc", 0.4)
    assert not worse.champion_moved
    assert str(client.get_model_version_by_alias(worse.name, CANDIDATE).version) == worse.version
    assert str(client.get_model_version_by_alias(worse.name, CHAMPION).version) == first.version
    better = register_policy(uris[2], "PickCube-v0", "bc", 0.7)
    assert better.champion_moved
    assert str(client.get_model_version_by_alias(better.name, CHAMPION).version) == better.version


class _BlockingClient:
    """log_batch blocks until released, as MLflow's client does while it retries a down server."""

    def __init__(self):
        import threading

        self.release = threading.Event()
        self.entered = threading.Event()
        self.sent = []

    def log_batch(self, run_id, metrics):
        self.entered.set()
        if not self.release.wait(30):
            raise ConnectionError("still down")
        self.sent.extend(metrics)


def test_background_sink_never_blocks_training_on_a_stalled_server():
    import time

    client = _BlockingClient()
    sink = MlflowSink("run", client=client, flush_every=5, background=True)
    started = time.monotonic()
    for step in range(50):
        sink.log({"loss": float(step)}, step)
    assert client.entered.wait(10)  # the sender thread is stuck in the "server"
    for step in range(50, 100):
        sink.log({"loss": float(step)}, step)
    assert time.monotonic() - started < 5  # logging went on while the send hung
    assert sink.pending > 0
    client.release.set()  # the server is back
    sink.close()
    assert sink.pending == 0
    assert [m.step for m in client.sent] == list(range(100))  # every metric, in order, none twice


def test_background_sink_close_gives_up_after_its_timeout(caplog):
    client = _BlockingClient()
    sink = MlflowSink("run", client=client, flush_every=1, background=True, close_timeout_s=0.5)
    sink.log({"loss": 1.0}, 0)
    assert client.entered.wait(10)
    with caplog.at_level("WARNING", logger="flows.tracking"):
        sink.close()
    assert "metrics not sent" in caplog.text
    client.release.set()


def test_artifact_root_is_the_servers_choice_for_a_tracking_server(tmp_path, monkeypatch):
    from flows.settings import mlflow_artifact_root

    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MS2FLOW_MLFLOW_ARTIFACTS", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert mlflow_artifact_root() is None  # not a path on this host: the server's --artifacts-destination
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert mlflow_artifact_root() == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("MS2FLOW_MLFLOW_ARTIFACTS", "s3://bucket/mlartifacts")
    assert mlflow_artifact_root() == "s3://bucket/mlartifacts"
