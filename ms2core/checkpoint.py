"""Training checkpoints: model, optimizer, step, every RNG state, sampler state and the resolved config.

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

CHECKPOINT_VERSION = 1


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
                    step: int, config: dict, sampler: dict | None = None, extra: dict | None = None) -> Path:
    """Write a checkpoint atomically. ``config`` is the run's resolved config as a JSON-able dict."""
    payload = {
        "version": CHECKPOINT_VERSION,
        "step": int(step),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": rng_states(),
        "sampler": sampler or {},
        "config": config,
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
    """A BC checkpoint (model, optimizer, step, RNG states, ...) of this CHECKPOINT_VERSION."""
    payload = read_checkpoint_file(path, map_location)
    if payload.get("version") != CHECKPOINT_VERSION or "model" not in payload:
        raise CheckpointError(f"{path} is not an ms2flow checkpoint (version {CHECKPOINT_VERSION})",
                              hint="pass a .pt file written by `ms2 train`")
    return payload


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.pt"


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    found = sorted(Path(directory).glob("ckpt_*.pt"))
    return found[-1] if found else None
