"""What training checks before it reads data or builds an env: the env settings against the env registry
and against every input dataset's manifest, and (``assert_finite*``) that losses and parameters stay finite.

    env.env_id=PickCub-v0               -> ConfigError: unknown env id 'PickCub-v0', did you mean PickCube-v0?
    env.control_mode=pd_joint_delta_pos -> ConfigError: ... the dataset's actions are pd_ee_delta_pose
    loss = nan at step 12               -> TrainingDivergedError (no checkpoint with NaN weights is written)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch

from ms2core.errors import ConfigError, TrainingDivergedError, UnknownEnvError, UnsupportedModeError, unknown_choice

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- inputs and env of a config
def env_config_and_key(cfg):
    """(EnvConfig, its dotted key) of a training config; (None, None) for plain gym envs (rollout.gym_env_id)."""
    rollout = getattr(cfg, "rollout", None)
    if rollout is not None:
        return (None, None) if rollout.gym_env_id else (rollout.env, "rollout.env")
    return cfg.env, "env"


def training_inputs(cfg) -> list[tuple[str, str]]:
    """(config key, path) of every dataset a training config reads: BC's dataset.paths, DAPG/GAIL demos.path."""
    dataset = getattr(cfg, "dataset", None)
    out = [(f"dataset.paths[{i}]", p) for i, p in enumerate(getattr(dataset, "paths", None) or [])]
    demos = getattr(cfg, "demos", None)
    if demos is not None:
        out.append(("demos.path", demos.path))
    return out


# --------------------------------------------------------------------------- env settings
def check_env_settings(env_cfg, key: str = "env") -> None:
    """env id, control mode and obs mode must be ones the backend knows (before any data is read or worker
    spawned). Where the simulator cannot be imported (the learner-only GPU image) the registry is skipped;
    the dataset manifests still catch a wrong id (check_env_matches_dataset)."""
    from ms2core.envs import registered_env_ids, supported_control_modes, supported_obs_modes

    backend = env_cfg.backend
    try:
        env_ids = registered_env_ids(backend)
    except ImportError as exc:
        log.warning("cannot check %s.env_id against the env registry (%s)", key, exc)
        return
    if env_cfg.env_id not in env_ids:
        raise unknown_choice(f"{key}.env_id", env_cfg.env_id, env_ids, cls=UnknownEnvError)
    control_modes = supported_control_modes(env_cfg.env_id, backend)
    if control_modes and env_cfg.control_mode not in control_modes:
        raise unknown_choice(f"{key}.control_mode for {env_cfg.env_id}", env_cfg.control_mode, control_modes,
                             cls=UnsupportedModeError)
    obs_modes = supported_obs_modes(env_cfg.env_id, backend)
    if env_cfg.obs_mode not in obs_modes:
        raise unknown_choice(f"{key}.obs_mode for {env_cfg.env_id}", env_cfg.obs_mode, obs_modes,
                             cls=UnsupportedModeError)


def check_env_matches_dataset(env_cfg, key: str, manifest, name: str, path: str) -> None:
    """The env the policy will act in must be the one the dataset was rendered from: same task, same
    controller (the actions' meaning), same observation mode."""
    source, obs = manifest.source, manifest.options.obs
    pairs = [("env_id", env_cfg.env_id, source.env_id, [source.env_id])]
    if source.control_mode is not None:
        pairs.append(("control_mode", env_cfg.control_mode, source.control_mode, [source.control_mode]))
    pairs.append(("obs_mode", env_cfg.obs_mode, obs.env_obs_mode, sorted({obs.obs_mode, obs.env_obs_mode})))
    for field, value, theirs, allowed in pairs:
        if value not in allowed:
            raise ConfigError(
                f"{key}.{field}={value!r} does not match {name} {path}, rendered with {field} {theirs!r}",
                hint=f"set --set {key}.{field}={theirs} (allowed for this dataset: {', '.join(allowed)}), "
                     "or train on a dataset rendered for this setting")


def check_env_against_inputs(cfg, manifests: Mapping[str, tuple[str, object]]) -> None:
    """check_env_settings, then every manifest (name -> (path, DatasetManifest or None for a hand-made store))."""
    env_cfg, key = env_config_and_key(cfg)
    if env_cfg is None:
        return
    check_env_settings(env_cfg, key)
    for name, (path, manifest) in manifests.items():
        if manifest is not None:
            check_env_matches_dataset(env_cfg, key, manifest, name, path)


# --------------------------------------------------------------------------- divergence
DIVERGED_HINT = "lower the learning rate (or clip gradients), and check the inputs with `ms2 validate PATH`"


def with_last_checkpoint(exc: TrainingDivergedError, checkpoint, context: str = "") -> TrainingDivergedError:
    """The same error, naming where it happened and the last good checkpoint (every checkpoint written is
    finite: checkpoints with non-finite weights are refused)."""
    from pathlib import Path

    last = (f"; the last good checkpoint is {checkpoint} (continue from it with --resume-from)"
            if checkpoint is not None and Path(checkpoint).exists() else "; no checkpoint had been written yet")
    return TrainingDivergedError(exc.message + context, (exc.hint or DIVERGED_HINT) + last,
                                 step=exc.step, value=exc.value)


def assert_finite_loss(loss: torch.Tensor | float, what: str, step: int) -> None:
    """One isfinite per call (a host sync on CUDA; callers batch the check where they avoid syncs)."""
    value = float(loss.detach().float().max() if isinstance(loss, torch.Tensor) else loss)
    if not torch.isfinite(torch.tensor(value)):
        raise TrainingDivergedError(f"training diverged: {what} is {value} at step {step}",
                                    hint=DIVERGED_HINT, step=step, value=value)


def first_nonfinite(losses: torch.Tensor) -> int | None:
    """Index of the first NaN/Inf in a 1-d tensor of losses (None when all are finite)."""
    bad = ~torch.isfinite(losses)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def nonfinite_tensors(tensors: Mapping[str, object], prefix: str = "") -> list[str]:
    """Names of the floating tensors (nested dicts and lists of them too) holding NaN/Inf."""
    bad = []
    for name, value in tensors.items():
        full = f"{prefix}{name}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(full)
        elif isinstance(value, Mapping):
            bad += nonfinite_tensors(value, f"{full}.")
    return bad


def assert_finite_parameters(modules: Iterable[torch.nn.Module] | Mapping[str, object], step: int,
                             what: str = "parameter") -> None:
    """Refuse NaN/Inf weights (at log steps and before every checkpoint write)."""
    if isinstance(modules, Mapping):
        bad = nonfinite_tensors(modules)
    else:
        bad = [n for m in modules for n, p in m.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingDivergedError(
            f"training diverged: {what} {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} "
            f"not finite at step {step}; no checkpoint was written with these weights",
            hint=DIVERGED_HINT, step=step)


@contextmanager
def diverged_at(checkpoint, env_steps: int) -> Iterator[None]:
    """Online RL: a TrainingDivergedError inside names the env steps and the last good checkpoint."""
    try:
        yield
    except TrainingDivergedError as exc:
        raise with_last_checkpoint(exc, checkpoint, f" ({env_steps} env steps)") from None
