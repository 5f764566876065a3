"""Replay a demo episode in another control mode, following ManiSkill2's replay_trajectory semantics.

Two envs per worker, as in ``mani_skill2.trajectory.replay_trajectory``: a twin
in the demo's control mode steps the recorded actions, and the target env is
driven to track it (``from_pd_joint_pos`` / ``from_pd_joint_delta_pos`` are
called unchanged; they step the target env up to twice per source step when an
action had to be clipped). The target env is wrapped in a recorder, so the
converted episode holds exactly the actions the target env received and the
env states after each of them.

Rigid-body episodes (``env_states`` recorded) start from the recorded initial
state: when ``reset(seed)`` does not reproduce it, both envs are set to it and
their controllers re-targeted. Soft-body episodes (only ``env_init_state``) are
replayed from the seed and the actions, as ManiSkill2 does.

A converted episode counts as converted when the final step reports success;
optionally its actions are replayed open-loop in a third env reset from the
recorded seed only, which is what a learner sees.

The simulator-free fake backend converts by moving the first three action
components (its toy dynamics), so orchestration is testable without SAPIEN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ms2core.envs.episode_sim import fresh_scene
from ms2core.errors import UnsupportedModeError
from ms2core.trajectory import Episode, jsonable_info

#: Source control mode -> target modes ManiSkill2 0.5's replay can convert to (same mode = plain replay).
CONVERTIBLE_MODES: dict[str, tuple[str, ...]] = {
    "pd_joint_pos": (
        "pd_joint_pos",
        "pd_joint_delta_pos",
        "pd_joint_target_delta_pos",
        "pd_joint_vel",
        "pd_ee_delta_pos",
        "pd_ee_delta_pose",
        "pd_ee_target_delta_pos",
        "pd_ee_target_delta_pose",
    ),
    "pd_joint_delta_pos": ("pd_joint_delta_pos", "pd_joint_pos"),
}
STATE_MATCH_TOL = 1e-4  # max abs difference at which reset(seed) counts as reproducing env_states[0]


def check_conversion(env_id: str, source_mode: str | None, target_mode: str, supported: list[str], where: str) -> None:
    """Raise UnsupportedModeError unless ManiSkill2's replay can turn ``source_mode`` demos into ``target_mode``."""
    if supported and target_mode not in supported:
        from ms2core.errors import unknown_choice

        raise unknown_choice(f"target control mode for {env_id}'s robot ({where}):", target_mode, supported,
                             cls=UnsupportedModeError)
    if source_mode not in CONVERTIBLE_MODES:
        raise UnsupportedModeError(
            f"{where}: demos recorded in control mode {source_mode!r} cannot be converted (to {target_mode!r})",
            hint=f"ManiSkill2's replay converts only from {', '.join(CONVERTIBLE_MODES)}; "
                 "record demos in pd_joint_pos (ms2 demos generate does)",
        )
    targets = CONVERTIBLE_MODES[source_mode]
    if target_mode not in targets:
        raise UnsupportedModeError(
            f"{where}: cannot convert {source_mode} demos of {env_id} to {target_mode!r}",
            hint=f"convertible targets from {source_mode}: {', '.join(targets)}",
        )


@dataclass
class ConvertedEpisode:
    episode_id: int
    seed: int | None
    converted: bool
    reason: str = ""
    source_steps: int = 0
    episode: Episode | None = None
    open_loop_success: bool | None = None
    first_success_step: int | None = None


class _RecordingEnv:
    """Proxy of a ManiSkill2 BaseEnv that records what ManiSkill2's converters make it do."""

    def __init__(self, env):
        self._env = env
        self.actions: list[np.ndarray] = []
        self.states: list[np.ndarray] = []
        self.success: list[bool] = []
        self.last_info: dict = {}

    def start(self) -> None:
        self.actions, self.success, self.last_info = [], [], {}
        self.states = [self._env.get_state()]

    def step(self, action):
        out = self._env.step(action)
        info = out[-1]
        self.actions.append(np.asarray(action, np.float32).copy())
        self.states.append(self._env.get_state())
        self.success.append(bool(info.get("success", False)))
        self.last_info = info
        return out

    def __getattr__(self, name):
        return getattr(self._env, name)


