"""Experience collection: envs in worker processes, stepped together, with auto-reset and episode statistics.

``VectorEnv`` owns ``num_envs`` env copies spread over ``num_procs`` worker
processes (0 = in the learner's process) of one ``ms2core.workers.SimPool``,
started with ``sim_python`` when it names another interpreter (the learner's
Python may lack the simulator). Simulation always runs on CPU processes; the
learner may sit on CUDA. Each step returns a :class:`StepBatch`:

* ``obs``       processed observations after the step (already reset where an episode ended),
* ``next_obs``  the true s_{t+1} of the episode that took the step (= the *final*
  observation where it ended), which is what value bootstrapping needs,
* ``terminated`` (the task says the episode is over: no bootstrap) and
  ``truncated`` (time limit: bootstrap from ``next_obs``), kept apart,
* ``episodes``  an :class:`EpisodeStats` (return, length, success) per finished episode.

Policies act in [-1, 1]^A; ``VectorEnv`` maps actions to the env's bounds.
Observations are the processed dicts of the data contract (``{"state": (S,) float32}``
in state mode); pass ``obs_processor`` to use the render stage's processing for
point-cloud / RGB-D modes so that rollouts and datasets see identical inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ms2core.envs.cache import env_cache
from ms2core.errors import ConfigError, UnsupportedModeError
from ms2core.workers import SimPool, requirements

ObsDict = dict[str, np.ndarray]


# --------------------------------------------------------------------------- env construction
def default_obs_processor(obs_mode: str, seed: int = 0) -> Callable[[Any], ObsDict]:
    """The render stage's processing with default options for ``obs_mode`` (state, pointcloud, rgbd)."""
    from ms2core.obs import ObservationProcessor
    from storage_schemas.dataset import ObsProcessConfig

    base = obs_mode.replace("_robot_seg", "")
    if base not in ("state", "pointcloud", "rgbd"):
        raise UnsupportedModeError(f"rollouts support obs modes state, pointcloud and rgbd, not {obs_mode!r}",
                                   hint="or pass obs_processor= to EnvFactory")
    return ObservationProcessor(ObsProcessConfig(obs_mode=base, include_seg=obs_mode.endswith("_robot_seg")), seed)


@dataclass(frozen=True)
class EnvFactory:
    """Picklable recipe for one env (sent to spawned workers): a ManiSkill2 task or a plain gymnasium id."""

    env_cfg: Any = None  # storage_schemas.env.EnvConfig
    gym_env_id: str | None = None
    gym_max_episode_steps: int | None = None
    obs_processor: Callable[[Any], ObsDict] | None = None
    #: a termination (ManiSkill2: success) does not end the episode; only truncation (the time limit) does
    continue_after_success: bool = False

    def make(self):
        if self.gym_env_id is not None:
            import gymnasium as gym

            try:
                return gym.make(self.gym_env_id, max_episode_steps=self.gym_max_episode_steps)
            except gym.error.Error as exc:
                raise ConfigError(f"unknown gymnasium env id {self.gym_env_id!r}: {exc}",
                                  hint="e.g. Pendulum-v1, or set rollout.env for a ManiSkill2 task") from exc
        from ms2core.envs import make_env_from_config

        return make_env_from_config(self.env_cfg)

    def processor(self) -> Callable[[Any], ObsDict]:
        if self.obs_processor is not None:
            return copy.copy(self.obs_processor)  # one per env slot: each ObservationProcessor keeps its own RNG
        if self.gym_env_id is not None:
            return default_obs_processor("state")
        return default_obs_processor(self.env_cfg.obs_mode)


def rollout_obs_processor(rollout_cfg, seed: int = 0) -> Callable[[Any], ObsDict]:
    """The processing a RolloutConfig's envs use: ``rollout.obs`` if set, else the defaults for its obs mode."""
    if rollout_cfg.gym_env_id is not None:
        return default_obs_processor("state", seed)
    if rollout_cfg.obs is not None:
        from ms2core.obs import ObservationProcessor

        return ObservationProcessor(rollout_cfg.obs, seed)
    return default_obs_processor(rollout_cfg.env.obs_mode, seed)


def env_factory_from_config(rollout_cfg) -> EnvFactory:
    """EnvFactory for a storage_schemas.rl.RolloutConfig."""
    processor = rollout_obs_processor(rollout_cfg) if rollout_cfg.obs is not None else None
    env_cfg = rollout_cfg.env
    horizon = getattr(rollout_cfg, "train_episode_steps", None)
    if horizon is not None and rollout_cfg.gym_env_id is None:
        env_cfg = env_cfg.model_copy(update={"max_episode_steps": horizon})
    return EnvFactory(env_cfg, rollout_cfg.gym_env_id, rollout_cfg.gym_max_episode_steps, processor,
                      continue_after_success(rollout_cfg))


