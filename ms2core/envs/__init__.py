"""Environment construction: the only place in ms2flow that imports mani_skill2 and sapien.

Both are imported lazily, inside functions, so the learner imports where the
simulator is absent (the GPU machine runs Python 3.12, where SAPIEN 2.2 has no
wheels). ``make_env(..., backend="fake")`` returns :class:`FakeManiSkillEnv`,
which has the same spaces and needs no simulator.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import sys
import tempfile
import warnings
from functools import lru_cache

import gymnasium as gym

from ms2core.envs.fake import FakeManiSkillEnv
from ms2core.envs.rendering import configure_rendering, diagnose_rendering
from ms2core.errors import RenderingUnavailableError, UnknownEnvError, UnsupportedModeError, unknown_choice
from ms2core.numerics import blas_kernel, kernel_mismatch
from storage_schemas.env import OBS_MODES, REWARD_MODES, EnvConfig

__all__ = [
    "FakeManiSkillEnv",
    "make_env",
    "make_env_from_config",
    "registered_env_ids",
    "supported_control_modes",
    "simulator_versions",
    "import_mani_skill2",
]

log = logging.getLogger(__name__)

# Tasks the fake backend pretends to be (they share PickCube's layout).
FAKE_ENV_IDS = ("PickCube-v0", "LiftCube-v0", "StackCube-v0", "Fake-v0")


@lru_cache(maxsize=None)
def import_mani_skill2():
    """Import mani_skill2 (registering its envs) with the Vulkan device chosen first (NVIDIA, else lavapipe)."""
    configure_rendering()
    # sapien 2.2 imports pkg_resources and mani_skill2 warns about optional extras;
    # neither is actionable for users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mani_skill2.envs  # noqa: F401  (registers the envs)
        import mani_skill2
    logging.getLogger("mani_skill2").setLevel(logging.ERROR)
    return mani_skill2


def registered_env_ids(backend: str = "sapien") -> list[str]:
    if backend == "fake":
        return list(FAKE_ENV_IDS)
    import_mani_skill2()
    from mani_skill2.utils.registration import REGISTERED_ENVS

    return sorted(REGISTERED_ENVS)


def _env_class(env_id: str):
    import_mani_skill2()
    from mani_skill2.utils.registration import REGISTERED_ENVS

    if env_id not in REGISTERED_ENVS:
        raise unknown_choice("env id", env_id, REGISTERED_ENVS, cls=UnknownEnvError)
    cls = REGISTERED_ENVS[env_id].cls
    from ms2core.envs.runtime import refuse_without_torch

    refuse_without_torch(env_id, cls)  # soft-body tasks in the simulator runtime (placeholder torch)
    return cls


def supported_control_modes(env_id: str, backend: str = "sapien") -> list[str]:
    """Controllers the env's default robot accepts (no simulator instance is created)."""
    if backend == "fake":
        from ms2core.envs.fake import ACTION_DIMS

        return list(ACTION_DIMS)
    cls = _env_class(env_id)
    robots = getattr(cls, "SUPPORTED_ROBOTS", {}) or {}
    params = inspect.signature(cls.__init__).parameters
    robot = None
    for name in ("robot", "robot_uid"):
        if name in params and params[name].default is not inspect.Parameter.empty:
            robot = params[name].default
    agent_cls = robots.get(robot) if robot else next(iter(robots.values()), None)
    if agent_cls is None:
        return []
    return list(agent_cls.get_default_config().controllers.keys())


def supported_obs_modes(env_id: str, backend: str = "sapien") -> list[str]:
    if backend == "fake":
        return [m for m in OBS_MODES if m != "none"] + ["none"]
    cls = _env_class(env_id)
    native = set(getattr(cls, "SUPPORTED_OBS_MODES", ()))
    modes = [m for m in ("state", "state_dict", "none") if m in native]
    if "image" in native:
        modes += ["rgbd", "pointcloud", "rgbd_robot_seg", "pointcloud_robot_seg"]
    return modes


