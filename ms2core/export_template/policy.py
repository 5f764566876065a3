"""An ms2flow policy exported with `ms2 export-policy`: raw ManiSkill2 observations in, actions out.

Needs only torch, numpy and pydantic (see requirements.txt); no Prefect, MLflow or ms2flow.
The interface is that of ManiSkill2 challenge submissions:

    policy = Policy("PickCube-v0")
    obs, _ = env.reset(seed=0)            # env built with Policy.get_obs_mode / get_control_mode
    policy.reset(obs)
    action = policy.act(obs)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE / "vendor") not in sys.path:
    sys.path.append(str(HERE / "vendor"))  # the vendored observation processing (ms2flow's own when installed)

from ms2core.obs import ObservationProcessor  # noqa: E402
from storage_schemas.dataset import ObsProcessConfig  # noqa: E402

META = json.loads((HERE / "policy.json").read_text())


class Policy:
    def __init__(self, env_id: str | None = None, observation_space=None, action_space=None, device: str = "cpu"):
        if env_id is not None and env_id != META["env_id"]:
            raise ValueError(f"this policy was trained on {META['env_id']}, not {env_id}")
        self.device = device
        self.model = torch.jit.load(str(HERE / "policy.ts"), map_location=device).eval()
        self.processing = ObsProcessConfig.model_validate(META["processing"])
        self.low = np.asarray(META["action_low"], np.float32)
        self.high = np.asarray(META["action_high"], np.float32)
        self.reset()

    @classmethod
    def get_obs_mode(cls, env_id: str | None = None) -> str:
        return META["env_obs_mode"]

    @classmethod
    def get_control_mode(cls, env_id: str | None = None) -> str:
        return META["control_mode"]

    def reset(self, observations=None) -> None:
        self.processor = ObservationProcessor(self.processing, seed=0)

    def act(self, observations) -> np.ndarray:
        obs = self.processor(observations)
        batch = {k: torch.as_tensor(np.ascontiguousarray(obs[k]))[None].to(self.device) for k in META["obs_keys"]}
        with torch.no_grad():
            action = self.model(batch)[0].float().cpu().numpy()
        return np.clip(action, self.low, self.high)