def continue_after_success(rollout_cfg) -> bool:
    """``rollout.continue_after_success`` resolved: None means true for ManiSkill2 tasks, false for gym envs."""
    value = getattr(rollout_cfg, "continue_after_success", None)
    return rollout_cfg.gym_env_id is None if value is None else bool(value)


# --------------------------------------------------------------------------- one env slot (in a worker or in-process)
@dataclass
class EpisodeStats:
    env_index: int
    episode_return: float
    length: int
    success: bool | None  # None where the env reports no success (e.g. Pendulum)


@dataclass
class _SlotStep:
    obs: ObsDict
    next_obs: ObsDict
    reward: float
    terminated: bool
    truncated: bool
    episode: EpisodeStats | None


class _EnvSlot:
    """One env with auto-reset: seeds each episode deterministically (seed + index + num_envs * k)."""

    def __init__(self, factory: EnvFactory, env_index: int, num_envs: int, seed: int):
        self.env = factory.make()
        self.process = factory.processor()
        self.continue_after_success = factory.continue_after_success
        self.env_index, self.num_envs, self.seed = env_index, num_envs, seed
        self.episodes_started = 0
        self.episode_return, self.length, self.success = 0.0, 0, None

    def reset(self) -> ObsDict:
        episode_seed = self.seed + self.env_index + self.num_envs * self.episodes_started
        self.episodes_started += 1
        raw, _ = self.env.reset(seed=int(episode_seed))
        self.episode_return, self.length, self.success = 0.0, 0, None
        return self.process(raw)

    def step(self, action: np.ndarray) -> _SlotStep:
        raw, reward, terminated, truncated, info = self.env.step(action)
        reward = float(reward)
        self.episode_return += reward
        self.length += 1
        if "success" in info:  # succeeded at any step (ManiSkill2-Learn's success "max")
            self.success = bool(self.success) or bool(info["success"])
        if self.continue_after_success:
            terminated = False
        next_obs = self.process(raw)
        episode = None
        obs = next_obs
        if terminated or truncated:
            episode = EpisodeStats(self.env_index, self.episode_return, self.length, self.success)
            obs = self.reset()
        return _SlotStep(obs, next_obs, reward, bool(terminated), bool(truncated), episode)

    def spaces(self):
        return self.env.observation_space, self.env.action_space

    def close(self):
        self.env.close()


class _SlotGroup:
    """The env slots one worker holds (all of them in-process), kept in its env cache."""

    def __init__(self, slots: list[_EnvSlot]):
        self.slots = slots

    def close(self) -> None:
        for s in self.slots:
            try:
                s.close()
            except Exception:  # noqa: BLE001 - a broken env must not stop the others closing
                pass


_SLOTS_KEY = "ms2core.rollout.slots"


def _start_slots(factory: EnvFactory, env_indices: list[int], num_envs: int, seed: int) -> dict:
    """Worker side: build this worker's env slots; returns the spaces as plain data (they cross the wire)."""
    group = _SlotGroup([])
    env_cache().put(_SLOTS_KEY, group)  # before building: a failure half-way still closes what was built
    for i in env_indices:
        group.slots.append(_EnvSlot(factory, i, num_envs, seed))
    observation_space, action_space = group.slots[0].spaces()
    return {"observation_space": space_to_wire(observation_space), "action_space": space_to_wire(action_space)}


def _reset_slots() -> list[ObsDict]:
    return [s.reset() for s in env_cache().peek(_SLOTS_KEY).slots]


@dataclass
class _GroupStep:
    """One worker's envs after a step, stacked: a few arrays cross the wire per worker, not a few per env, and
    ``next_obs`` only for the rows whose episode ended (elsewhere it is ``obs``; half the bytes of sending both)."""

    obs: ObsDict                  # (n, ...) after auto-reset
    ended_rows: np.ndarray        # (k,) int: rows whose episode ended at this step
    final_obs: ObsDict | None     # (k, ...) those rows' last observation; None when k == 0
    rewards: np.ndarray           # (n,) float32
    terminated: np.ndarray        # (n,) bool
    truncated: np.ndarray         # (n,) bool
    episodes: list[EpisodeStats]


