"""``ms2 quickstart``: the whole chain on one task with embedded defaults, sized for a 2-core CPU.

Two paths from one set of generated demos, so every stage runs and the run ends with a policy that works:

* state: the demos converted to ``target_control_mode`` (replay), rendered as state observations, validated,
  BC-trained with configs/bc/pickcube_state.yaml's settings for ``bc_steps`` updates, evaluated for
  ``eval_episodes`` episodes and registered as ms2-<task>-bc;
* point cloud: the first ``pointcloud_episodes`` converted demos rendered as point clouds and validated: the
  dataset a point-cloud policy trains on (on a GPU; see the summary).

The defaults come from BC runs on 120 PickCube-v0 demos on this CPU: 60 demos and 5000 updates reached 72%
(95% 57-84%) of 40 episodes, 119 demos and 5000 updates 40% (26-55%); see flows/quickstart.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from storage_schemas.dataset import ObsProcessConfig, RenderOptions
from storage_schemas.env import StrictModel


class QuickstartConfig(StrictModel):
    env_id: str = "PickCube-v0"
    num_demos: int = Field(60, gt=0, description="expert demos generated with the motion planner (state BC data)")
    bc_steps: int = Field(5000, gt=0, description="state-BC updates (configs/bc/pickcube_state.yaml: 30000)")
    eval_episodes: int = Field(40, ge=0, description="evaluation episodes of the state policy")
    pointcloud_episodes: int = Field(3, ge=0, description="converted demos rendered as point clouds (0: skip)")
    target_control_mode: str = Field("pd_ee_delta_pose", description="control mode of both datasets and the policy")
    n_points: int = Field(1200, gt=0, description="points per rendered frame")
    workers: int = Field(2, ge=1, description="processes for generation/replay/evaluation, Dask workers for rendering")
    validate_replay_sample: int = Field(1, ge=0)
    backend: Literal["sapien", "fake"] = Field("sapien", description="'fake' runs the chain without the simulator (tests)")

    def render_options(self) -> RenderOptions:
        return RenderOptions(obs=ObsProcessConfig(obs_mode="pointcloud", n_points=self.n_points))


class QuickstartSummary(StrictModel):
    env_id: str
    dataset: str = Field(description="the state dataset the policy was trained on")
    n_episodes: int
    n_rows: int
    validation_status: str
    pointcloud_dataset: str | None = Field(None, description="the point-cloud dataset (first converted demos)")
    pointcloud_episodes: int = 0
    pointcloud_validation_status: str | None = None
    run_id: str
    run_dir: str
    checkpoint: str
    success_rate: float | None
    success_ci95: tuple[float, float] | None = Field(None, description="Wilson 95% interval of the success rate")
    eval_episodes: int = 0
    meaning: str = Field("", description="what the success rate means, in a sentence")
    next_steps: list[str] = Field(default_factory=list, description="commands for a strong policy")
    model_name: str | None
    model_version: str | None
    wall_s: float
