"""Export a trained policy as a self-contained package (TorchScript weights + observation processing).

    DIR/
      policy.py          class Policy: reset(), act(raw_obs) -> action, get_obs_mode(), get_control_mode()
      policy.ts          the network (TorchScript): processed obs batch -> deterministic action
      policy.json        task, obs/control mode, processing options, obs keys, action bounds
      vendor/            ms2core/obs.py, ms2core/errors.py, storage_schemas/{env,dataset}.py (copies)
      requirements.txt   torch, numpy, pydantic
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ms2core.errors import ConfigError
from ms2core.fileio import staged_directory

ROOT = Path(__file__).resolve().parents[1]
VENDORED = ("ms2core/obs.py", "ms2core/errors.py", "storage_schemas/env.py", "storage_schemas/dataset.py")


class _Deterministic(torch.nn.Module):
    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        from ms2core.nn.heads import ActionDist

        out = self.policy(obs)
        return out.mode() if isinstance(out, ActionDist) else out  # (a Tensor has .mode() too: the statistical one)


def _example_batch(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros((1, *v), dtype=torch.uint8 if k == "rgb" else torch.float32) for k, v in shapes.items()}


def export_policy(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    from ms2core.algos.policies import load_policy
    from ms2core.envs import make_env
    from ms2core.evaluation import require_maniskill_env
    from storage_schemas.dataset import DatasetManifest, ObsProcessConfig

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"{out_dir} already exists", hint="choose another --out or pass --overwrite")
    policy, ckpt = load_policy(checkpoint, "cpu")  # BC or online RL (ms2core.algos.policies)
    require_maniskill_env(ckpt, checkpoint)
    env_cfg, extra = ckpt["config"]["env"], ckpt["extra"]
    manifest = extra.get("dataset_manifest") or {}
    if extra.get("obs_processing") is not None:  # online RL: how its rollouts processed observations
        processing = ObsProcessConfig.model_validate(extra["obs_processing"])
    else:
        processing = (DatasetManifest.model_validate(manifest).options.obs if "options" in manifest
                      else ObsProcessConfig(obs_mode="state"))
    space = make_env(env_cfg["env_id"], "state", env_cfg["control_mode"],
                     backend=env_cfg.get("backend", "sapien")).action_space
    example = _example_batch(extra["obs_shapes"])
    traced = torch.jit.trace(_Deterministic(policy).eval(), (example,), strict=False)
    meta = dict(env_id=env_cfg["env_id"], env_obs_mode=processing.env_obs_mode, control_mode=env_cfg["control_mode"],
                backend=env_cfg.get("backend", "sapien"), processing=processing.model_dump(mode="json"),
                obs_keys=sorted(extra["obs_shapes"]), action_low=np.asarray(space.low).tolist(),
                action_high=np.asarray(space.high).tolist(), checkpoint=str(checkpoint), step=int(ckpt["step"]))

    with staged_directory(out_dir) as tmp:
        torch.jit.save(traced, str(tmp / "policy.ts"))
        (tmp / "policy.json").write_text(json.dumps(meta, indent=2))
        shutil.copy(Path(__file__).with_name("export_template") / "policy.py", tmp / "policy.py")
        for rel in VENDORED:
            target = tmp / "vendor" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            (target.parent / "__init__.py").touch()
            shutil.copy(ROOT / rel, target)
        (tmp / "requirements.txt").write_text("torch\nnumpy\npydantic>=2\nfpsample  # only for downsample='fps'\n")
    return out_dir


def load_exported(path: str | os.PathLike):
    """Import an exported package's Policy class (``ms2 evaluate --policy``)."""
    import importlib.util

    path = Path(path)
    if not (path / "policy.py").exists():
        raise ConfigError(f"{path} is not an exported policy (no policy.py)", hint="make one with ms2 export-policy")
    spec = importlib.util.spec_from_file_location(f"ms2flow_exported_{abs(hash(str(path)))}", path / "policy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Policy, json.loads((path / "policy.json").read_text())


def evaluate_exported(path: str | os.PathLike, num_episodes: int = 10, seed: int = 0,
                      max_episode_steps: int | None = None, backend: str | None = None):
    """Run an exported package's Policy for ``num_episodes`` (seeds seed+i) in this process."""
    import time

    from ms2core.envs import make_env
    from ms2core.evaluation import mean_ci95, rate_ci95
    from storage_schemas.training import EpisodeResult, EvaluationResult

    policy_cls, meta = load_exported(path)
    policy = policy_cls(meta["env_id"])
    env = make_env(meta["env_id"], policy_cls.get_obs_mode(), policy_cls.get_control_mode(),
                   max_episode_steps=max_episode_steps, backend=backend or meta.get("backend", "sapien"),
                   **({"n_points": 4096} if (backend or meta.get("backend")) == "fake" else {}))
    start, episodes = time.perf_counter(), []
    try:
        for i in range(num_episodes):
            obs, _ = env.reset(seed=seed + i)
            policy.reset(obs)
            total, success_once, length = 0.0, False, 0
            while True:
                obs, reward, terminated, truncated, info = env.step(policy.act(obs))
                total, length = total + float(reward), length + 1
                success = bool(info.get("success", False))
                success_once |= success
                if terminated or truncated:
                    break
            episodes.append(EpisodeResult(seed=seed + i, length=length, episode_return=total,
                                          success_at_end=success, success_once=success_once))
    finally:
        env.close()
    return EvaluationResult(
        env_id=meta["env_id"], obs_mode=meta["env_obs_mode"], control_mode=meta["control_mode"],
        checkpoint=str(path), checkpoint_step=int(meta.get("step", 0)), num_episodes=num_episodes, seed=seed,
        sample_mode="mean", max_episode_steps=max_episode_steps,
        success_at_end=rate_ci95([e.success_at_end for e in episodes]),
        success_once=rate_ci95([e.success_once for e in episodes]),
        episode_length=mean_ci95([e.length for e in episodes]),
        episode_return=mean_ci95([e.episode_return for e in episodes]),
        episodes=episodes, wall_time_s=time.perf_counter() - start,
    )
