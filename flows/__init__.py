"""Thin Prefect flows and tasks over ``pipelines``, MLflow tracking and registry, and the ``ms2`` CLI."""
