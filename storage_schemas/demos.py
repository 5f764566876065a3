"""The JSON half of a ManiSkill2 demo pair (``NAME.json`` beside ``NAME.h5``), unchanged format.

Official ManiSkill2 demos and ms2flow's own validate against these models;
unknown extra fields (added by other ManiSkill2 versions) are kept, not dropped.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from storage_schemas.env import StrictModel


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class EnvInfo(_Open):
    env_id: str
    max_episode_steps: int | None = None
    env_kwargs: dict[str, Any] = Field(default_factory=dict)


class EpisodeMeta(_Open):
    episode_id: int = Field(ge=0)
    episode_seed: int | None = None
    reset_kwargs: dict[str, Any] = Field(default_factory=dict)
    control_mode: str | None = None
    elapsed_steps: int = Field(ge=0)
    info: dict[str, Any] | None = None

    @property
    def seed(self) -> int | None:
        """The seed to reset with: reset_kwargs['seed'] if recorded, else episode_seed."""
        return self.reset_kwargs.get("seed", self.episode_seed)


class TrajectoryJson(_Open):
    env_info: EnvInfo
    commit_info: dict[str, Any] | None = None
    episodes: list[EpisodeMeta]

    @property
    def control_mode(self) -> str | None:
        modes = {ep.control_mode for ep in self.episodes if ep.control_mode}
        if len(modes) == 1:
            return modes.pop()
        return self.env_info.env_kwargs.get("control_mode")


# --------------------------------------------------------------------------- #
# Stage configs and results: generation, import, merge, replay (pipelines.demos / pipelines.replay)
# --------------------------------------------------------------------------- #
Backend = Literal["sapien", "fake"]


class GenerateDemosConfig(StrictModel):
    """``ms2 demos generate``: expert demos by motion planning, recorded in pd_joint_pos with env states."""

    env_id: str = Field("PickCube-v0", description="task; the planner solves PickCube-v0, LiftCube-v0, StackCube-v0")
    num_episodes: int = Field(10, gt=0, description="successful episodes to keep")
    seed_start: int = Field(0, ge=0, description="seeds tried are seed_start, seed_start+1, ... in order")
    max_attempts: int | None = Field(None, gt=0, description="seeds to try at most; None = 3 x num_episodes")
    max_episode_steps: int | None = Field(None, gt=0, description="None keeps the env's registered limit")
    num_workers: int = Field(1, ge=1, description="simulator processes (results do not depend on it)")
    sim_python: str | None = Field(
        None, description="interpreter for the simulator worker processes (e.g. a simulator runtime's python); "
        "None = $MS2FLOW_SIM_PYTHON, else this one")
    output: str | None = Field(None, description="path stem of the pair; None = demos_dir(env_id)/<derived name>")
    action_noise_rad: float = Field(
        0.0, ge=0.0, le=0.2,
        description="std of Gaussian noise on every arm joint target while moving (DART-style): the demos then "
                    "show deviations and their corrections, which behaviour cloning needs; 0 = clean plans",
    )
    planner_speed: float = Field(
        1.0, gt=0.0, le=4.0,
        description="time scale of the planned motions: joint velocity limits x s and acceleration limits x s^2 "
                    "(1 = 1 rad/s, 1 rad/s^2); faster demos take fewer control steps and larger actions per step",
    )
    backend: Backend = "sapien"
    progress: bool = True
    overwrite: bool = Field(False, description="replace an existing pair at the output (kept until the new one is "
                                               "complete); without it an existing pair made from other inputs is refused")


class GenerateDemosResult(BaseModel):
    h5_path: str
    json_path: str
    digest: str
    env_id: str
    num_episodes: int
    seeds_tried: int
    success_rate: float = Field(description="kept episodes / seeds tried")
    failed_seeds: dict[int, str] = Field(default_factory=dict, description="seed -> why it was not kept")
    wall_s: float = 0.0
    episodes_per_s: float = Field(0.0, description="kept episodes per wall-clock second")
    num_workers: int = 1
    skipped: bool = Field(False, description="the same output already existed: no work done")


class ImportDemosConfig(StrictModel):
    """``ms2 demos import PATH``: validate an existing ManiSkill2 demo pair and register it under demos_dir."""

    path: str = Field(description="NAME.h5 or NAME.json of the pair")
    name: str | None = Field(None, description="registered name; None keeps the file's stem")
    check_env: bool = Field(True, description="check the env id and control mode against ManiSkill2's registry")
    backend: Backend = "sapien"
    overwrite: bool = Field(False, description="replace an existing pair at the output (kept until the new one is "
                                               "complete); without it an existing pair made from other inputs is refused")
    force: bool = Field(False, description="use a pair that fails the demo-pair checks anyway (recorded in the output)")


class DemoRecord(BaseModel):
    """A registered demo pair: what downstream stages key their caches on (``digest``)."""

    env_id: str
    control_mode: str | None
    num_episodes: int
    total_steps: int
    digest: str
    h5_path: str
    json_path: str
    source: str
    has_env_states: bool
    skipped: bool = False
    demo_checks: Literal["passed", "forced", "skipped"] = Field(
        "passed", description="the demo-pair checks: passed, failed but forced, or not run (check_env=False)")
    demo_check_errors: list[str] = Field(default_factory=list, description="failing check codes when forced")


class MergeDemosConfig(StrictModel):
    """``ms2 demos merge``: several pairs of one task into one, episodes renumbered 0..N-1 (ManiSkill2's merge_h5)."""

    inputs: list[str] = Field(min_length=1)
    output: str
    overwrite: bool = Field(False, description="replace an existing pair at the output (kept until the new one is "
                                               "complete); without it an existing pair made from other inputs is refused")
    successful_only: bool = Field(False, description="keep only the episodes whose json info says success (at their "
                                                     "last step): e.g. a policy's `ms2 evaluate --save-traj` "
                                                     "trajectories as demos; an episode without that flag is an error")


class MergeDemosResult(BaseModel):
    h5_path: str
    json_path: str
    digest: str
    num_episodes: int
    sources: list[str]
    dropped_unsuccessful: int = 0
    skipped: bool = False


class ReplayConfig(StrictModel):
    """``ms2 replay``: convert a demo pair to another control mode by replaying it (ManiSkill2 semantics)."""

    input: str = Field(description="source pair NAME.h5 (recorded in pd_joint_pos or pd_joint_delta_pos)")
    target_control_mode: str = "pd_ee_delta_pose"
    output: str | None = Field(None, description="path stem; None = NAME.none.<target_control_mode> beside the input")
    num_workers: int = Field(1, ge=1)
    sim_python: str | None = Field(
        None, description="interpreter for the simulator worker processes (e.g. a simulator runtime's python); "
        "None = $MS2FLOW_SIM_PYTHON, else this one")
    max_episodes: int | None = Field(None, gt=0, description="convert only the first N episodes (ManiSkill2's --count)")
    verify_open_loop: bool = Field(
        True, description="also replay each converted episode's actions in a fresh env from its seed and report success"
    )
    require_open_loop_success: bool = Field(
        False, description="exclude episodes whose converted actions fail open-loop (needs verify_open_loop)"
    )
    backend: Backend = "sapien"
    progress: bool = True
    overwrite: bool = Field(False, description="replace an existing pair at the output (kept until the new one is "
                                               "complete); without it an existing pair made from other inputs is refused")
    force: bool = Field(False, description="use a pair that fails the demo-pair checks anyway (recorded in the output)")


class EpisodeReplayStatus(BaseModel):
    episode_id: int
    seed: int | None
    converted: bool
    reason: str = Field("", description="why the episode was excluded; empty when converted")
    source_steps: int = 0
    converted_steps: int = 0
    first_success_step: int | None = None
    open_loop_success: bool | None = None


class ReplayReport(BaseModel):
    """Per-episode outcome of a conversion, saved as ``<output>.report.json`` beside the converted pair."""

    source_h5: str
    source_digest: str
    env_id: str
    source_control_mode: str
    target_control_mode: str
    num_episodes: int
    num_converted: int
    open_loop_successes: int | None = None
    episodes: list[EpisodeReplayStatus]
    wall_s: float = 0.0
    episodes_per_s: float = Field(0.0, description="episodes / wall time, worker start-up included")
    steady_episodes_per_s: float | None = Field(None, description="rate after the first result (start-up excluded)")
    startup_s: float | None = Field(None, description="seconds until the first episode came back")
    num_workers: int = 1

    @property
    def excluded(self) -> list[EpisodeReplayStatus]:
        return [ep for ep in self.episodes if not ep.converted]

    @property
    def conversion_rate(self) -> float:
        return self.num_converted / self.num_episodes if self.num_episodes else 0.0


class ReplayResult(BaseModel):
    h5_path: str
    json_path: str
    report_path: str
    digest: str
    report: ReplayReport
    skipped: bool = False
