"""Record raw ManiSkill2 observations for the ml2l-layout reference (run in the project venv).

    PYTHONPATH=. .venv/bin/python tests/data/ml2l/make_raw_obs.py

Writes ``raw_obs.npz``: one raw observation (nested keys joined with '/') per case, from the fake
env (the fast tier's) and from the real PickCube-v0 (SAPIEN, 32x32 cameras so the file stays small),
in obs modes pointcloud and rgbd, after a few steps so the arm is not at its rest pose.
``make_obs_reference.py`` then runs ManiSkill2-Learn's own observation wrapper on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ms2core.envs import make_env

HERE = Path(__file__).resolve().parent
CASES = {  # name -> (backend, obs_mode)
    "fake_pointcloud": ("fake", "pointcloud"),
    "fake_rgbd": ("fake", "rgbd"),
    "pickcube_pointcloud": ("sapien", "pointcloud"),
    "pickcube_rgbd": ("sapien", "rgbd"),
}


def flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            flatten(f"{prefix}/{key}" if prefix else key, sub, out)
            if isinstance(sub, dict) and not sub:
                out[f"{prefix}/{key}/__empty__" if prefix else f"{key}/__empty__"] = np.zeros(0)
    else:
        out[prefix] = np.asarray(value)


def record(backend: str, obs_mode: str) -> dict:
    env = make_env("PickCube-v0", obs_mode, "pd_ee_delta_pose", backend=backend, camera_size=(32, 32))
    raw, _ = env.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(5):
        raw, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
    env.close()
    if backend == "fake":  # 128x128 point cameras whatever camera_size says: keep every 8th point
        raw["pointcloud"] = {k: v[::8] for k, v in raw.get("pointcloud", {}).items()} or raw.pop("pointcloud", None)
        if raw["pointcloud"] is None:
            raw.pop("pointcloud")
    return raw


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    for name, (backend, obs_mode) in CASES.items():
        flat: dict[str, np.ndarray] = {}
        flatten("", record(backend, obs_mode), flat)
        arrays.update({f"{name}|{k}": v for k, v in flat.items()})
    np.savez_compressed(HERE / "raw_obs.npz", **arrays)


if __name__ == "__main__":
    main()
