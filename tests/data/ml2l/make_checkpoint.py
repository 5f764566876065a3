"""Write the tiny ManiSkill2-Learn checkpoint and reference actions beside it (run in a side venv).

Not part of ms2flow: this script runs with ManiSkill2-Learn importable (its repository checked
out outside the project, e.g. /tmp/ML2L) and uses only ManiSkill2-Learn's own config loader,
agent builder, actor and save_checkpoint, so the files it writes are what a ManiSkill2-Learn
user's BC run would save::

    PYTHONPATH=/tmp/ML2L:tests/data/ml2l/side_env_stubs /tmp/ml2l-venv/bin/python tests/data/ml2l/make_checkpoint.py

Side environment (see the README's ML2L section): python3.11 venv with ML2L's pure-Python deps from
PyPI, torch from the project venv, and stubs for pytorch3d, torchvision and pynvml (imported at
module import time by code this script never runs).

For each config (BC with a TanhHead, PPO with a GaussianHead and a critic sharing the visual
backbone) writes ``<config>.ckpt`` (ML2L's {"meta", "state_dict"}) and ``<config>_io.npz`` (fixed observations in the ml2l layout and the actions the ML2L
actor returns for them in mode "eval"). A few Adam steps towards random targets first, so the
weights are not the near-zero initial output layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gymnasium.spaces import Box

from maniskill2_learn.methods.builder import build_agent
from maniskill2_learn.networks.utils import get_kwargs_from_shape, replace_placeholder_with_args
from maniskill2_learn.utils.data import GDict
from maniskill2_learn.utils.meta import Config
from maniskill2_learn.utils.torch import save_checkpoint

HERE = Path(__file__).resolve().parent
N_POINTS = 1200 + 50
STATE_DIM = 30
ACTION_DIM = 7
BATCH = 4


def observations(rng: np.random.Generator, batch: int, n_points: int = N_POINTS) -> dict[str, np.ndarray]:
    return {
        "xyz": rng.normal(0, 0.2, (batch, n_points, 3)).astype(np.float32),
        "rgb": rng.uniform(0, 1, (batch, n_points, 3)).astype(np.float32),
        "frame_related_states": rng.normal(0, 0.3, (batch, 4, 3)).astype(np.float32),
        "to_frames": np.tile(np.eye(4, dtype=np.float32), (batch, 2, 1, 1)),
        "state": rng.normal(0, 0.5, (batch, STATE_DIM)).astype(np.float32),
    }


def write(name: str) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = Config.fromfile(str(HERE / f"{name}.py"))
    obs_shape = GDict(observations(rng, 1)).slice(0).list_shape  # what ML2L's get_env_info computes
    action_space = Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
    env_params = dict(obs_shape=obs_shape, action_shape=ACTION_DIM, action_space=action_space, is_discrete=False)
    cfg = replace_placeholder_with_args(cfg, **get_kwargs_from_shape(obs_shape, ACTION_DIM))
    cfg.agent_cfg["env_params"] = env_params
    agent = build_agent(cfg.agent_cfg).float()
    print(agent)

    train_obs = GDict(observations(rng, 32, 128)).to_torch(dtype="float32", wrapper=False)
    targets = torch.from_numpy(rng.uniform(-0.9, 0.9, (32, ACTION_DIM)).astype(np.float32))
    for _ in range(30):
        pred = agent.actor(train_obs, mode="eval")  # PPO's agent.forward runs without gradients
        loss = torch.nn.functional.mse_loss(pred, targets)
        agent.actor_optim.zero_grad()
        loss.backward()
        if name.startswith("ppo"):  # its actor optimiser leaves the shared visual backbone to the critic's
            agent.critic_optim.step()
        agent.actor_optim.step()
    agent.eval()

    save_checkpoint(agent, str(HERE / f"{name}.ckpt"), optimizer=None, meta={"note": "ms2flow test data"})
    test_obs = observations(np.random.default_rng(1), BATCH, 64)  # PointNet takes any point count; keeps the file small
    with torch.no_grad():
        actions = agent(test_obs, mode="eval").numpy()
    np.savez_compressed(HERE / f"{name}_io.npz", actions=actions, **{f"obs_{k}": v for k, v in test_obs.items()})
    for name, value in agent.state_dict().items():
        print(name, tuple(value.shape))
    print("actions", actions)


if __name__ == "__main__":
    for config in ("bc_pointnet_tiny", "ppo_pointnet_tiny"):
        write(config)
