"""How to build an environment: the part of every stage config that names the task."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Observation modes ms2flow understands (ManiSkill2 0.5 names).
OBS_MODES = (
    "state",
    "state_dict",
    "rgbd",
    "pointcloud",
    "rgbd_robot_seg",
    "pointcloud_robot_seg",
    "none",
)
#: Every controller of ManiSkill2's Panda; which ones an env accepts is decided by its robot.
CONTROL_MODES = (
    "pd_joint_delta_pos",
    "pd_joint_pos",
    "pd_ee_delta_pos",
    "pd_ee_delta_pose",
    "pd_ee_delta_pose_align",
    "pd_joint_target_delta_pos",
    "pd_ee_target_delta_pos",
    "pd_ee_target_delta_pose",
    "pd_joint_vel",
    "pd_joint_pos_vel",
    "pd_joint_delta_pos_vel",
)
REWARD_MODES = ("sparse", "dense", "normalized_dense")

ObsMode = Literal[
    "state", "state_dict", "rgbd", "pointcloud", "rgbd_robot_seg", "pointcloud_robot_seg", "none"
]
RewardMode = Literal["sparse", "dense", "normalized_dense"]


class StrictModel(BaseModel):
    """Base for every ms2flow model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(StrictModel):
    """Which ManiSkill2 task to build and how."""

    env_id: str = Field("PickCube-v0", description="ManiSkill2 env id, e.g. PickCube-v0")
    obs_mode: ObsMode = "state"
    control_mode: str = Field("pd_ee_delta_pose", description="ManiSkill2 controller name")
    reward_mode: RewardMode = "dense"
    max_episode_steps: int | None = Field(
        None, gt=0, description="step limit; None keeps the env's registered limit"
    )
    camera_size: tuple[int, int] | None = Field(
        None, description="(width, height) for every observation camera; None keeps 128x128"
    )
    backend: Literal["sapien", "fake"] = Field(
        "sapien", description="'fake' is a simulator-free stand-in with the same spaces (tests)"
    )
