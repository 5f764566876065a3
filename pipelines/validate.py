"""Stage ``validate``: check a rendered Zarr dataset or a demo pair and record the result.

``run(cfg) -> ValidationResult``:

1. reuse: if the report beside the dataset was made by this checker version, with the same
   outcome-changing options, for the same content (fingerprint), return it (no work);
2. otherwise stream every check (ms2core.validation), in-process or with the arrays spread over a
   Dask cluster (``workers`` > 0: a LocalCluster; ``scheduler``: an existing one);
3. write the report (``<store without .zarr>.validation.json``, inside remote stores, or
   ``NAME.validation.json`` beside a demo pair) and, for Zarr stores, the summary in
   ``attrs["ms2flow_validation"]`` that training's ``require_validated`` reads.

Bad data never raise here: they are findings. Only a missing path or an unwritable report raise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from ms2core.errors import DatasetError
from ms2core.trajectory import demo_digest, pair_paths
from ms2core.validation import dataset_kind, outcome_config, validate_path
from ms2core.validation.store import (
    current_fingerprint, load_report, open_root, read_record, read_remote_report, record_validation,
    report_digest, write_remote_report, write_report_file,
)
from ms2core.validation.zarr_dataset import ArrayOutcome, ArrayTask, check_array, default_report_path
from ms2core.zarr_io import is_remote
from storage_schemas.validation import CHECKER_VERSION, ValidationConfig, ValidationReport, ValidationResult

log = logging.getLogger(__name__)


def report_path_for(cfg: ValidationConfig) -> str | None:
    """Local report file (None for remote stores, whose report lives inside the store)."""
    if dataset_kind(cfg.path) == "zarr":
        return default_report_path(cfg.path)
    h5, _ = pair_paths(cfg.path)
    return str(h5.with_name(h5.name.removesuffix(".h5") + ".validation.json"))


def _check_exists(cfg: ValidationConfig, kind: str) -> None:
    if is_remote(cfg.path):
        return
    path = Path(cfg.path.removeprefix("file://"))
    if kind == "zarr" and not path.exists():
        raise DatasetError(f"no dataset at {cfg.path}", hint="pass a .zarr store made by `ms2 render` or a demo "
                           "pair NAME.h5 / NAME.json")
    if kind == "demos" and not any(p.exists() for p in pair_paths(path)):
        raise DatasetError(f"no demo pair at {cfg.path}", hint="a demo pair is NAME.h5 beside NAME.json")


def _reusable(cfg: ValidationConfig, kind: str, report_path: str | None) -> ValidationReport | None:
    if cfg.recheck:
        return None
    report = load_report(report_path) if report_path else read_remote_report(cfg.path, cfg.storage_options)
    if report is None or report.checker_version != CHECKER_VERSION or report.config != outcome_config(cfg):
        return None
    try:
        if kind == "zarr":
            root = open_root(cfg.path, cfg.storage_options)
            record = read_record(root)
            if record is None or record.report_digest != report_digest(report):
                return None
            fingerprint = current_fingerprint(root)
        else:
            fingerprint = demo_digest(cfg.path)
    except Exception:  # noqa: BLE001 - unreadable now: validate again and report why
        return None
    return report if fingerprint == report.fingerprint else None


@contextlib.contextmanager
def _dask_runner(cfg: ValidationConfig):
    """A task runner over a Dask cluster (one array per task), or None for in-process streaming."""
    if not cfg.workers and not cfg.scheduler:
        yield None
        return
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if cfg.scheduler:
        client = Client(cfg.scheduler)
    else:
        cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)

    def run_tasks(tasks: list[ArrayTask]) -> Iterator[ArrayOutcome]:
        futures = [client.submit(check_array, task, pure=False) for task in tasks]
        for future in as_completed(futures):
            yield future.result()

    try:
        yield run_tasks
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextlib.contextmanager
def _progress(enabled: bool, label: str):
    if not enabled:
        yield None, None, None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, unit="B", unit_scale=True, desc=label, leave=False)  # Zarr: uncompressed bytes

    def on_total(n: int) -> None:
        bar.total = n
        bar.refresh()

    def on_episode(done: int, total: int) -> None:  # demo pairs: episodes
        bar.unit, bar.unit_scale, bar.total = "episode", False, total
        bar.n = done
        bar.refresh()

    try:
        yield bar.update, on_total, on_episode
    finally:
        bar.close()


def run(cfg: ValidationConfig) -> ValidationResult:
    kind = dataset_kind(cfg.path)
    _check_exists(cfg, kind)
    report_path = report_path_for(cfg)
    reused = _reusable(cfg, kind, report_path)
    if reused is not None:
        log.info("validation of %s reused (%s, same content and options)", cfg.path, report_path)
        where = report_path or f"{cfg.path.rstrip('/')}/validation.json"
        return ValidationResult(report=reused, report_path=where, reused=True)
    with _dask_runner(cfg) as run_tasks, _progress(cfg.progress and run_tasks is None, "validate") as (
            on_bytes, on_total, on_episode):
        report = validate_path(cfg, run_tasks=run_tasks, on_bytes=on_bytes, on_total=on_total,
                               on_episode=on_episode)
    written = None
    if cfg.write_report:
        try:
            if report_path is not None:
                written = write_report_file(report, report_path)
            elif kind == "zarr":
                written = write_remote_report(report, cfg.path, cfg.storage_options)
            if kind == "zarr" and report.fingerprint != "unreadable" and _has_root(cfg):
                record_validation(cfg.path, cfg.storage_options, report, written)
        except OSError as exc:
            raise DatasetError(f"cannot write the validation result of {cfg.path}: {exc}",
                               hint="the dataset's directory must be writable; or pass write_report=false") from exc
    return ValidationResult(report=report, report_path=written, reused=False)


def _has_root(cfg: ValidationConfig) -> bool:
    try:
        open_root(cfg.path, cfg.storage_options)
        return True
    except Exception:  # noqa: BLE001
        return False
