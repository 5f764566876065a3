"""The one checkpoint format of every algorithm, and BC's checkpoints (model, optimizer, RNG states, sampler).

Every checkpoint ``ms2 train`` writes (BC's ``ckpt_*.pt``, the online algorithms' ``checkpoint.pt``, the slim
policy file logged to MLflow) is a dict that starts with the same header::

    format      "ms2flow.checkpoint"
    version     CHECKPOINT_VERSION (2)
    algo        bc | ppo | dapg | sac | gail (a name of ms2core.algos.table.ALGORITHMS)
    config      the run's resolved config (model_dump(mode="json"))
    updates     gradient updates done (BC: train steps; PPO/DAPG: rollout updates; SAC/GAIL: critic steps)
    env_steps   env transitions collected (None for BC)

followed by the algorithm's own state (BC: model, optimizer, rng, sampler, extra; online RL: actor, critic,
optimizers, rng, ...; policy files: actor and policy_spec). :func:`read_checkpoint` reads every format
ms2flow has written and returns it in this one (v1: BC's ``{version: 1, step, model, ...}`` and the
online algorithms' ``{algo, env_steps, updates, ...}``, with BC's pre-``run``/``net`` config keys renamed).

Written atomically (temporary name in the same directory, fsync, os.replace), so
a run killed mid-write leaves the previous checkpoint intact and never a
truncated file under a final name.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ms2core.fileio import torch_save_atomic

from ms2core.errors import CheckpointError

CHECKPOINT_FORMAT = "ms2flow.checkpoint"
CHECKPOINT_VERSION = 2


def checkpoint_header(algo: str, config: dict, updates: int, env_steps: int | None) -> dict[str, Any]:
    """The fields every checkpoint starts with (see the module docstring)."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "algo": algo, "config": config,
            "updates": int(updates), "env_steps": None if env_steps is None else int(env_steps)}


def upgrade_checkpoint(state: dict[str, Any], path, error: type[Exception] = CheckpointError) -> dict[str, Any]:
    """``state`` in the current format; checkpoints of older ms2flow versions are converted in memory."""
    if state.get("format") == CHECKPOINT_FORMAT:
        if not isinstance(state.get("version"), int) or state["version"] > CHECKPOINT_VERSION:
            raise error(f"checkpoint {path} has format version {state.get('version')!r}; this ms2flow reads up to "
                        f"{CHECKPOINT_VERSION}", hint="evaluate it with the ms2flow version that wrote it")
        return state
    if state.get("version") == 1 and "model" in state:  # v1 BC
        from storage_schemas.training import BC_RENAMED_KEYS, upgrade_renamed_keys

        config = upgrade_renamed_keys(state.get("config") or {}, BC_RENAMED_KEYS)
        return {**state, **checkpoint_header("bc", config, state.get("step", 0), None)}
    if isinstance(state.get("algo"), str) and "config" in state:  # v1 online RL checkpoint or policy file
        return {**state, **checkpoint_header(state["algo"], state["config"], state.get("updates") or 0,
                                             state.get("env_steps") or 0)}
    raise error(f"{path} is not an ms2flow checkpoint", hint="pass a .pt file written by `ms2 train`")


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    error: type[Exception] = CheckpointError) -> dict[str, Any]:
    """Any ms2flow checkpoint at ``path``, in the current format (header + the algorithm's state)."""
    return upgrade_checkpoint(read_checkpoint_file(path, map_location, error), path, error)


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch_cuda"])


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    step: int, config: dict, sampler: dict | None = None, extra: dict | None = None,
                    algo: str = "bc") -> Path:
    """Write a BC-style checkpoint atomically (``step`` = updates). ``config``: the resolved config as a dict."""
    payload = {
        **checkpoint_header(algo, config, step, None),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": rng_states(),
        "sampler": sampler or {},
        "extra": extra or {},
    }
    return torch_save_atomic(payload, path)


def read_checkpoint_file(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                         error: type[Exception] = CheckpointError) -> dict[str, Any]:
    """The dict in a ``.pt`` file; ``error`` (with the path and a hint) if it is missing, unreadable or no dict."""
    path = Path(path)
    if not path.is_file():
        raise error(f"checkpoint {path} does not exist", hint="pass a .pt file written by `ms2 train`")
    try:
        # RNG states hold numpy arrays and tuples: not loadable with weights_only.
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise error(f"checkpoint {path} is not readable: {exc}", hint="the file is truncated or not a checkpoint") from exc
    if not isinstance(payload, dict):
        raise error(f"{path} is not an ms2flow checkpoint", hint="pass a .pt file written by `ms2 train`")
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A BC-style checkpoint (model, optimizer, step, RNG states, ...), in the current format."""
    payload = read_checkpoint(path, map_location)
    if "model" not in payload:
        raise CheckpointError(f"{path} is a {payload['algo']} checkpoint, not one of BC",
                              hint=f"resume it with `ms2 train {payload['algo']}`")
    return payload


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.pt"


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    found = sorted(Path(directory).glob("ckpt_*.pt"))
    return found[-1] if found else None
