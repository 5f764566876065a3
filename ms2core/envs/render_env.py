"""The render stage's simulator side: the env a worker renders with (cached) and one episode's rows.

``pipelines.render`` plans, stages and commits; the simulation it needs lives
here, behind the env layer: ``cached_env(EnvKey)`` keeps one env per key in the
worker's env cache (``ms2core.envs.cache``; a Dask worker's process cache), and
``render_episode`` turns one recorded episode into time-major rows through
``ms2core.envs.episode_sim.simulate_recorded_episode``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ms2core.envs.cache import env_cache
from ms2core.envs.episode_sim import simulate_recorded_episode
from ms2core.trajectory import Episode
from storage_schemas.dataset import ObsProcessConfig


@dataclass(frozen=True)
class EnvKey:
    """Everything that decides which env a worker needs (envs are cached per worker by this key)."""

    env_id: str
    obs_mode: str
    control_mode: str
    reward_mode: str
    camera_size: tuple[int, int] | None
    backend: str
    env_kwargs: tuple = ()


def relax_malloc_trimming() -> bool:
    """Undo Dask's worker default MALLOC_TRIM_THRESHOLD_=65536 for this process (glibc only).

    That variable pins glibc's mmap threshold, so every camera texture read
    (hundreds of KB per picture) is a fresh mmap + page faults + munmap: rendering
    in a Dask worker measured 2.7x slower than in a plain process. mallopt restores
    large thresholds at run time, so workers started by any scheduler benefit.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 128 << 20))
    except (OSError, AttributeError):
        return False


def cached_env(key: EnvKey):
    """One env per worker process and key, kept alive across ranges (shader compile is seconds)."""
    def build():
        from ms2core.envs import make_env

        relax_malloc_trimming()
        return make_env(key.env_id, key.obs_mode, key.control_mode, key.reward_mode,
                        max_episode_steps=100_000, camera_size=key.camera_size, backend=key.backend,
                        **dict(key.env_kwargs))

    return env_cache().get(key, build)


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([r[key] for r in rows]) for key in rows[0]}


def render_episode(env, episode: Episode, obs_cfg: ObsProcessConfig, rng: np.random.Generator,
                   where: str = "") -> dict[str, np.ndarray]:
    """Time-major arrays of one episode: obs/<key>, actions, rewards, success, terminated, truncated (T rows each).

    The simulation is ``ms2core.envs.episode_sim.simulate_recorded_episode`` (shared with ``ms2 validate``):
    row t is observed once at the recorded state s_t, and its reward/success/terminated are what
    ``env.step(a_t)`` returns from s_t.
    """
    from ms2core.obs import observe_env, process_observation

    def observe(env_now, raw):
        return process_observation(observe_env(env_now) if raw is None else raw, obs_cfg, rng)

    sim = simulate_recorded_episode(env, episode, observe, where)
    out = {f"obs/{k}": v for k, v in _stack(sim.observations).items()}
    out.update(actions=np.asarray(episode.actions, np.float32), rewards=sim.rewards.astype(np.float32),
               success=sim.success, terminated=sim.terminated, truncated=sim.truncated)
    return out
