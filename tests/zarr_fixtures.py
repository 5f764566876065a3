"""Small real Zarr v3 demo datasets in the pipelines.render layout, for the fast test tier.

``write_demo_zarr`` writes episodes; ``fake_expert_episodes`` rolls out the fake
env's goal-seeking expert (action = clip((goal - tcp) / 0.05)); ``fake_pointcloud_obs``
is a tiny local stand-in for ms2core.obs.process_observation on the fake env's
point-cloud observations (the real one is owned by the render stage).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from ms2core.envs import make_env
from ms2core.envs.fake import STEP_SIZE_M


def write_demo_zarr(path: str | Path, episodes: list[dict], manifest: dict | None = None, chunk_rows: int = 64) -> Path:
    """episodes: dicts with obs {key: (T, ...)}, actions (T, A), rewards, success (T,) and optionally terminated,
    truncated (T,) (default ManiSkill2's: terminated = success, truncated = a last step not terminated)."""
    path = Path(path)
    root = zarr.open_group(str(path), mode="w")
    data = root.require_group("data")
    obs_group = data.require_group("obs")
    meta = root.require_group("meta")

    def cat(get):
        return np.concatenate([get(ep) for ep in episodes])

    for key in episodes[0]["obs"]:
        arr = cat(lambda ep: ep["obs"][key])
        obs_group.create_array(key, data=arr, chunks=(chunk_rows, *arr.shape[1:]))
    def flag(ep, key):
        terminated = np.asarray(ep.get("terminated", ep["success"]), bool)
        if key == "terminated":
            return terminated
        return np.asarray(ep["truncated"], bool) if "truncated" in ep else \
            (np.arange(len(terminated)) == len(terminated) - 1) & ~terminated

    for key, dtype in (("actions", np.float32), ("rewards", np.float32), ("success", bool), ("terminated", bool),
                       ("truncated", bool)):
        arr = cat(lambda ep: flag(ep, key) if key in ("terminated", "truncated") else np.asarray(ep[key], dtype))
        data.create_array(key, data=arr, chunks=(chunk_rows, *arr.shape[1:]))
    ends = np.cumsum([len(ep["actions"]) for ep in episodes]).astype(np.int64)
    meta.create_array("episode_ends", data=ends, chunks=(max(1, len(ends)),))
    root.attrs["ms2flow"] = manifest or {}
    return path


def expert_action(env, action_dim: int) -> np.ndarray:
    base = env.unwrapped
    action = np.zeros(action_dim, np.float32)
    action[:3] = np.clip((base._goal - base._tcp) / STEP_SIZE_M, -1.0, 1.0)
    return action


def fake_pointcloud_obs(raw: dict, n_points: int = 64, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Local converter for tests: xyzw -> N sampled xyz, rgb, state = agent + extra flattened in key order."""
    rng = rng or np.random.default_rng(0)
    pc = raw["pointcloud"]
    pick = rng.choice(len(pc["xyzw"]), n_points, replace=False)
    state = np.concatenate([np.ravel(v) for group in ("agent", "extra") for v in raw[group].values()])
    return {"xyz": pc["xyzw"][pick, :3].astype(np.float32), "rgb": pc["rgb"][pick].astype(np.uint8),
            "state": state.astype(np.float32)}


def fake_state_obs(raw) -> dict[str, np.ndarray]:
    return {"state": np.asarray(raw, np.float32)}


def fake_expert_episodes(num_episodes: int, seed: int = 0, obs_mode: str = "state",
                         control_mode: str = "pd_ee_delta_pose", n_points: int = 64, max_steps: int = 50) -> list[dict]:
    env = make_env("PickCube-v0", obs_mode=obs_mode, control_mode=control_mode, backend="fake",
                   max_episode_steps=max_steps, **({"n_points": 512} if obs_mode == "pointcloud" else {}))
    rng = np.random.default_rng(seed)
    convert = fake_state_obs if obs_mode == "state" else (lambda raw: fake_pointcloud_obs(raw, n_points, rng))
    episodes = []
    for i in range(num_episodes):
        raw, _ = env.reset(seed=seed + i)
        obs, actions, rewards, success, dones = [], [], [], [], []
        while True:
            obs.append(convert(raw))
            action = expert_action(env, env.action_space.shape[0])
            raw, reward, terminated, truncated, info = env.step(action)
            actions.append(action)
            rewards.append(reward)
            success.append(info["success"])
            done = bool(info["success"] or truncated)
            dones.append(done)
            if done:
                break
        episodes.append(dict(obs={k: np.stack([o[k] for o in obs]) for k in obs[0]}, actions=np.stack(actions),
                             rewards=np.asarray(rewards), success=np.asarray(success), dones=np.asarray(dones)))
    env.close()
    return episodes


def fake_manifest(obs_mode: str = "state", num_episodes: int = 0) -> dict:
    return {"env_id": "PickCube-v0", "obs_mode": obs_mode, "control_mode": "pd_ee_delta_pose",
            "num_episodes": num_episodes, "source": "tests/zarr_fixtures.py fake-env expert"}


def write_fake_expert_dataset(path: str | Path, num_episodes: int = 20, seed: int = 0, obs_mode: str = "state",
                              n_points: int = 64, chunk_rows: int = 64) -> Path:
    episodes = fake_expert_episodes(num_episodes, seed, obs_mode, n_points=n_points)
    return write_demo_zarr(path, episodes, fake_manifest(obs_mode, num_episodes), chunk_rows)


def write_counting_dataset(path: str | Path, episode_lengths: list[int], start: int = 0, chunk_rows: int = 16,
                           extra_rows: int = 0) -> Path:
    """Rows whose obs 'state' and actions hold their own global row number (to check sampling exactly).

    ``extra_rows`` appends uncommitted rows beyond episode_ends (a render interrupted mid-episode).
    """
    episodes = []
    t = start
    for length in episode_lengths:
        ids = np.arange(t, t + length, dtype=np.float32)
        episodes.append(dict(obs={"state": np.stack([ids, -ids], 1)}, actions=ids[:, None].copy(),
                             rewards=np.zeros(length), success=np.zeros(length, bool), dones=np.eye(1, length, length - 1, dtype=bool)[0]))
        t += length
    path = write_demo_zarr(path, episodes, {"env_id": "Fake-v0", "obs_mode": "state"}, chunk_rows)
    if extra_rows:
        root = zarr.open_group(str(path), mode="r+")
        for name in ("data/obs/state", "data/actions"):
            arr = root[name]
            old = arr[:]
            arr.resize((old.shape[0] + extra_rows, *old.shape[1:]))
            arr[old.shape[0]:] = -999.0
    return path
