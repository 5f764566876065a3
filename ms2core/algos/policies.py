"""Any training checkpoint as an evaluation policy: ``load_policy(path) -> (policy, view)``.

The checkpoint is read in the one format of ``ms2core.checkpoint`` (older formats converted) and handed to
the policy loader its header's ``algo`` names in ``ms2core.algos.table.ALGORITHMS``: BC's
(``ms2core.algos.bc.policy_from_checkpoint``) or the online algorithms' below. Online-RL checkpoints
(the ``checkpoint.pt`` of ``train_ppo|dapg|sac|gail``, or the slim policy file
:func:`write_policy_file` extracts from one for MLflow) are rebuilt from the
``policy_spec`` they record (observation shapes and processing, action bounds,
FrameMiner frames) and the run's ``net`` config, and wrapped in :class:`RLPolicy`:

* deterministic action = the Gaussian mean (PPO/DAPG) or ``tanh(mean)`` (SAC/GAIL),
* mapped from the policy's [-1, 1] to the env's action bounds exactly as
  ``ms2core.rollout.VectorEnv`` did during training (clip, then scale).

The returned ``view`` has the keys of a BC checkpoint that evaluation, export
and the MLflow pyfunc model read::

    view["config"]["env"]   the EnvConfig dict (rollout.env for online RL)
    view["extra"]           algo, obs_mode, obs_shapes, action_dim, dataset_manifest, obs_processing, gym_env_id
    view["step"]            the checkpoint's training step: BC updates, online RL env steps
                            (what EvaluationResult.checkpoint_step reports)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ms2core.checkpoint import checkpoint_header, read_checkpoint
from ms2core.errors import CheckpointError

SQUASHED_ALGOS = ("sac", "gail")  # tanh-Gaussian actors
POLICY_FILE_KIND = "ms2flow.rl_policy"


class RLPolicy(nn.Module):
    """An online-RL actor acting in env units: ``forward(obs)`` = deterministic action; ``act`` as BC's Policy."""

    def __init__(self, actor: nn.Module, squashed: bool, action_low, action_high):
        super().__init__()
        self.actor = actor
        self.squashed = squashed
        self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.float32))

    def to_env_action(self, policy_action: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [low, high] (clipped first, like VectorEnv.to_env_action)."""
        a = policy_action.clamp(-1.0, 1.0)
        return self.action_low + (a + 1.0) * 0.5 * (self.action_high - self.action_low)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        mean = self.actor(obs)[0]
        return self.to_env_action(torch.tanh(mean) if self.squashed else mean)

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], sample_mode: str = "mean",
            generator: torch.Generator | None = None) -> torch.Tensor:
        if sample_mode == "mean":
            return self(obs)
        mean, log_std = self.actor(obs)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        u = mean + noise * log_std.exp()
        return self.to_env_action(torch.tanh(u) if self.squashed else u)


def _rl_parts(state: dict[str, Any], path) -> tuple[str, dict, dict]:
    from ms2core.algos.table import ALGORITHMS

    algo = state.get("algo")
    online = [name for name, spec in ALGORITHMS.items() if spec.online]
    if algo not in online:
        raise CheckpointError(f"{path} is not an online-RL checkpoint (algo {algo!r})",
                              hint=f"pass a checkpoint of `ms2 train {'|'.join(online)}`")
    spec = state.get("policy_spec")
    if spec is None:
        raise CheckpointError(
            f"{algo} checkpoint {path} records no policy_spec (observation shapes, action bounds), so its policy "
            "cannot be rebuilt", hint="it predates policy specs or used a custom network: retrain with `ms2 train`")
    actor_state = state["actor"] if "actor" in state else state.get("agent", {}).get("actor")
    if actor_state is None:
        raise CheckpointError(f"{algo} checkpoint {path} holds no actor weights", hint="pass the run's checkpoint.pt")
    return algo, spec, actor_state


def build_rl_actor(algo: str, config: dict, spec: dict) -> nn.Module:
    """The actor network of an online-RL run, untrained (shapes from ``spec``, layers from ``config['net']``)."""
    from storage_schemas.rl import NetConfig

    net = NetConfig.model_validate(config["net"])
    shapes = {k: tuple(v) for k, v in spec["obs_shapes"].items()}
    if algo in SQUASHED_ALGOS:
        from ms2core.algos.sac import build_sac_actor

        return build_sac_actor({k: int(math.prod(v)) for k, v in shapes.items()}, int(spec["action_dim"]), net)
    from ms2core.algos.ppo import build_actor_critic
    from ms2core.nn.frameminer import Frame

    frames = [Frame(**f) for f in spec["frames"]] if spec.get("frames") else None
    return build_actor_critic(shapes, int(spec["action_dim"]), net, frames=frames)[0]


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(policy with ``act(obs, sample_mode, generator)``, checkpoint view) for a checkpoint of any algorithm."""
    from ms2core.algos.table import ALGORITHMS

    state = read_checkpoint(path)
    spec = ALGORITHMS.get(state["algo"])
    if spec is None:
        raise CheckpointError(f"checkpoint {path} was written by algorithm {state['algo']!r}, which this ms2flow "
                              "does not have", hint=f"known: {', '.join(ALGORITHMS)}")
    return spec.load_policy(state, path, device)


def rl_policy_from_checkpoint(state: dict[str, Any], path, device: str | torch.device = "cpu"
                              ) -> tuple[RLPolicy, dict[str, Any]]:
    """The :class:`RLPolicy` of an online-RL checkpoint or policy file (read by ``read_checkpoint``), and its view."""
    algo, spec, actor_state = _rl_parts(state, path)
    actor = build_rl_actor(algo, state["config"], spec)
    try:
        actor.load_state_dict(actor_state)
    except RuntimeError as exc:
        raise CheckpointError(f"{algo} checkpoint {path}: the weights do not fit the network its config describes: "
                              f"{exc}", hint="the checkpoint was edited or written by another version") from exc
    policy = RLPolicy(actor, algo in SQUASHED_ALGOS, spec["action_low"], spec["action_high"]).to(device).eval()
    rollout = state["config"]["rollout"]
    processing = spec.get("obs_processing")
    view = {
        "config": {"env": rollout["env"], "algo": algo},
        "extra": {"algo": algo, "obs_mode": (processing or {}).get("obs_mode", rollout["env"]["obs_mode"]),
                  "obs_shapes": spec["obs_shapes"], "action_dim": int(spec["action_dim"]), "dataset_manifest": None,
                  "obs_processing": processing, "gym_env_id": rollout.get("gym_env_id")},
        "step": int(state.get("env_steps") or 0),
    }
    return policy, view


def write_policy_file(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The policy part of an online-RL training checkpoint (no critic, optimiser or replay buffer), written
    atomically to ``out``: what MLflow logs as the model, small and loadable with :func:`load_policy`."""
    from ms2core.fileio import torch_save_atomic

    state = read_checkpoint(checkpoint)
    algo, spec, actor_state = _rl_parts(state, checkpoint)
    header = checkpoint_header(algo, state["config"], state["updates"], state["env_steps"])
    return torch_save_atomic(dict(**header, kind=POLICY_FILE_KIND, actor=actor_state, policy_spec=spec), out)
