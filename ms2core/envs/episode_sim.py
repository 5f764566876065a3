"""Re-simulate a recorded episode step by step: the per-step record a dataset stores (render and validation share it).

Rigid-body episodes (``env_states`` recorded), for each step t::

    set_state(s_t); row_t = observe_fn(env)             the observation, rendered once
    step a_t without observing                          ManiSkill2 0.5.3 BaseEnv.step minus get_obs:
                                                        step_action, elapsed_steps += 1, get_info,
                                                        get_reward, get_done
    -> reward_t, success_t (info["success"]), terminated_t (get_done)

which is what ``env.step(a_t)`` returns from s_t. The physics step matters: PickCube's ``check_grasp``
(and every reward that reads contacts) looks at contact impulses, which only a step produces; evaluating
after ``set_state(s_{t+1})`` alone never sees a grasp (ManiSkill2-Learn's convert_state steps for the
same reason). Soft-body episodes (only ``env_init_state``) reset from the seed and ``env.step`` the
actions (as the renderer always did); the observation of row t+1 is the one step t returned, so each
row is rendered once there too.

``truncated_t`` is True only at the episode's last step and only where it was not terminated there:
the recording ended (ManiSkill2's time limit or the end of the demo) without the task ending it.
Terminated steps may also occur mid-episode (a demo that goes on after success): each is a step the
env would have ended.

Determinism: set_state does not reach all of PhysX's state: contact pairs, their persistent manifolds
and the broad phase's pair order survive it, and the solver's results depend on them. In one scene an
episode's rewards therefore depend on the episodes simulated before it (PickCube, the PPO policy's
demos: up to 1.3e-2 on a dense reward of ~1; planner demos: 7.5e-5), so two renders with other worker
layouts, a resumed render and a validator replaying a sample disagreed. Every rigid-body episode is
therefore simulated in a fresh physics scene (``reset_to_episode``: ManiSkill2's ``reconfigure``, ~15 ms
a reset for state, ~60 ms with cameras, no memory growth over hundreds): an episode's record is then a
pure function of the episode (and the simulator build), and ``ms2 validate`` compares rewards bit for
bit. Action replays (soft bodies) accumulate solver differences and are compared within a tolerance.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ms2core.envs.runtime import SOFT_BODY_PACKAGE
from ms2core.errors import DemoFileError
from ms2core.trajectory import Episode


@dataclass
class SimulatedEpisode:
    """What the simulator says about each of the T recorded steps."""

    observations: list[Any]   # observe_fn's result at each s_t (T entries; None where observe_fn is None)
    rewards: np.ndarray       # (T,) float64, as env.step returns it
    success: np.ndarray       # (T,) bool, info["success"] after the step
    terminated: np.ndarray    # (T,) bool, what env.step returns as terminated
    truncated: np.ndarray     # (T,) bool, True only at the last step where it was not terminated
    infos: list[dict]         # info after each step


def env_reward(env_u, obs, action: np.ndarray, info: dict) -> float:
    """The env's reward for the step that led to ``info`` (ManiSkill2 0.5's keyword signature; the fake env's too)."""
    return float(env_u.get_reward(obs=obs, action=action, info=info))


def can_reconfigure(env) -> bool:
    """A rigid-body ManiSkill2 env, whose ``reset(options={"reconfigure": True})`` builds a fresh physics scene
    (~15 ms; soft-body tasks rebuild their MPM scene, which costs seconds: not them)."""
    u = getattr(env, "unwrapped", env)
    return callable(getattr(u, "reconfigure", None)) and not type(u).__module__.startswith(SOFT_BODY_PACKAGE)


def reset_fresh(env, seed: int):
    """Reset for a new episode with ``seed``, in a fresh physics scene where ``can_reconfigure`` (module
    docstring: in a reused scene an episode depends on the ones the env ran before); returns what reset returns."""
    return env.reset(seed=seed, **({"options": {"reconfigure": True}} if can_reconfigure(env) else {}))


def fresh_scene(env, episode: Episode) -> bool:
    """True where a replay of ``episode`` needs a fresh physics scene (module docstring): a ManiSkill2 env
    and an episode replayed from recorded states (rigid bodies). Soft-body episodes replay their actions
    from the seed (rebuilding their MPM scene would cost seconds) and are compared within a tolerance; the
    fake env keeps no history."""
    return episode.env_states is not None and can_reconfigure(env)


