"""demo-to-dataset and rerender-demos as real Prefect flow runs (fake backend: no simulator needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage_schemas.dataset import ObsProcessConfig, RenderOptions
from storage_schemas.flows import DemoToDatasetConfig, RerenderConfig


def _config(**overrides) -> DemoToDatasetConfig:
    base = dict(backend="fake", num_episodes=3, workers=1, validate_replay_sample=1,
                render=RenderOptions(obs=ObsProcessConfig(obs_mode="pointcloud", n_points=32)))
    return DemoToDatasetConfig(**{**base, **overrides})


def test_demo_to_dataset_then_rerender(prefect_server, data_dir):
    from flows.data import demo_to_dataset, rerender_demos
    from ms2core import zarr_io

    summary = demo_to_dataset(_config())
    assert summary.validation_status == "passed" and summary.n_episodes == 3
    root = zarr_io.open_dataset(summary.store)
    assert root["data/obs/xyz"].shape[1:] == (32, 3)
    assert Path(summary.converted_demos).exists() and Path(summary.validation_report).exists()

    again = demo_to_dataset(_config())  # cached / idempotent: same dataset
    assert again.store == summary.store and again.dataset_version == summary.dataset_version

    outcomes = rerender_demos(RerenderConfig())
    assert [o.action for o in outcomes] == ["up-to-date"]
    changed = rerender_demos(RerenderConfig(options_override=RenderOptions(
        backend="fake", obs=ObsProcessConfig(obs_mode="pointcloud", n_points=16))))
    assert [o.action for o in changed] == ["rendered"]
    assert changed[0].new_store != summary.store and Path(summary.store).exists()  # old version stays readable
    assert zarr_io.open_dataset(changed[0].new_store)["data/obs/xyz"].shape[1:] == (16, 3)


def test_a_failing_stage_fails_the_run_and_keeps_earlier_outputs(prefect_server, data_dir, tmp_path):
    from prefect.states import State

    from flows.data import demo_to_dataset

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the datasets directory should be")
    state: State = demo_to_dataset(_config(output_dir=str(blocked)), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="not-a-dir"):
        state.result()
    demos = list((data_dir / "demos").rglob("*.h5"))
    assert len(demos) == 2  # the generated and the converted pair survive the failed render


def test_cache_key_follows_input_file_content_and_data_dir(tmp_path, monkeypatch):
    import os

    from flows.caching import inputs_digest, stage_cache_key
    from storage_schemas.demos import ReplayConfig

    demo = tmp_path / "d.h5"
    demo.write_bytes(b"1")
    (tmp_path / "d.json").write_text("{}")
    cfg = ReplayConfig(input=str(demo))

    class Ctx:
        class task:
            name = "replay-demos"

    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "a"))
    key_a = stage_cache_key(Ctx, {"cfg": cfg})
    assert stage_cache_key(Ctx, {"cfg": cfg}) == key_a
    (tmp_path / "d.json").write_text('{"changed": 1}')
    os.utime(tmp_path / "d.json", ns=(1, 1))
    key_changed = stage_cache_key(Ctx, {"cfg": cfg})
    assert key_changed != key_a
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "b"))
    assert stage_cache_key(Ctx, {"cfg": cfg}) != key_changed
    assert inputs_digest(cfg) != inputs_digest(ReplayConfig(input=str(demo), target_control_mode="pd_joint_pos"))
