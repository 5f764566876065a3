"""Thin Prefect flows and tasks over ``pipelines``, MLflow tracking and registry, and the ``ms2`` CLI."""

import ms2core  # noqa: F401 - first, so the OpenBLAS kernel is pinned before numpy loads (ms2core.numerics)