def reset_to_episode(env, episode: Episode):
    """Reset with the episode's recorded seed and reset options, in a fresh scene where ``fresh_scene``;
    returns what reset returns."""
    options = dict(episode.meta.reset_kwargs.get("options") or {})
    if fresh_scene(env, episode):
        options["reconfigure"] = True
    return env.reset(seed=episode.meta.seed, **({"options": options} if options else {}))


def steps_without_observing(env_u) -> bool:
    """True when the env's ``step`` is ManiSkill2's BaseEnv.step (or the fake env's copy), whose parts can be called
    without get_obs; tasks that override ``step`` (the soft-body ones) are stepped whole."""
    from ms2core.envs.fake import FakeManiSkillEnv

    step = type(env_u).step
    if step is FakeManiSkillEnv.step:
        return True
    sapien_env = sys.modules.get("mani_skill2.envs.sapien_env")
    return sapien_env is not None and step is sapien_env.BaseEnv.step


def step_recorded_action(env_u, action: np.ndarray) -> tuple[float, bool, dict]:
    """``env_u.step(action)`` without computing the observation: (reward, terminated, info).

    The order and arguments are BaseEnv.step's (mani_skill2 0.5.3, sapien_env.py), with obs=None where it
    passes the observation: no reward or evaluation of the supported tasks reads it.
    """
    if not steps_without_observing(env_u):
        _, reward, terminated, _, info = env_u.step(action)
        return float(reward), bool(terminated), info
    env_u.step_action(action)
    env_u._elapsed_steps += 1  # noqa: SLF001 - BaseEnv.step's own bookkeeping, which info["elapsed_steps"] reports
    info = env_u.get_info(obs=None)
    reward = env_reward(env_u, None, action, info)
    terminated = bool(env_u.get_done(obs=None, info=info))
    return reward, terminated, info


def _set_recorded_state(env_u, episode: Episode, t: int, where: str) -> None:
    try:
        env_u.set_state(episode.env_states[t])
    except (ValueError, RuntimeError, IndexError) as exc:
        raise DemoFileError(
            f"{where}: env state {t} (shape {episode.env_states[t].shape}) does not fit "
            f"{env_label(env_u)}: {exc}",
            hint="render demos recorded with the same task (and robot) the render config names",
        ) from exc


def env_label(env) -> str:
    u = getattr(env, "unwrapped", env)
    spec = getattr(u, "spec", None)
    return getattr(spec, "id", None) or getattr(u, "env_id", type(u).__name__)


def simulate_recorded_episode(env, episode: Episode, observe_fn: Callable[[Any, Any], Any] | None,
                              where: str = "") -> SimulatedEpisode:
    """Reset to the episode's seed, then per step observe (``observe_fn``, once) and step the recorded action.

    ``observe_fn(env, raw)`` gets the env (wrappers included) standing in s_t and, where the simulator already
    returned it (soft bodies: reset/step), that raw observation, else None (then ``ms2core.obs.observe_env(env)``
    renders it). None skips observing. Raises
    DemoFileError for an empty episode or recorded states that do not fit the env.
    """
    u = env.unwrapped
    n = episode.num_steps
    if n == 0:
        raise DemoFileError(f"{where}: episode has no steps", hint="drop empty episodes from the demo pair")
    reset_obs, _ = reset_to_episode(env, episode)
    out = SimulatedEpisode([], np.zeros(n, np.float64), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), [])
    if episode.env_states is not None:  # rigid body: set every recorded state, look, step its action
        state_shape = np.shape(u.get_state())
        if episode.env_states.shape[1:] != state_shape:
            raise DemoFileError(
                f"{where}: env state 0 has shape {episode.env_states.shape[1:]} which does not fit "
                f"{env_label(env)} (its states have shape {state_shape})",
                hint="render demos recorded with the same task (and robot) the demo json names",
            )
        for t in range(n):
            _set_recorded_state(u, episode, t, where)
            out.observations.append(observe_fn(env, None) if observe_fn is not None else None)
            reward, terminated, info = step_recorded_action(u, episode.actions[t])
            _record(out, t, reward, terminated, info)
    else:  # soft body: no states to set; replay the actions from the recorded seed
        raw = reset_obs
        for t in range(n):
            out.observations.append(observe_fn(env, raw) if observe_fn is not None else None)
            raw, reward, terminated, _, info = env.step(episode.actions[t])
            _record(out, t, float(reward), bool(terminated), info)
    out.truncated[-1] = not out.terminated[-1]
    return out


def _record(out: SimulatedEpisode, t: int, reward: float, terminated: bool, info: dict) -> None:
    out.rewards[t], out.terminated[t] = reward, terminated
    out.success[t] = bool(info.get("success", False))
    out.infos.append(info)
