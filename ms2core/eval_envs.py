"""One evaluation episode at a time in one env, driven step by step from outside (no torch here).

``EpisodeRecorder`` is the env side of ``ms2core.evaluation.run_episode``: reset with the episode's
seed, process each raw observation, step an action clipped to the env's bounds, and keep what the
result needs (return, success once / at end, the trajectory and video frames if asked). The policy
stays with the caller, so the same recorder serves both evaluation modes:

* policy in the worker (``run_episode``): the worker loads the policy and runs the whole episode;
* policy in the evaluating process (``policy_in: parent``): each simulator worker keeps one
  recorder in its env cache (``start_eval_slot``), the parent batches the observations of every
  worker, runs the policy once (on CUDA where it has one) and sends each worker its action
  (``drive_eval_slot``). The workers then need no torch: a simulator runtime's python will do.

The observation processing the evaluation applies (``default_obs_processor``: the training
dataset's or the online-RL rollouts' options) lives here too, so workers never import torch.
Per episode ``i`` the seed is ``seed + i`` in both modes; a finished episode comes back as the
``EpisodeResult`` and, with ``save_traj``, its actions / success / env states.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ms2core.errors import ConfigError
from storage_schemas.training import EpisodeResult

_SLOT_KEY = "ms2core.eval_envs.slot"
ObsProcessor = Callable[[Any], dict[str, np.ndarray]]


def state_obs_processor(raw_obs) -> dict[str, np.ndarray]:
    """Obs mode 'state': the env's flat state vector is the processed 'state'."""
    return {"state": np.asarray(raw_obs, dtype=np.float32)}


class ManifestObsProcessor:
    """Point cloud / RGB-D / state: ``ms2core.obs`` processing with the dataset manifest's options (picklable)."""

    def __init__(self, manifest: dict, seed: int = 0):
        self.manifest = manifest
        self.seed = seed
        self._processor = None

    def __call__(self, raw_obs) -> dict[str, np.ndarray]:
        if self._processor is None:
            from ms2core.obs import ObservationProcessor

            self._processor = ObservationProcessor(_processing_options(self.manifest), self.seed)
        return self._processor(raw_obs)


def _processing_options(manifest: dict):
    """The ObsProcessConfig the render stage recorded in the dataset manifest (options.obs)."""
    from storage_schemas.dataset import DatasetManifest

    try:
        return DatasetManifest.model_validate(manifest).options.obs
    except Exception as exc:  # noqa: BLE001 - turned into a user error naming what is missing
        raise ConfigError("the checkpoint's dataset manifest has no valid observation-processing options",
                          hint="train on a dataset rendered by `ms2 render` (its manifest records options.obs)") from exc


