"""Data flows: ``demo-to-dataset`` and the scheduled ``rerender-demos``."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows import stages
from ms2core.errors import DatasetError
from storage_schemas.dataset import RenderConfig
from storage_schemas.demos import GenerateDemosConfig, ImportDemosConfig, ReplayConfig
from storage_schemas.flows import DatasetSummary, DemoToDatasetConfig, RerenderConfig, RerenderOutcome
from storage_schemas.validation import ValidationConfig


def _scheduler(explicit: str | None) -> str | None:
    return explicit or os.environ.get("MS2FLOW_DASK_SCHEDULER") or None


@flow(name="demo-to-dataset", log_prints=True)
def demo_to_dataset(config: dict | DemoToDatasetConfig | None = None, task: str | None = None,
                    overrides: list[str] | None = None) -> DatasetSummary:
    """Generate or import demos, convert them to the target control mode, render, validate.

    Defaults: DemoToDatasetConfig's (20 generated PickCube-v0 demos -> pd_ee_delta_pose -> point clouds);
    ``config`` may be partial, ``overrides`` are dotted --set strings, e.g. ['num_episodes=50']."""
    from flows.defaults import dataset_flow_config

    log = get_run_logger()
    config = dataset_flow_config(config, task, overrides)
    if config.demos == "import":
        if not config.import_path:
            raise DatasetError("demos='import' needs import_path", hint="set import_path to NAME.h5 of a demo pair")
        record = stages.import_demos(ImportDemosConfig(path=config.import_path, backend=config.backend))
        demos_h5, demos_digest = record.h5_path, record.digest
    else:
        generated = stages.generate_demos(GenerateDemosConfig(
            env_id=config.env_id, num_episodes=config.num_episodes, seed_start=config.seed_start,
            num_workers=config.workers, backend=config.backend, progress=False))
        demos_h5, demos_digest = generated.h5_path, generated.digest
    log.info("demos: %s", demos_h5)

    replayed = stages.replay_demos(ReplayConfig(
        input=demos_h5, target_control_mode=config.target_control_mode, num_workers=config.workers,
        backend=config.backend, progress=False))
    log.info("converted to %s: %d/%d episodes", config.target_control_mode, replayed.report.num_converted,
             replayed.report.num_episodes)

    options = config.render.model_copy(update=dict(backend=config.backend))
    rendered = stages.render_dataset(RenderConfig(
        source=replayed.h5_path, output_dir=config.output_dir, options=options, workers=config.workers,
        scheduler=_scheduler(config.scheduler), progress=False))
    log.info("dataset: %s (%d episodes, %d rows)", rendered.store, rendered.n_episodes, rendered.n_rows)

    validated = stages.validate_dataset(ValidationConfig(
        path=rendered.store, replay_sample=config.validate_replay_sample, progress=False))
    report = validated.report
    if report.status != "passed":
        raise DatasetError(
            f"dataset {rendered.store} failed validation with {report.n_errors} errors",
            hint=f"see the validation-findings artifact or {validated.report_path}; earlier stage outputs are kept",
        )
    return DatasetSummary(
        env_id=config.env_id, demos=demos_h5, demos_digest=demos_digest, converted_demos=replayed.h5_path,
        converted_episodes=replayed.report.num_converted,
        excluded_episodes=replayed.report.num_episodes - replayed.report.num_converted,
        store=rendered.store, dataset_version=rendered.dataset_version, n_episodes=rendered.n_episodes,
        n_rows=rendered.n_rows, validation_status=report.status, validation_report=validated.report_path,
    )


def find_datasets(datasets_dir: Path) -> list[Path]:
    return sorted(p for p in datasets_dir.rglob("*.zarr") if (p / "zarr.json").exists())


@flow(name="rerender-demos", log_prints=True)
def rerender_demos(config: RerenderConfig = RerenderConfig()) -> list[RerenderOutcome]:
    """Re-render every dataset whose source demos, renderer version or render options changed.

    A dataset's version hashes exactly those, so rendering each dataset's recipe
    again is a no-op when nothing changed and a new store (the old one stays
    readable) when something did.
    """
    from ms2core import zarr_io
    from ms2core.paths import datasets_dir

    log = get_run_logger()
    root = Path(config.datasets_dir) if config.datasets_dir else datasets_dir()
    outcomes: list[RerenderOutcome] = []
    recipes: dict[tuple[str, str], Path] = {}
    for store in find_datasets(root) if root.exists() else []:
        try:
            manifest = zarr_io.read_manifest(zarr_io.open_dataset(str(store)))
            if manifest is None:
                raise ValueError("no ms2flow manifest in its attributes")
        except Exception as exc:  # noqa: BLE001 - one unreadable store must not stop the others
            outcomes.append(RerenderOutcome(source="?", old_store=str(store), new_store=None, action="failed",
                                            reason=f"unreadable manifest: {exc}"))
            continue
        options = config.options_override or manifest.options
        key = (manifest.source.path, options.model_dump_json())
        recipes.setdefault(key, store)  # several versions of one recipe: re-render it once
    for (source, options_json), store in recipes.items():
        if not Path(source).exists():
            outcomes.append(RerenderOutcome(source=source, old_store=str(store), new_store=None,
                                            action="source-missing", reason="the source demo pair is gone"))
            continue
        options = RenderConfig.model_fields["options"].annotation.model_validate_json(options_json)
        try:
            rendered = stages.render_dataset(RenderConfig(
                source=source, output_dir=str(store.parent), options=options, workers=config.workers,
                scheduler=_scheduler(config.scheduler), progress=False))
        except Exception as exc:  # noqa: BLE001 - report and continue with the other datasets
            outcomes.append(RerenderOutcome(source=source, old_store=str(store), new_store=None, action="failed",
                                            reason=str(exc)[:500]))
            continue
        action = "up-to-date" if rendered.nothing_to_do else "rendered"
        if action == "rendered" and config.validate_replay_sample >= 0:
            stages.validate_dataset(ValidationConfig(path=rendered.store, replay_sample=config.validate_replay_sample,
                                                     progress=False))
        outcomes.append(RerenderOutcome(source=source, old_store=str(store), new_store=rendered.store, action=action))
        log.info("%s: %s -> %s", action, store, rendered.store)
    create_table_artifact(key="rerender-outcomes", table=[o.model_dump() for o in outcomes] or [dict(result="no datasets")])
    return outcomes
