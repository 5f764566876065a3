"""Parameters and results of the Prefect flows (the Prefect UI renders these as typed forms)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from storage_schemas.dataset import ObsProcessConfig, RenderOptions
from storage_schemas.env import StrictModel


def _pointcloud_options() -> RenderOptions:
    return RenderOptions(obs=ObsProcessConfig(obs_mode="pointcloud"))


class DemoToDatasetConfig(StrictModel):
    """``demo-to-dataset``: generate (or import) demos -> replay to a control mode -> render -> validate."""

    env_id: str = "PickCube-v0"
    demos: Literal["generate", "import"] = "generate"
    import_path: str | None = Field(None, description="demo pair to import when demos='import'")
    num_episodes: int = Field(20, gt=0, description="demos to generate")
    seed_start: int = 0
    target_control_mode: str = "pd_ee_delta_pose"
    render: RenderOptions = Field(default_factory=_pointcloud_options)
    output_dir: str | None = Field(None, description="datasets directory or s3:// prefix; default: the data dir")
    workers: int = Field(2, ge=1, description="processes for generation/replay and Dask workers for rendering")
    scheduler: str | None = Field(None, description="existing Dask scheduler; default: $MS2FLOW_DASK_SCHEDULER or a LocalCluster")
    validate_replay_sample: int = Field(2, ge=0, description="episodes re-simulated by validation")
    backend: Literal["sapien", "fake"] = "sapien"


class DatasetSummary(StrictModel):
    env_id: str
    demos: str
    demos_digest: str
    converted_demos: str
    converted_episodes: int
    excluded_episodes: int
    store: str
    dataset_version: str
    n_episodes: int
    n_rows: int
    validation_status: Literal["passed", "failed"]
    validation_report: str | None


class RerenderConfig(StrictModel):
    """``rerender-demos``: bring every dataset up to date with its source demos, renderer and options."""

    datasets_dir: str | None = Field(None, description="where to look for datasets; default: the data dir")
    options_override: RenderOptions | None = Field(
        None, description="render every found dataset with these options instead of its recorded ones"
    )
    workers: int = Field(2, ge=1)
    scheduler: str | None = None
    validate_replay_sample: int = Field(0, ge=0)


class RerenderOutcome(StrictModel):
    source: str
    old_store: str
    new_store: str | None
    action: Literal["up-to-date", "rendered", "source-missing", "failed"]
    reason: str = ""
