"""Where the validation result lives (report JSON beside the store, summary in the root attrs),
require_validated (what training calls), idempotent reruns, Dask parity, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from ms2core.errors import ConfigError, DatasetError
from ms2core.validation import require_validated
from pipelines.validate import run
from storage_schemas.dataset import MANIFEST_ATTR
from storage_schemas.validation import VALIDATION_ATTR, ValidationConfig, ValidationReport
from tests.validate_fixtures import build, set_manifest, write_rows


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tpl"), "pointcloud")


@pytest.fixture
def store(template, tmp_path):
    shutil.copytree(template.demos.parent, tmp_path / "demos")
    path = tmp_path / "pick.zarr"
    shutil.copytree(template.store, path)
    source = template.manifest.source.model_dump(mode="json")
    set_manifest(path, source={**source, "path": str(tmp_path / "demos/pick")})
    return path


def cfg(path, **kw) -> ValidationConfig:
    return ValidationConfig(path=str(path), progress=False, **kw)


def attrs(path):
    return dict(zarr.open_group(str(path), mode="r").attrs)


def test_report_beside_store_and_summary_in_attrs(store):
    result = run(cfg(store))
    report_file = store.with_name("pick.validation.json")
    assert result.report_path == str(report_file)
    on_disk = ValidationReport.model_validate(json.loads(report_file.read_text()))
    assert on_disk == result.report
    record = attrs(store)[VALIDATION_ATTR]
    assert record["status"] == "passed" and record["n_errors"] == 0 and record["n_warnings"] == 0
    assert record["dataset_version"] == result.report.dataset_version
    assert set(record) >= {"status", "n_errors", "n_warnings", "report_digest", "validated_at", "dataset_version"}
    assert MANIFEST_ATTR in attrs(store)  # the manifest is left as it was
    assert require_validated(str(store)).status == "passed"


def test_require_validated_refuses_unvalidated(store):
    with pytest.raises(DatasetError, match="has not been validated") as info:
        require_validated(str(store))
    assert "ms2 validate" in info.value.hint and "--force" in info.value.hint
    assert require_validated(str(store), force=True) is None


def test_require_validated_refuses_failed(store):
    write_rows(store, "data/obs/state", 3, np.nan)
    result = run(cfg(store))
    assert result.report.status == "failed"
    with pytest.raises(DatasetError, match="failed validation with 1 errors"):
        require_validated(str(store))
    assert require_validated(str(store), force=True).status == "failed"


def test_require_validated_refuses_changed_dataset(store):
    run(cfg(store))
    set_manifest(store, complete=False)  # e.g. a resumed render touched it
    with pytest.raises(DatasetError, match="changed since it was validated"):
        require_validated(str(store))


def test_rewritten_manifest_drops_the_record(store):
    run(cfg(store))
    root = zarr.open_group(str(store), mode="r+")
    root.attrs.put({MANIFEST_ATTR: dict(root.attrs[MANIFEST_ATTR])})  # what the renderer's write_manifest does
    with pytest.raises(DatasetError, match="has not been validated"):
        require_validated(str(store))


def test_rerun_is_reused_unless_content_or_options_change(store):
    first = run(cfg(store))
    again = run(cfg(store))
    assert again.reused and again.report == first.report
    assert not run(cfg(store, recheck=True)).reused
    assert not run(cfg(store, replay_sample=2)).reused  # another option: another report
    write_rows(store, "data/obs/state", 0, np.nan)
    # rewritten chunks change the inventory in the manifest, so the fingerprint: validated again
    rerun = run(cfg(store, replay_sample=2))
    assert not rerun.reused and rerun.report.status == "failed"
    assert run(cfg(store, replay_sample=2)).reused


def test_write_report_false_leaves_nothing(store):
    result = run(cfg(store, write_report=False))
    assert result.report_path is None and result.report.status == "passed"
    assert not store.with_name("pick.validation.json").exists() and VALIDATION_ATTR not in attrs(store)


def test_dask_workers_give_the_same_findings(store):
    write_rows(store, "data/obs/xyz", 5, np.nan)
    write_rows(store, "data/actions", (7, 0), 2.0)
    local = run(cfg(store, write_report=False)).report
    spread = run(cfg(store, workers=1, write_report=False)).report
    as_set = lambda r: {(f.code, f.episode, f.key, f.index) for f in r.findings}  # noqa: E731
    assert as_set(spread) == as_set(local) and spread.n_errors == local.n_errors == 2
    assert spread.bytes_checked == local.bytes_checked


def test_missing_path_raises(tmp_path):
    with pytest.raises(DatasetError, match="no dataset"):
        run(cfg(tmp_path / "absent.zarr"))
    with pytest.raises(DatasetError, match="no demo pair"):
        run(cfg(tmp_path / "absent.h5"))


# -- CLI ------------------------------------------------------------------------------------------
def cli(*args):
    from flows.cli import app

    return CliRunner().invoke(app, ["validate", *args])


def test_cli_clean_exits_0(store):
    result = cli(str(store), "--replay-sample", "2", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "passed" in result.output and "replayed episodes [0, 3]" in result.output


def test_cli_errors_exit_1_with_table(store):
    write_rows(store, "data/obs/state", 9, np.inf)
    result = cli(str(store), "--no-progress")
    assert result.exit_code == 1
    assert "non_finite" in result.output and "obs/state" in result.output and "failed" in result.output


def test_cli_set_override_and_bad_option(store):
    result = cli(str(store), "--no-progress", "--set", "max_findings_per_check=1")
    assert result.exit_code == 0
    bad = cli(str(store), "--no-progress", "--set", "replay_state_atol=-1")
    assert isinstance(bad.exception, ConfigError)
    assert cli(str(store), "--replay-sample", "-3").exit_code == 2  # typer usage error


def test_cli_yaml_config_with_cli_and_set_overrides(store, tmp_path):
    config = tmp_path / "validate.yaml"
    config.write_text("replay_sample: 4\nmax_findings_per_check: 5\nsuccess_only: false\n")
    result = cli(str(store), "--config", str(config), "--no-progress", "--set", "max_findings_per_check=2")
    assert result.exit_code == 0, result.output
    report = ValidationReport.model_validate_json(store.with_name("pick.validation.json").read_text())
    assert report.replayed_episodes == [0, 1, 2, 3]  # from the YAML
    assert report.config["max_findings_per_check"] == 2 and report.config["success_only"] is False
    config.write_text("replay_sampel: 4\n")
    assert isinstance(cli(str(store), "--config", str(config)).exception, ConfigError)


def test_cli_usage_error_exits_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "validate", str(tmp_path / "nothing.zarr")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "no dataset" in proc.stderr


def test_remote_store_report_inside_the_store(template):
    """fsspec stores (S3 in production; the in-memory filesystem here) keep the report inside the store."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for p in template.store.rglob("*"):
        if p.is_file():
            fs.pipe(f"/remote-test/d.zarr/{p.relative_to(template.store)}", p.read_bytes())
    url = "memory://remote-test/d.zarr"
    try:
        result = run(cfg(url))
        assert result.report_path == f"{url}/validation.json" and result.report.status == "passed"
        assert ValidationReport.model_validate_json(fs.cat("/remote-test/d.zarr/validation.json")) == result.report
        assert require_validated(url).status == "passed"
        assert run(cfg(url)).reused
    finally:
        fs.rm("/remote-test", recursive=True)
