"""Run ManiSkill2-Learn's own observation processing on the recorded raw observations (side venv).

    PYTHONPATH=/tmp/ML2L:tests/data/ml2l/side_env_stubs /tmp/ml2l-venv/bin/python tests/data/ml2l/make_obs_reference.py

Reads ``raw_obs.npz`` (make_raw_obs.py) and writes ``ml2l_obs_reference.npz``: for every case and
variant, what ManiSkill2-Learn's ``ManiSkill2_ObsWrapper.observation`` returns followed by the
float64 -> float32 cast its convert_state applies (``GDict.f64_to_f32``). The wrapper is called
on an instance whose env is a stand-in carrying only ``obs_mode`` (what ``observation`` reads),
so no simulator runs here. Variants (pointcloud): every obs frame with n_points larger than the
visible count, where ML2L pads by repeating points in order, so xyz/rgb are deterministic; and
one with 64 points + 50 goal points (random subset: shapes, dtypes and the deterministic keys).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from maniskill2_learn.env.wrappers import ManiSkill2_ObsWrapper
from maniskill2_learn.utils.data import GDict

HERE = Path(__file__).resolve().parent
BIG = 5000  # more than any case's visible points
VARIANTS = {  # name -> (obs_frame, n_points, n_goal_points)
    "base": ("base", BIG, -1),
    "world": ("world", BIG, -1),
    "ee": ("ee", BIG, -1),
    "ee_goal": ("ee", 64, 50),
}


def unflatten(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        parts = key.split("/")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if parts[-1] != "__empty__":
            node[parts[-1]] = value
    return out


def ml2l_observation(raw: dict, obs_mode: str, obs_frame="base", n_points=1200, n_goal_points=-1) -> dict:
    wrapper = object.__new__(ManiSkill2_ObsWrapper)
    wrapper.__dict__.update(env=SimpleNamespace(obs_mode=obs_mode), ms2_env_name="PickCube-v0", obs_frame=obs_frame,
                            n_points=n_points, n_goal_points=n_goal_points, img_size=None)
    return GDict(wrapper.observation(raw)).f64_to_f32(wrapper=False)


def main() -> None:
    data = np.load(HERE / "raw_obs.npz")
    cases: dict[str, dict] = {}
    for key in data.files:
        case, name = key.split("|", 1)
        cases.setdefault(case, {})[name] = data[key]
    out = {}
    for case, flat in cases.items():
        obs_mode = "pointcloud" if case.endswith("pointcloud") else "rgbd"
        variants = VARIANTS if obs_mode == "pointcloud" else {"world": ("world", 0, -1)}
        for variant, (frame, n, k) in variants.items():
            np.random.seed(0)
            processed = ml2l_observation(unflatten(flat), obs_mode, frame, n, k)
            for name, value in processed.items():
                out[f"{case}|{variant}|{name}"] = value
                print(case, variant, name, value.shape, value.dtype)
    np.savez_compressed(HERE / "ml2l_obs_reference.npz", **out)


if __name__ == "__main__":
    main()
