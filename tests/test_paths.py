"""ms2core.paths: the data directory is a path; datasets alone may go to an object store."""

from __future__ import annotations

import pytest

from ms2core.errors import ConfigError
from ms2core.paths import data_dir, datasets_dir, datasets_url


def test_datasets_url_defaults_to_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MS2FLOW_DATASETS_URL", raising=False)
    assert datasets_url("PickCube-v0") == str(datasets_dir("PickCube-v0")) == str(tmp_path / "datasets/PickCube-v0")


def test_datasets_url_points_datasets_at_an_object_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MS2FLOW_DATASETS_URL", "s3://ms2flow/datasets/")
    assert datasets_url("PickCube-v0") == "s3://ms2flow/datasets/PickCube-v0"
    assert datasets_url() == "s3://ms2flow/datasets"
    assert data_dir() == tmp_path  # demos, runs and the embedded stores stay on disk


def test_a_url_as_data_directory_is_a_config_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", "s3://ms2flow/data")
    with pytest.raises(ConfigError, match="MS2FLOW_DATA_DIR=s3://ms2flow/data") as err:
        data_dir()
    assert "MS2FLOW_DATASETS_URL" in str(err.value)


def test_file_url_data_directory_is_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", f"file://{tmp_path}")
    assert data_dir() == tmp_path
