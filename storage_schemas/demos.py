"""The JSON half of a ManiSkill2 demo pair (``NAME.json`` beside ``NAME.h5``), unchanged format.

Official ManiSkill2 demos and ms2flow's own validate against these models;
unknown extra fields (added by other ManiSkill2 versions) are kept, not dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