def _fake_convert_action(action: np.ndarray, source_mode: str, target_dim: int) -> np.ndarray:
    # The fake env moves its TCP by action[:3] (divided by 3 in pd_joint_pos).
    move = action[:3] / 3.0 if source_mode == "pd_joint_pos" else action[:3]
    out = np.zeros(target_dim, np.float32)
    out[:3] = move
    return out


class EpisodeConverter:
    """One per worker process: the source twin, the target env and the open-loop checker, kept alive."""

    def __init__(self, env_id: str, source_mode: str, target_mode: str, env_kwargs: dict | None = None,
                 backend: str = "sapien", verify_open_loop: bool = True):
        from ms2core.envs import make_env

        kwargs = {k: v for k, v in (env_kwargs or {}).items() if k not in ("obs_mode", "control_mode")}
        reward_mode = kwargs.pop("reward_mode", "dense")
        kwargs.pop("render_mode", None)
        self.env_id, self.source_mode, self.target_mode, self.backend = env_id, source_mode, target_mode, backend

        def build(mode):
            # max_episode_steps is not enforced here: a converted episode may be longer than its source.
            return make_env(env_id, obs_mode="none", control_mode=mode, reward_mode=reward_mode, backend=backend,
                            **kwargs).unwrapped

        self.source_env = build(source_mode)
        self.target_env = build(target_mode)
        self.check_env = build(target_mode) if verify_open_loop else None

    def close(self) -> None:
        for env in (self.source_env, self.target_env, self.check_env):
            if env is not None:
                env.close()

    # -- one episode ----------------------------------------------------------
    def convert(self, episode: Episode) -> ConvertedEpisode:
        meta = episode.meta
        result = ConvertedEpisode(meta.episode_id, meta.seed, False, source_steps=episode.num_steps)
        expected_dim = self.source_env.action_space.shape[0]
        if episode.actions.ndim != 2 or episode.actions.shape[1] != expected_dim:
            result.reason = (f"actions have shape {episode.actions.shape} but control mode {self.source_mode} "
                             f"of {self.env_id} takes {expected_dim} numbers per step")
            return result
        if meta.seed is None and episode.env_states is None:
            result.reason = "no seed and no env_states: the initial state cannot be reproduced"
            return result
        try:
            recorder = self._replay(episode)
        except Exception as exc:  # noqa: BLE001 (ManiSkill2's converters assert; a bad episode must not stop the run)
            result.reason = f"replay raised {type(exc).__name__}: {exc}"
            return result
        success = np.asarray(recorder.success, bool)
        if not len(success) or not success[-1]:
            info = jsonable_info(recorder.last_info)
            result.reason = f"replayed {len(success)} steps in {self.target_mode} without success at the end (info {info})"
            return result
        n = len(recorder.actions)
        result.converted = True
        result.first_success_step = int(np.argmax(success))
        new_meta = meta.model_copy(update=dict(control_mode=self.target_mode, elapsed_steps=n,
                                               info=jsonable_info(recorder.last_info)))
        result.episode = Episode(
            meta=new_meta,
            actions=np.stack(recorder.actions).astype(np.float32),
            success=success,
            env_states=np.stack(recorder.states).astype(np.float32) if episode.env_states is not None else None,
            env_init_state=episode.env_init_state if episode.env_states is None else None,
        )
        if self.check_env is not None:
            result.open_loop_success = self.replay_open_loop(result.episode)
        return result

    def _reset(self, env, episode: Episode, use_states: bool) -> None:
        options = {k: v for k, v in episode.meta.reset_kwargs.items() if k != "seed"}
        if fresh_scene(env, episode):  # an episode's conversion must not depend on the ones before it
            options["reconfigure"] = True
        seed = episode.meta.seed
        env.reset(seed=seed, options=options) if seed is not None else env.reset(options=options)
        if use_states and episode.env_states is not None:
            initial = episode.env_states[0]
            current = env.get_state()
            if current.shape != initial.shape or np.abs(current - initial).max() > STATE_MATCH_TOL:
                env.set_state(initial)
                if hasattr(env, "agent"):
                    env.agent.controller.reset()  # targets follow the restored joint positions

    def _replay(self, episode: Episode) -> _RecordingEnv:
        for env in (self.source_env, self.target_env):
            self._reset(env, episode, use_states=True)
        target = _RecordingEnv(self.target_env)
        target.start()
        actions = episode.actions
        if self.backend == "fake":
            for action in actions:
                self.source_env.step(action)
                target.step(_fake_convert_action(action, self.source_mode, target.action_space.shape[0]))
            return target
        if self.source_mode == self.target_mode:
            for action in actions:
                target.step(action)
            return target
        from mani_skill2.trajectory import replay_trajectory as ms2_replay

        if self.source_mode == "pd_joint_pos":
            ms2_replay.from_pd_joint_pos(self.target_mode, actions, self.source_env, target)
        else:
            ms2_replay.from_pd_joint_delta_pos(self.target_mode, actions, self.source_env, target)
        return target

    def replay_open_loop(self, episode: Episode) -> bool:
        """Step ``episode.actions`` in the checker env reset from the seed only; success at the last step?"""
        env = self.check_env
        self._reset(env, episode, use_states=False)
        info = {}
        for action in episode.actions:
            info = env.step(action)[-1]
        return bool(info.get("success", False))


