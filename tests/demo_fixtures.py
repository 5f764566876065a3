"""Builders of demo pairs in ManiSkill2's format for render/validate tests (fake env and real SAPIEN).

Each pair is recorded by stepping an env with a simple scripted policy (towards
the goal, with noise) and saving ``env.unwrapped.get_state()`` before every
step and after the last one, exactly what ManiSkill2's RecordEpisode stores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ms2core.envs import make_env
from ms2core.trajectory import Episode, write_demo_pair
from storage_schemas.demos import EpisodeMeta

CONTROL_MODE = "pd_ee_delta_pose"


def record_episode(env, episode_id: int, seed: int, n_steps: int, rng: np.random.Generator,
                   with_states: bool = True, stop_at_termination: bool = True) -> Episode:
    env.reset(seed=seed)
    u = env.unwrapped
    states = [u.get_state()]
    actions, successes, rewards = [], [], []
    for _ in range(n_steps):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        goal_pos = getattr(u, "goal_pos", None)
        tcp = getattr(getattr(u, "tcp", None), "pose", None)
        if goal_pos is not None and tcp is not None:  # real PickCube: head for the goal
            action[:3] = np.clip((np.asarray(goal_pos) - tcp.p) * 10, -1, 1) + rng.normal(0, 0.2, 3)
        elif hasattr(u, "_goal"):  # fake env
            action[:3] = np.clip((u._goal - u._tcp) / 0.05, -1, 1) + rng.normal(0, 0.3, 3)
        action = np.clip(action, env.action_space.low, env.action_space.high).astype(np.float32)
        _, reward, terminated, truncated, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        successes.append(bool(info["success"]))
        states.append(u.get_state())
        if terminated and stop_at_termination:
            break
    n = len(actions)
    meta = EpisodeMeta(episode_id=episode_id, episode_seed=seed, reset_kwargs={"seed": seed},
                       control_mode=env.unwrapped.control_mode if hasattr(env.unwrapped, "control_mode") else CONTROL_MODE,
                       elapsed_steps=n, info={"success": successes[-1]})
    return Episode(meta=meta, actions=np.stack(actions), success=np.array(successes),
                   env_states=np.stack(states).astype(np.float32) if with_states else None,
                   env_init_state=None if with_states else states[0].astype(np.float32),
                   extras={"rewards": np.asarray(rewards, np.float32)})


def write_pair(path: Path, env_id: str, episodes: list[Episode], control_mode: str = CONTROL_MODE) -> Path:
    env_info = {"env_id": env_id, "max_episode_steps": 200,
                "env_kwargs": {"obs_mode": "state", "control_mode": control_mode}}
    h5, _ = write_demo_pair(path, env_info, episodes)
    return h5


def fake_demo_pair(path: Path, n_episodes: int = 5, steps: tuple[int, int] = (6, 14), seed: int = 0,
                   with_states: bool = True) -> Path:
    """A demo pair recorded on the fake PickCube env (10-dim states); episode lengths vary (n steps each, going on
    after success: some episodes end terminated, others are cut while not at the goal)."""
    env = make_env("PickCube-v0", "state", CONTROL_MODE, backend="fake")
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n_episodes):
        n = int(rng.integers(steps[0], steps[1] + 1))
        episodes.append(record_episode(env, i, 1000 + seed * 100 + i, n, rng, with_states, stop_at_termination=False))
    return write_pair(path, "PickCube-v0", episodes)


def sim_demo_pair(path: Path, n_episodes: int = 2, n_steps: int = 8, seed: int = 0,
                  env_id: str = "PickCube-v0") -> Path:
    """A demo pair recorded on the real simulator (state mode, fast); short scripted episodes."""
    env = make_env(env_id, "state", CONTROL_MODE)
    rng = np.random.default_rng(seed)
    try:
        episodes = [record_episode(env, i, 2000 + seed * 100 + i, n_steps, rng) for i in range(n_episodes)]
    finally:
        env.close()
    return write_pair(path, env_id, episodes)
