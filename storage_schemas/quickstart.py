"""``ms2 quickstart``: the whole chain on one task with embedded defaults, sized for a 2-core CPU."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from storage_schemas.dataset import ObsProcessConfig, RenderOptions
from storage_schemas.env import StrictModel


class QuickstartConfig(StrictModel):
    env_id: str = "PickCube-v0"
    num_demos: int = Field(10, gt=0, description="expert demos generated with the motion planner")
    target_control_mode: str = "pd_ee_delta_pose"
    n_points: int = Field(1200, gt=0, description="points per rendered frame")
    workers: int = Field(2, ge=1, description="processes for generation/replay, Dask workers for rendering")
    train_steps: int = Field(150, gt=0, description="BC updates (a short run: point-cloud BC belongs on a GPU)")
    batch_size: int = Field(32, gt=0)
    eval_episodes: int = Field(4, ge=0)
    validate_replay_sample: int = Field(1, ge=0)
    backend: Literal["sapien", "fake"] = Field("sapien", description="'fake' runs the chain without the simulator (tests)")

    def render_options(self) -> RenderOptions:
        return RenderOptions(obs=ObsProcessConfig(obs_mode="pointcloud", n_points=self.n_points))


class QuickstartSummary(StrictModel):
    env_id: str
    dataset: str
    n_episodes: int
    n_rows: int
    validation_status: str
    run_id: str
    run_dir: str
    checkpoint: str
    success_rate: float | None
    model_name: str | None
    model_version: str | None
    wall_s: float
