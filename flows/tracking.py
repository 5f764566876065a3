"""MLflow tracking: one experiment per task, the resolved config as params, buffered metrics.

Metrics are sent in batches (``MlflowClient.log_batch``). When the tracking
server is unreachable the batch stays buffered (bounded) and is retried on the
next flush, so training never stops for MLflow; the run directory's
metrics.jsonl (ms2core.metrics.JsonlSink) keeps every number regardless.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from flows.settings import configure_embedded_defaults, mlflow_artifact_root

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 500  # MLflow's limit for one param value (the full config is also an artifact)
MAX_BUFFERED_METRICS = 200_000


def flatten_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_params(value, f"{name}."))
        else:
            text = str(value)
            out[name] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return out


def experiment_name(task: str) -> str:
    return task


def ensure_experiment(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = mlflow_artifact_root()
    if root is None:  # a tracking server: its artifact destination (proxied), not a path of this host
        return client.create_experiment(name)
    return client.create_experiment(name, artifact_location=f"{root.rstrip('/')}/{name}")


class MlflowSink:
    """ms2core.metrics.MetricsSink that batches metrics into MLflow and survives outages.

    With ``background=True`` (what the training flows use) batches are sent by a
    daemon thread, so ``log`` never waits on the network: while the server is down
    MLflow's client retries (with back-off, minutes in total) on that thread and
    training goes on, buffering. ``close`` waits up to ``close_timeout_s`` for the
    last batches, then gives up with a warning (metrics.jsonl still has them).
    """

    def __init__(self, run_id: str, client=None, flush_every: int = 200, flush_interval_s: float = 5.0,
                 background: bool = False, close_timeout_s: float = 300.0):
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.client = client or MlflowClient()
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.close_timeout_s = close_timeout_s
        self._buffer: list = []
        self._lock = threading.Lock()  # guards _buffer
        self._send_lock = threading.Lock()  # one sender at a time keeps batches in step order
        self._last_flush = time.monotonic()
        self.failed_flushes = 0
        self.dropped = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._send_loop, name=f"mlflow-sink-{run_id[:8]}", daemon=True)
            self._thread.start()

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        with self._lock:
            for key, value in metrics.items():
                if value is None:
                    continue
                self._buffer.append(Metric(key=key, value=float(value), timestamp=now_ms, step=int(step)))
            if len(self._buffer) > MAX_BUFFERED_METRICS:
                self.dropped += len(self._buffer) - MAX_BUFFERED_METRICS
                self._buffer = self._buffer[-MAX_BUFFERED_METRICS:]
            due = len(self._buffer) >= self.flush_every or time.monotonic() - self._last_flush > self.flush_interval_s
        if due:
            if self._thread is not None:
                self._wake.set()
            else:
                self.flush()

    def _send_loop(self) -> None:
        while not self._closing:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if not self._closing:
                self.flush()

    def flush(self) -> bool:
        """Send everything buffered; False (data kept) if the server cannot be reached."""
        with self._send_lock:
            self._last_flush = time.monotonic()
            while True:
                with self._lock:
                    batch = self._buffer[:1000]  # MLflow's log_batch limit
                    del self._buffer[: len(batch)]
                if not batch:
                    return True
                try:
                    self.client.log_batch(self.run_id, metrics=batch)
                except Exception as exc:  # noqa: BLE001 - any transport error: keep the data, keep training
                    with self._lock:
                        self._buffer[:0] = batch
                        pending = len(self._buffer)
                    self.failed_flushes += 1
                    if self.failed_flushes == 1 or self.failed_flushes % 50 == 0:
                        log.warning("MLflow unreachable (%s); %d metrics buffered, will retry", exc, pending)
                    return False

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def close(self) -> None:
        if self._thread is not None:
            self._closing = True
            self._wake.set()
            self._thread.join(self.close_timeout_s)
            if self._thread.is_alive():  # still inside MLflow's retries: do not block the flow longer
                log.warning("MLflow still unreachable after %.0f s; %d metrics not sent (they remain in the run's "
                            "metrics.jsonl)", self.close_timeout_s, self.pending)
                return
        if not self.flush():
            log.warning("%d metrics could not be sent to MLflow; they remain in the run's metrics.jsonl", self.pending)


@contextlib.contextmanager
def tracked_run(task: str, run_name: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> Iterator:
    """Start an MLflow run in the task's experiment with flattened ``params``; yields the active run."""
    configure_embedded_defaults()
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment_id = ensure_experiment(client, experiment_name(task))
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        flat = flatten_params(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i:i + 100]))
        yield run
