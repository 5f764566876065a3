"""Where validation results live and who may use a dataset: opening stores read-only, writing the
report beside the dataset, recording its summary in the store's root attrs, and
:func:`require_validated` (what training calls before it reads a dataset).

The summary is ``attrs["ms2flow_validation"]`` (a ValidationRecord) beside ``attrs["ms2flow"]``
(the manifest); its ``fingerprint`` covers the manifest and the committed episode ends, so a
dataset that was re-rendered or extended after validation counts as unvalidated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zarr
from pydantic import ValidationError

from ms2core.errors import DatasetError
from ms2core.zarr_io import is_remote, open_store, read_episode_ends
from storage_schemas.dataset import MANIFEST_ATTR
from storage_schemas.validation import VALIDATION_ATTR, ValidationRecord, ValidationReport

REMOTE_REPORT_NAME = "validation.json"


def _store(url: str, storage_options: Mapping[str, Any] | None, read_only: bool):
    """zarr_io's opener (the one for every layer); a local path must hold a store already."""
    if not is_remote(url) and not (Path(str(url).removeprefix("file://")) / "zarr.json").is_file():
        raise DatasetError(f"no Zarr store at {url} (no zarr.json)", hint="pass the .zarr directory `ms2 render` made")
    return open_store(url, storage_options, read_only=read_only)


def open_root(url: str, storage_options: Mapping[str, Any] | None = None, mode: str = "r") -> zarr.Group:
    store = _store(url, storage_options, read_only=mode == "r")
    try:
        return zarr.open_group(store, mode=mode)
    except Exception as exc:  # noqa: BLE001 - damaged zarr.json (JSON, schema or codec errors of every kind)
        raise DatasetError(f"{url} is not a readable Zarr store: {type(exc).__name__}: {exc}",
                           hint="its metadata (zarr.json) is damaged: re-render it or restore it from a copy") from exc


def report_digest(report: ValidationReport) -> str:
    return hashlib.sha256(report.model_dump_json().encode()).hexdigest()[:16]


def write_report_file(report: ValidationReport, path: str) -> str:
    """Atomically (temp name, then rename) write the JSON report to a local path."""
    from ms2core.fileio import write_text_atomic

    return str(write_text_atomic(path, report.model_dump_json(indent=2)))


def write_remote_report(report: ValidationReport, url: str, storage_options: Mapping[str, Any] | None) -> str:
    """Remote stores: the report goes inside the store (one PUT, atomic on object stores)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    store = _store(url, storage_options, read_only=False)
    data = default_buffer_prototype().buffer.from_bytes(report.model_dump_json(indent=2).encode())
    sync(store.set(REMOTE_REPORT_NAME, data))
    return f"{url.rstrip('/')}/{REMOTE_REPORT_NAME}"


def read_remote_report(url: str, storage_options: Mapping[str, Any] | None) -> ValidationReport | None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    try:
        buf = sync(_store(url, storage_options, read_only=True).get(REMOTE_REPORT_NAME, default_buffer_prototype()))
        return None if buf is None else ValidationReport.model_validate_json(buf.to_bytes())
    except Exception:  # noqa: BLE001 - no or unreadable report: validate again
        return None


def record_validation(url: str, storage_options: Mapping[str, Any] | None, report: ValidationReport,
                      report_path: str | None) -> ValidationRecord:
    """Write the summary into the root attrs (next to the manifest, which is left untouched)."""
    record = ValidationRecord(status=report.status, n_errors=report.n_errors, n_warnings=report.n_warnings,
                              report_digest=report_digest(report), validated_at=report.validated_at,
                              dataset_version=report.dataset_version, fingerprint=report.fingerprint,
                              report_path=report_path)
    root = open_root(url, storage_options, mode="r+")
    root.attrs.update({VALIDATION_ATTR: record.model_dump(mode="json")})
    return record


def read_record(root: zarr.Group) -> ValidationRecord | None:
    raw = root.attrs.get(VALIDATION_ATTR)
    if raw is None:
        return None
    try:
        return ValidationRecord.model_validate(raw)
    except ValidationError:
        return None


def current_fingerprint(root: zarr.Group) -> str:
    """The fingerprint a validation of this store now would record (manifest with inventory + committed ends)."""
    from ms2core.validation.zarr_dataset import EPISODE_ENDS, manifest_fingerprint

    raw = root.attrs.get(MANIFEST_ATTR)
    ends = None
    if EPISODE_ENDS in root:
        try:
            ends = read_episode_ends(root, raw if isinstance(raw, Mapping) else {})
        except TypeError:
            ends = None
    return manifest_fingerprint(raw, ends)


def failing_codes(store_url: str, record: ValidationRecord,
                  storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The error codes of the report the record points at (empty when the report is gone or unreadable)."""
    if is_remote(store_url):
        report = read_remote_report(store_url, storage_options)
    else:
        report = load_report(record.report_path) if record.report_path else None
    if report is None or report_digest(report) != record.report_digest:
        return []
    return sorted({c.code for c in report.counts if c.severity == "error" and c.count > 0}
                  or {f.code for f in report.findings if f.severity == "error"})


