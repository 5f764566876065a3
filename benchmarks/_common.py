"""Helpers shared by the benchmark scripts: result files the README quotes."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_result(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        **payload,
    }
    from ms2core.fileio import write_text_atomic

    return write_text_atomic(RESULTS_DIR / f"{name}.json", json.dumps(payload, indent=2) + "\n")
