"""Validated Zarr stores for training tests, made by the project's real writers on the fake backend
(pipelines.demos -> replay -> render -> validate), and helpers that break them the way users do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def build_validated_store(data_dir: Path, obs_mode: str = "state", num_episodes: int = 6) -> str:
    """The real data path into ``data_dir`` (its MS2FLOW_DATA_DIR); returns the validated store's path."""
    from tests.flows.conftest import build_fake_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MS2FLOW_DATA_DIR", str(data_dir))
        return build_fake_dataset(obs_mode, num_episodes=num_episodes)


def copy_store(store: str, target: Path) -> str:
    """A copy of a store and its validation report (the record's report_path points at the copy's)."""
    import json

    import zarr

    from storage_schemas.validation import VALIDATION_ATTR

    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(store, target)
    report = Path(str(store).removesuffix(".zarr") + ".validation.json")
    copied_report = Path(str(target).removesuffix(".zarr") + ".validation.json")
    if report.exists():
        shutil.copy(report, copied_report)
        root = zarr.open_group(str(target), mode="r+")
        record = dict(root.attrs[VALIDATION_ATTR])
        record["report_path"] = str(copied_report)
        root.attrs.update({VALIDATION_ATTR: json.loads(json.dumps(record))})
    return str(target)


def env_for(store: str) -> dict:
    """The BC env section matching a fake store (its manifest's task, controller and obs mode)."""
    import zarr

    manifest = zarr.open_group(store, mode="r").attrs["ms2flow"]
    return dict(env_id=manifest["source"]["env_id"], control_mode=manifest["source"]["control_mode"],
                obs_mode=manifest["options"]["obs"]["obs_mode"], backend="fake", max_episode_steps=30)