def _incomplete(root: zarr.Group) -> tuple[int, int] | None:
    """(committed, planned) episodes when the manifest says rendering has not finished."""
    raw = root.attrs.get(MANIFEST_ATTR)
    if not isinstance(raw, Mapping):
        return None
    committed, episodes = raw.get("n_committed_episodes"), raw.get("episodes")
    if isinstance(committed, int) and isinstance(episodes, list) and committed < len(episodes):
        return committed, len(episodes)
    return None


def validation_problem(store_url: str, storage_options: Mapping[str, Any] | None = None,
                       name: str | None = None) -> tuple[ValidationRecord | None, DatasetError | None]:
    """(record, the reason a consumer must not use the dataset, or None): never validated, failed,
    changed since validation, or incomplete (fewer committed episodes than the manifest plans)."""
    root = open_root(store_url, storage_options)
    record = read_record(root)
    what = f"{name} {store_url}" if name else f"dataset {store_url}"
    hint = f"run `ms2 validate {store_url}`, or pass --force to use it anyway (recorded in the run)"
    if (counts := _incomplete(root)) is not None:
        return record, DatasetError(
            f"{what} is incomplete: {counts[0]} of {counts[1]} episodes are committed (check code: incomplete)",
            hint=f"finish it with `ms2 render` (it resumes), then run `ms2 validate {store_url}`; "
                 "or pass --force to train on the committed episodes")
    if record is None:
        return None, DatasetError(f"{what} has not been validated", hint=hint)
    if record.status != "passed":
        codes = failing_codes(store_url, record, storage_options)
        return record, DatasetError(
            f"{what} failed validation with {record.n_errors} errors"
            + (f" (check codes: {', '.join(codes)})" if codes else "")
            + (f"; report: {record.report_path}" if record.report_path else ""),
            hint=f"fix or re-render the dataset and run `ms2 validate {store_url}` again, or pass --force")
    if record.fingerprint != current_fingerprint(root):
        return record, DatasetError(f"{what} has changed since it was validated at {record.validated_at}",
                                    hint=hint)
    return record, None


def require_validated(store_url: str, force: bool = False,
                      storage_options: Mapping[str, Any] | None = None,
                      name: str | None = None) -> ValidationRecord | None:
    """Refuse a dataset that was never validated, failed validation, changed since, or is incomplete
    (unless ``force``). Returns the record (None when forced past a missing one)."""
    record, problem = validation_problem(store_url, storage_options, name)
    if problem is not None and not force:
        raise problem
    return record


def load_report(path: str) -> ValidationReport | None:
    try:
        return ValidationReport.model_validate(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return None
