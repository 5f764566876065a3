"""Pydantic models of everything ms2flow stores or passes between stages.

This package imports only pydantic and the standard library, so that every
layer (and the dashboard) can read manifests, reports and configs.
"""

from storage_schemas.env import CONTROL_MODES, OBS_MODES, REWARD_MODES, EnvConfig

__all__ = ["CONTROL_MODES", "OBS_MODES", "REWARD_MODES", "EnvConfig"]
