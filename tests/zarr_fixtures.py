"""Small real Zarr v3 demo datasets in the pipelines.render layout, for the fast test tier.

``write_demo_zarr`` writes episodes through the project's one writer (``ms2core.data.store``); ``fake_expert_episodes`` rolls out the fake
env's goal-seeking expert (action = clip((goal - tcp) / 0.05)); ``fake_pointcloud_obs``
is a tiny local stand-in for ms2core.obs.process_observation on the fake env's
point-cloud observations (the real one is owned by the render stage).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ms2core.data.store import synthetic_manifest, write_dataset
from ms2core.envs import make_env
from ms2core.envs.fake import STEP_SIZE_M


def write_demo_zarr(path: str | Path, episodes: list[dict], obs_mode: str = "state", chunk_rows: int = 64,
                    extra_rows: dict[str, np.ndarray] | None = None) -> Path:
    """episodes: dicts with obs {key: (T, ...)}, actions (T, A), rewards, success (T,) and optionally terminated,
    truncated (T,) (default ManiSkill2's: terminated = success, truncated = a last step not terminated),, written by the
    project's one writer (ms2core.data.store.write_dataset) with a DatasetManifest built through its model.

    ``extra_rows`` ({key: rows}) are stored after the committed episodes' rows (rows past the last
    committed episode, as an interrupted render leaves them); readers must never return them.
    """
    path = Path(path)
    lengths = [len(ep["actions"]) for ep in episodes]

    def cat(get):
        return np.concatenate([get(ep) for ep in episodes])

    def flag(ep, key):
        terminated = np.asarray(ep.get("terminated", ep["success"]), bool)
        if key == "terminated":
            return terminated
        return np.asarray(ep["truncated"], bool) if "truncated" in ep else \
            (np.arange(len(terminated)) == len(terminated) - 1) & ~terminated

    columns = {f"obs/{key}": cat(lambda ep: ep["obs"][key]) for key in episodes[0]["obs"]}
    for key, dtype in (("actions", np.float32), ("rewards", np.float32), ("success", bool)):
        columns[key] = cat(lambda ep: np.asarray(ep[key], dtype))
    for key in ("terminated", "truncated"):
        columns[key] = cat(lambda ep: flag(ep, key))
    for key, rows in (extra_rows or {}).items():
        columns[key] = np.concatenate([columns[key], np.asarray(rows, columns[key].dtype)])
    n_extra = max((len(v) for v in (extra_rows or {}).values()), default=0)
    for key in columns:  # every array gets the extra rows (zeros where none were given)
        if len(columns[key]) < sum(lengths) + n_extra:
            pad = np.zeros((sum(lengths) + n_extra - len(columns[key]), *columns[key].shape[1:]), columns[key].dtype)
            columns[key] = np.concatenate([columns[key], pad])
    success = [bool(np.asarray(ep["success"])[-1]) for ep in episodes]
    manifest = synthetic_manifest("PickCube-v0", "pd_ee_delta_pose", obs_mode, lengths,
                                  source="tests/zarr_fixtures.py fake-env expert", success=success)
    write_dataset(str(path), manifest, columns, lengths, chunk_rows=chunk_rows)
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
        obs, actions, rewards, success = [], [], [], []
        while True:
            obs.append(convert(raw))
            action = expert_action(env, env.action_space.shape[0])
            raw, reward, terminated, truncated, info = env.step(action)
            actions.append(action)
            rewards.append(reward)
            success.append(info["success"])
            if info["success"] or truncated:
                break
        episodes.append(dict(obs={k: np.stack([o[k] for o in obs]) for k in obs[0]}, actions=np.stack(actions),
                             rewards=np.asarray(rewards), success=np.asarray(success)))
    env.close()
    return episodes


def write_fake_expert_dataset(path: str | Path, num_episodes: int = 20, seed: int = 0, obs_mode: str = "state",
                              n_points: int = 64, chunk_rows: int = 64) -> Path:
    episodes = fake_expert_episodes(num_episodes, seed, obs_mode, n_points=n_points)
    return write_demo_zarr(path, episodes, obs_mode, chunk_rows)


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
                             rewards=np.zeros(length), success=np.zeros(length, bool)))
        t += length
    extra = {"obs/state": np.full((extra_rows, 2), -999.0), "actions": np.full((extra_rows, 1), -999.0)}
    return write_demo_zarr(path, episodes, "state", chunk_rows, extra_rows=extra if extra_rows else None)