def _step_slots(actions: np.ndarray) -> _GroupStep:
    steps = [s.step(a) for s, a in zip(env_cache().peek(_SLOTS_KEY).slots, actions)]
    ended = [i for i, r in enumerate(steps) if r.episode is not None]
    return _GroupStep(
        obs=stack_obs([r.obs for r in steps]), ended_rows=np.array(ended, np.int64),
        final_obs=stack_obs([steps[i].next_obs for i in ended]) if ended else None,
        rewards=np.array([r.reward for r in steps], np.float32),
        terminated=np.array([r.terminated for r in steps], bool),
        truncated=np.array([r.truncated for r in steps], bool),
        episodes=[r.episode for r in steps if r.episode is not None])


def space_to_wire(space) -> dict:
    """A gymnasium Box/Dict/Discrete space as plain data (bounds as arrays, key order kept)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return {"kind": "dict", "keys": list(space.spaces), "spaces": [space_to_wire(s) for s in space.spaces.values()]}
    if isinstance(space, spaces.Box):
        return {"kind": "box", "low": space.low, "high": space.high, "dtype": space.dtype.str}
    if isinstance(space, spaces.Discrete):
        return {"kind": "discrete", "n": int(space.n), "start": int(space.start)}
    raise UnsupportedModeError(f"rollouts support Box, Dict and Discrete spaces, not {type(space).__name__}")


def space_from_wire(desc: dict):
    from collections import OrderedDict

    from gymnasium import spaces

    if desc["kind"] == "dict":
        return spaces.Dict(OrderedDict(zip(desc["keys"], map(space_from_wire, desc["spaces"]))))
    if desc["kind"] == "box":
        return spaces.Box(desc["low"], desc["high"], dtype=np.dtype(desc["dtype"]))
    return spaces.Discrete(desc["n"], start=desc["start"])


# --------------------------------------------------------------------------- the vector env
@dataclass
class StepBatch:
    obs: ObsDict                 # (N, ...) after auto-reset
    next_obs: ObsDict            # (N, ...) s_{t+1} of the same episode (final obs where it ended)
    rewards: np.ndarray          # (N,) float32
    terminated: np.ndarray       # (N,) bool
    truncated: np.ndarray        # (N,) bool
    episodes: list[EpisodeStats] = field(default_factory=list)

    @property
    def dones(self) -> np.ndarray:
        """The episode is over (terminated or truncated): the env was reset. A rollout signal only; datasets
        store ``terminated`` and ``truncated`` (ManiSkill2's meaning), never their union."""
        return self.terminated | self.truncated


def stack_obs(items: list[ObsDict]) -> ObsDict:
    return {k: np.stack([o[k] for o in items]) for k in items[0]}


class VectorEnv:
    """``num_envs`` envs over ``num_procs`` processes (0 = in-process), stepped in lock-step with auto-reset."""

    def __init__(self, factory: EnvFactory, num_envs: int, num_procs: int = 0, seed: int = 0,
                 start_method: str = "spawn", sim_python: str | None = None):
        # start_method is kept for configs that name one: every worker is a fresh interpreter (spawn-like).
        del start_method
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        if not 0 <= num_procs <= num_envs:
            raise ConfigError(f"num_procs must be in [0, num_envs={num_envs}], got {num_procs}",
                              hint="use num_procs=0 to step the envs in this process")
        self.num_envs = num_envs
        self._closed = False
        backend = "gym" if factory.gym_env_id is not None else getattr(factory.env_cfg, "backend", None)
        self.pool = SimPool(num_procs, python=sim_python, requires=requirements(backend))
        self.num_procs = self.pool.num_workers  # another interpreter needs a worker even for num_procs=0
        groups = np.array_split(np.arange(num_envs), max(1, self.num_procs))
        self._group_sizes = [len(g) for g in groups]
        spaces = self._call(_start_slots, [(factory, g.tolist(), num_envs, seed) for g in groups], flat=False)
        observation_space = space_from_wire(spaces[0]["observation_space"])
        action_space = space_from_wire(spaces[0]["action_space"])
        #: the env's raw observation space (before processing): networks read the state layout from it
        self.raw_observation_space = observation_space
        self.action_low = np.asarray(action_space.low, np.float32)
        self.action_high = np.asarray(action_space.high, np.float32)
        self.action_dim = int(np.prod(action_space.shape))

    # action scaling: policies live in [-1, 1]
    def to_env_action(self, actions: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(actions, np.float32), -1.0, 1.0)
        return self.action_low + (a + 1.0) * 0.5 * (self.action_high - self.action_low)

    def to_policy_action(self, env_actions: np.ndarray) -> np.ndarray:
        span = np.where(self.action_high > self.action_low, self.action_high - self.action_low, 1.0)
        return np.clip(2.0 * (np.asarray(env_actions, np.float32) - self.action_low) / span - 1.0, -1.0, 1.0)

    def _call(self, fn, args_per_worker: list[tuple], flat: bool = True) -> list:
        """One lock-step call on every worker; on any failure the envs are closed (their steps diverged)."""
        try:
            parts = self.pool.call_each(fn, args_per_worker)
        except BaseException:
            self.close()
            raise
        return [r for part in parts for r in part] if flat else parts

    def reset(self) -> ObsDict:
        return stack_obs(self._call(_reset_slots, [()] * len(self._group_sizes)))

    def step(self, actions: np.ndarray) -> StepBatch:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs, self.action_dim):
            raise ValueError(f"VectorEnv.step needs actions of shape ({self.num_envs}, {self.action_dim}), "
                             f"got {actions.shape}")
        env_actions = self.to_env_action(actions)
        bounds = np.cumsum([0] + self._group_sizes)
        groups = self._call(_step_slots, [(env_actions[a:b],) for a, b in zip(bounds[:-1], bounds[1:])], flat=False)
        obs = {k: np.concatenate([g.obs[k] for g in groups]) for k in groups[0].obs}
        next_obs = {k: v.copy() for k, v in obs.items()}
        for start, g in zip(bounds, groups):
            if g.final_obs is not None:
                for k, v in g.final_obs.items():
                    next_obs[k][start + g.ended_rows] = v
        return StepBatch(
            obs=obs, next_obs=next_obs,
            rewards=np.concatenate([g.rewards for g in groups]),
            terminated=np.concatenate([g.terminated for g in groups]),
            truncated=np.concatenate([g.truncated for g in groups]),
            episodes=[e for g in groups for e in g.episodes],
        )

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def vector_env_from_config(rollout_cfg, seed: int) -> VectorEnv:
    return VectorEnv(env_factory_from_config(rollout_cfg), rollout_cfg.num_envs, rollout_cfg.num_procs, seed,
                     rollout_cfg.start_method, getattr(rollout_cfg, "sim_python", None))