def make_env(
    env_id: str,
    obs_mode: str = "state",
    control_mode: str | None = "pd_ee_delta_pose",
    reward_mode: str | None = "dense",
    *,
    max_episode_steps: int | None = None,
    camera_size: tuple[int, int] | None = None,
    render_mode: str | None = None,
    backend: str = "sapien",
    **env_kwargs,
) -> gym.Env:
    """Build a ManiSkill2 env (gymnasium API) with a TimeLimit, validating every mode first.

    Raises UnknownEnvError / UnsupportedModeError with the allowed values, and
    RenderingUnavailableError (with the fix) when SAPIEN cannot get a Vulkan device.
    """
    if backend not in ("sapien", "fake"):
        raise unknown_choice("env backend", backend, ["sapien", "fake"])
    if backend == "fake":
        if env_id not in FAKE_ENV_IDS:
            raise unknown_choice("env id", env_id, FAKE_ENV_IDS, cls=UnknownEnvError)
    obs_modes = supported_obs_modes(env_id, backend)  # also validates env_id
    if obs_mode not in obs_modes:
        raise unknown_choice(f"obs mode for {env_id}:", obs_mode, obs_modes, cls=UnsupportedModeError)
    if reward_mode is not None and reward_mode not in REWARD_MODES:
        raise unknown_choice("reward mode", reward_mode, REWARD_MODES, cls=UnsupportedModeError)
    if control_mode is not None:
        modes = supported_control_modes(env_id, backend)
        if modes and control_mode not in modes:
            raise unknown_choice(f"control mode for {env_id}:", control_mode, modes, cls=UnsupportedModeError)

    if backend == "fake":
        env = FakeManiSkillEnv(
            env_id, obs_mode, control_mode or "pd_joint_delta_pos", reward_mode or "dense",
            camera_size=camera_size or (128, 128), render_mode=render_mode, **env_kwargs,
        )
        return gym.wrappers.TimeLimit(env, max_episode_steps or 200)

    import_mani_skill2()
    _warn_blas_kernel_once()
    from mani_skill2.utils.registration import REGISTERED_ENVS, make

    kwargs = dict(obs_mode=obs_mode, **env_kwargs)
    if control_mode is not None:
        kwargs["control_mode"] = control_mode
    if reward_mode is not None:
        kwargs["reward_mode"] = reward_mode
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if camera_size is not None:
        kwargs.setdefault("camera_cfgs", {}).update(width=camera_size[0], height=camera_size[1])
    try:
        with _quiet_sapien_stderr() as captured:
            env = make(env_id, as_gym=False, **kwargs)
    except RuntimeError as exc:
        noise = [ln for ln in captured.getvalue().splitlines() if not any(h in ln for h in _HARMLESS_STDERR)]
        text = " ".join([str(exc), *noise]).strip()
        if any(k in text.lower() for k in ("vk::", "vulkan", "device", "extension")):
            raise RenderingUnavailableError(
                f"SAPIEN could not create a Vulkan renderer for {env_id}: {text}",
                hint=diagnose_rendering(),
            ) from exc
        raise
    limit = max_episode_steps or REGISTERED_ENVS[env_id].max_episode_steps
    env.unwrapped.spec = REGISTERED_ENVS[env_id].gym_spec
    return gym.wrappers.TimeLimit(env, limit) if limit else env


# SAPIEN's C++ side logs these on every headless machine; they are harmless.
_HARMLESS_STDERR = ("GLFW", "DISPLAY environment variable", "second renderer will share")


@contextlib.contextmanager
def _quiet_sapien_stderr():
    """Capture fd 2 (C++ writes bypass sys.stderr); re-emit all but known-harmless lines."""
    captured = io.StringIO()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            captured.write(tmp.read().decode(errors="replace"))
            kept = [line for line in captured.getvalue().splitlines(keepends=True)
                    if not any(h in line for h in _HARMLESS_STDERR)]
            if kept:
                sys.stderr.write("".join(kept))


def make_env_from_config(cfg: EnvConfig, **overrides) -> gym.Env:
    args = dict(
        env_id=cfg.env_id, obs_mode=cfg.obs_mode, control_mode=cfg.control_mode,
        reward_mode=cfg.reward_mode, max_episode_steps=cfg.max_episode_steps,
        camera_size=cfg.camera_size, backend=cfg.backend,
    )
    args.update(overrides)
    return make_env(**args)


@lru_cache(maxsize=1)
def _warn_blas_kernel_once() -> None:
    why = kernel_mismatch()
    if why is not None:
        logging.getLogger(__name__).warning("%s (import ms2core first, or set OPENBLAS_CORETYPE before numpy)", why)


def simulator_versions() -> dict[str, str]:
    """Versions of the simulator stack, for manifests and ``ms2 doctor``."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("mani_skill2", "sapien", "gymnasium"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    out["vk_cpu_layer"] = "enabled" if os.environ.get("MS2FLOW_VK_CPU_LAYER") == "1" else "off"
    out["openblas_core"] = blas_kernel()  # the rewards' last bits depend on it (ms2core.numerics)
    return out