def default_obs_processor(obs_mode: str, manifest: dict | None, seed: int = 0,
                          obs_processing: dict | None = None) -> ObsProcessor:
    """Process raw env observations exactly as the render stage did for the training dataset
    (online RL: as its rollouts did, ``obs_processing`` = the ObsProcessConfig its checkpoint records)."""
    if obs_processing is not None:
        from ms2core.obs import ObservationProcessor
        from storage_schemas.dataset import ObsProcessConfig

        return ObservationProcessor(ObsProcessConfig.model_validate(obs_processing), seed)
    if manifest and "options" in manifest:
        return ManifestObsProcessor(manifest, seed)
    if obs_mode == "state":
        return state_obs_processor
    return ManifestObsProcessor(manifest or {}, seed)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 20) -> Path:
    """MP4 (H.264) written under a temporary name and renamed."""
    import imageio.v2 as imageio  # optional: part of the sim extra

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.mp4")
    try:
        imageio.mimwrite(tmp, [np.asarray(f, np.uint8) for f in frames], fps=fps, macro_block_size=1)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class EpisodeRecorder:
    """An env plus its observation processing, running one episode at a time."""

    def __init__(self, env, obs_processor, continue_after_success: bool = False):
        self.env, self.process = env, obs_processor
        self.continue_after_success = continue_after_success
        self.low, self.high = env.action_space.low, env.action_space.high
        self.seed: int | None = None

    def begin(self, seed: int, record_trajectory: bool = False, video_path: str | Path | None = None) -> dict:
        """Reset for a new episode in a fresh physics scene (a ManiSkill2 env; soft-body tasks excepted, see
        ms2core.envs.episode_sim): PhysX keeps contact state across resets, so an episode's outcome would
        depend on which episodes this worker ran before, and ``ms2 evaluate`` on 1 or 16 workers would
        disagree. Returns the first processed observation."""
        from ms2core.envs.episode_sim import reset_fresh

        raw, _ = reset_fresh(self.env, seed)
        self.seed, self.video_path = seed, None if video_path is None else Path(video_path)
        self.states = [self._state()] if record_trajectory else None
        self.actions, self.successes, self.frames = [], [], []
        if self.video_path is not None:
            self.frames.append(np.asarray(self.env.render()))
        self.total_reward, self.success_once = 0.0, False
        return self.process(raw)

    def _state(self) -> np.ndarray:
        return np.asarray(self.env.unwrapped.get_state(), np.float32)

    def step(self, action) -> tuple[dict | None, bool]:
        """Step ``action`` (clipped to the env's bounds): (next processed obs or None when over, over)."""
        action = np.clip(np.asarray(action, np.float32), self.low, self.high).astype(np.float32)
        raw, reward, terminated, truncated, info = self.env.step(action)
        success = bool(info.get("success", False))
        self.total_reward += float(reward)
        self.success_once |= success
        self.actions.append(action)
        self.successes.append(success)
        if self.states is not None:
            self.states.append(self._state())
        if self.video_path is not None:
            self.frames.append(np.asarray(self.env.render()))
        if truncated or (terminated and not self.continue_after_success):
            return None, True
        return self.process(raw), False

    def finish(self) -> tuple[EpisodeResult, dict | None]:
        """The finished episode's result and, if recorded, its trajectory arrays (ManiSkill2 layout)."""
        video = None
        if self.video_path is not None:
            video = str(write_video(self.video_path, self.frames, fps=int(self.env.metadata.get("render_fps", 20))))
        result = EpisodeResult(seed=self.seed, length=len(self.actions), episode_return=self.total_reward,
                               success_at_end=self.successes[-1], success_once=self.success_once, video=video)
        traj = None
        if self.states is not None:
            traj = dict(actions=np.stack(self.actions), success=np.asarray(self.successes, bool),
                        env_states=np.stack(self.states))
        self.frames = []
        return result, traj

    def close(self) -> None:
        self.env.close()


# --------------------------------------------------------------------------- worker side (policy in the parent)
def start_eval_slot(env_kwargs: dict, obs_processor, continue_after_success: bool) -> dict:
    """Build this worker's env and recorder (kept in its env cache); returns the action bounds."""
    from ms2core.envs import make_env
    from ms2core.envs.cache import env_cache

    recorder = EpisodeRecorder(make_env(**env_kwargs), obs_processor, continue_after_success)
    env_cache().put(_SLOT_KEY, recorder)  # closes a recorder an earlier evaluation left in this worker
    return {"action_low": recorder.low, "action_high": recorder.high}


def drive_eval_slot(command: Any) -> dict | None:
    """``None`` (idle), ``("begin", seed, record_trajectory, video_path)`` or ``("step", action)``.

    Replies ``None``, ``{"obs": ...}`` while the episode runs, or ``{"result": ..., "traj": ...}`` when it ended."""
    if command is None:
        return None
    from ms2core.envs.cache import env_cache

    recorder: EpisodeRecorder = env_cache().peek(_SLOT_KEY)
    if command[0] == "begin":
        return {"obs": recorder.begin(command[1], command[2], command[3])}
    obs, over = recorder.step(command[1])
    if not over:
        return {"obs": obs}
    result, traj = recorder.finish()
    return {"result": result, "traj": traj}
