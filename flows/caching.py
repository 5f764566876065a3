"""Prefect cache keys from input digests: a task re-runs when its config or its input files change.

The stages are idempotent on their own (they compare digests with what is on
disk), so a cache hit only saves the Prefect task run; a cache key never
replaces the stage's own check.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from pydantic import BaseModel

#: Config fields that name input files whose content, not just path, defines the work.
INPUT_FIELDS = ("source", "input", "inputs", "path", "dataset", "datasets", "checkpoint")


def _file_fingerprint(value: str) -> str | None:
    """Size+mtime of a local file or every file of a local directory (cheap; content digests are the stages')."""
    if not isinstance(value, str) or "://" in value or not os.path.exists(value):
        return None
    paths = [value]
    if value.endswith(".h5") and os.path.exists(value[:-3] + ".json"):
        paths.append(value[:-3] + ".json")
    if os.path.isdir(value):
        paths = sorted(os.path.join(d, f) for d, _, files in os.walk(value) for f in files)[:10_000]
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def inputs_digest(cfg: BaseModel | dict[str, Any]) -> str:
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    h = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode())
    for field in INPUT_FIELDS:
        value = data.get(field) if isinstance(data, dict) else None
        for item in value if isinstance(value, list) else [value]:
            fp = _file_fingerprint(item) if item else None
            if fp:
                h.update(f"{field}={fp}".encode())
    return h.hexdigest()


def stage_cache_key(context, parameters: dict[str, Any]) -> str:
    """Prefect ``cache_key_fn``: task name + digest of the ``cfg`` parameter and its input files."""
    from ms2core.paths import data_dir

    cfg = parameters.get("cfg")
    # Default output locations derive from the data directory, so it is part of the key.
    data = cfg.model_dump(mode="json") if cfg is not None else dict(parameters)
    key = inputs_digest({**data, "__data_dir__": str(data_dir())})
    return f"{context.task.name}-{key}"
