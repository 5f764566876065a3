"""Datasets: the one store reader/writer (``store``: DatasetStore, DatasetWriter), chunk integrity
(``integrity``) and the demo dataset for BC and demo-augmented RL (``demo_dataset``).

Names are imported lazily so that writers (render workers) do not pay for torch."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DatasetStore": "ms2core.data.store", "DatasetWriter": "ms2core.data.store", "write_dataset": "ms2core.data.store",
    "BatchStream": "ms2core.data.demo_dataset", "DemoBatch": "ms2core.data.demo_dataset",
    "DemoDataset": "ms2core.data.demo_dataset", "ZarrDemoStore": "ms2core.data.demo_dataset",
    "open_demo_store": "ms2core.data.demo_dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ms2core.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