@dataclass
class EpisodeSummary:
    """Mean statistics over finished episodes (NaN success rate where the env reports none)."""

    episodes: int
    mean_return: float
    mean_length: float
    success_rate: float

    @classmethod
    def of(cls, episodes: list[EpisodeStats]) -> EpisodeSummary:
        if not episodes:
            return cls(0, float("nan"), float("nan"), float("nan"))
        succ = [e.success for e in episodes if e.success is not None]
        return cls(len(episodes), float(np.mean([e.episode_return for e in episodes])),
                   float(np.mean([e.length for e in episodes])), float(np.mean(succ)) if succ else float("nan"))


def run_episodes(vec: VectorEnv, act: Callable[[ObsDict], np.ndarray], num_episodes: int) -> list[EpisodeStats]:
    """Step ``vec`` with ``act`` (policy-space actions) until ``num_episodes`` episodes have finished.

    Which episodes count is fixed before any is run: env ``i`` contributes its first ``ceil``/``floor`` share
    (episode ``k`` is env ``k % num_envs``'s), never "the first N to finish", which would over-count the short
    (successful) episodes of fast envs. The result is in episode order ``k``.
    """
    n = vec.num_envs
    quota = [num_episodes // n + (1 if i < num_episodes % n else 0) for i in range(n)]
    per_env: list[list[EpisodeStats]] = [[] for _ in range(n)]
    obs = vec.reset()
    while any(len(per_env[i]) < quota[i] for i in range(n)):
        batch = vec.step(act(obs))
        for ep in batch.episodes:
            if len(per_env[ep.env_index]) < quota[ep.env_index]:
                per_env[ep.env_index].append(ep)
        obs = batch.obs
    return [per_env[k % n][k // n] for k in range(num_episodes)]


def evaluate_deterministic(rollout_cfg, act: Callable[[ObsDict], np.ndarray], num_episodes: int,
                           seed: int) -> EpisodeSummary:
    """``num_episodes`` episodes of ``act`` (deterministic actions in [-1, 1]) in fresh envs (as many worker
    processes as the training rollout, at most one per env); an
    episode ends at success (ManiSkill2's termination) whatever the training rollout's continue_after_success."""
    num_envs = min(num_episodes, rollout_cfg.num_envs)
    eval_cfg = rollout_cfg.model_copy(update={"num_envs": num_envs, "num_procs": min(rollout_cfg.num_procs, num_envs),
                                              "continue_after_success": False,
                                              "train_episode_steps": None})
    with vector_env_from_config(eval_cfg, seed) as vec:
        return EpisodeSummary.of(run_episodes(vec, act, num_episodes))