@dataclass(frozen=True)
class ConvertTask:
    """What a worker needs to convert one episode (the episode is read in the worker, not pickled)."""

    h5_path: str
    index: int
    env_id: str
    source_mode: str
    target_mode: str
    env_kwargs_json: str  # json text: hashable, so it can key the per-process cache
    backend: str
    verify_open_loop: bool


def convert_in_worker(task: ConvertTask) -> ConvertedEpisode:
    """Pool entry point: converter and open demo file kept in the worker's env cache, keyed by their settings."""
    from ms2core.envs.cache import env_cache
    from ms2core.trajectory import DemoPair

    key = ("ms2core.replay", task.env_id, task.source_mode, task.target_mode, task.env_kwargs_json, task.backend,
           task.verify_open_loop)
    converter = env_cache().get(key, lambda: EpisodeConverter(
        task.env_id, task.source_mode, task.target_mode, json.loads(task.env_kwargs_json), task.backend,
        task.verify_open_loop))
    demos = env_cache().get(("ms2core.replay.demos", task.h5_path),
                            lambda: DemoPair(task.h5_path, check_episodes=False))
    return converter.convert(demos.read_episode(task.index))


def run_maniskill2_replay_tool(h5_path: str, target_control_mode: str | None, count: int | None = None,
                               use_env_states: bool = False) -> str | None:
    """Run ManiSkill2's own ``replay_trajectory`` on a pair (interoperability checks); returns its output h5.

    It writes ``NAME.none.<mode>.h5`` beside the input, so call it on a copy.
    """
    from ms2core.envs import import_mani_skill2

    import_mani_skill2()
    from mani_skill2.trajectory import replay_trajectory as ms2_replay

    argv = ["--traj-path", str(h5_path), "--save-traj", "--obs-mode", "none"]
    if target_control_mode:
        argv += ["--target-control-mode", target_control_mode]
    if count:
        argv += ["--count", str(count)]
    if use_env_states:
        argv.append("--use-env-states")
    return ms2_replay._main(ms2_replay.parse_args(argv))
