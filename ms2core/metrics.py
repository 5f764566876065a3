"""Where training and evaluation send their numbers, without knowing about MLflow.

Algorithms take a ``MetricsSink`` and call ``sink.log({"loss": ...}, step)``.
``JsonlSink`` appends to ``metrics.jsonl`` in the run directory, flushed every
call, so metrics survive a crash or an unreachable tracking server; the flows
layer adds an MLflow sink (``flows.tracking``) and fans out with ``MultiSink``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class MetricsSink(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class NullSink:
    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlSink:
    """Append-only ``{"step": s, "metrics": {...}}`` lines; readable while training runs."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)

    def log(self, metrics: dict[str, float], step: int) -> None:
        from ms2core.fileio import disk_full_error, is_disk_full

        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        try:
            self._file.write(json.dumps({"step": int(step), "metrics": clean}) + "\n")
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.path, exc, "metrics") from exc
            raise

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_jsonl_metrics(path: str | os.PathLike) -> list[dict]:
    """All complete records of a metrics.jsonl (a torn last line from a crash is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class MultiSink:
    def __init__(self, *sinks: MetricsSink):
        self.sinks = [s for s in sinks if s is not None]

    def log(self, metrics: dict[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log(metrics, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
