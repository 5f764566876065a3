"""What the demo-pair stages share (generation, import, replay): the pair check, the inputs digest, stale temporaries.

``validate_pair`` opens a pair, reads every array and checks its env id and
control mode; ``options_digest`` is the digest a stage records of the inputs
that made its output; ``remove_stale_temporaries`` deletes what killed runs left.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ms2core.errors import DemoFileError, UnknownEnvError, UnsupportedModeError, unknown_choice
from ms2core.fileio import pid_alive
from ms2core.trajectory import DemoPair, demo_digest, pair_paths
from storage_schemas.demos import DemoRecord


def options_digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def remove_stale_temporaries(stem: Path) -> None:
    """Delete ``.NAME.*.tmp-PID`` files left by killed runs whose process is gone."""
    h5_path, json_path = pair_paths(stem)
    for target in (h5_path, json_path, stem.with_name(stem.name + ".report.json")):
        for tmp in target.parent.glob(f".{target.name}.tmp-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)


def validate_pair(path: str | os.PathLike, check_env: bool = True, backend: str = "sapien") -> DemoRecord:
    """Open the pair, check its layout and every episode's data, and (optionally) its env id and control mode."""
    h5_path, json_path = pair_paths(path)
    with DemoPair(h5_path) as demos:
        env_id = demos.env_info.env_id
        control_mode = demos.meta.control_mode
        total_steps, state_dim, has_states = 0, None, False
        for i, meta in enumerate(demos.episodes):
            episode = demos.read_episode(i)  # reads every array: a corrupt chunk fails here, naming the episode
            where = f"{h5_path} episode {meta.episode_id}"
            if episode.env_states is not None:
                has_states = True
                if state_dim is None:
                    state_dim = episode.env_states.shape[1:]
                elif episode.env_states.shape[1:] != state_dim:
                    raise DemoFileError(f"{where}: env_states rows have shape {episode.env_states.shape[1:]}, "
                                        f"other episodes {state_dim}")
            if meta.control_mode and control_mode and meta.control_mode != control_mode:
                raise DemoFileError(f"{where}: control mode {meta.control_mode!r} differs from the pair's "
                                    f"{control_mode!r}", hint="one pair holds one control mode; split it")
            if meta.seed is None and episode.env_states is None:
                raise DemoFileError(f"{where}: neither a seed (episode_seed / reset_kwargs.seed) nor env_states",
                                    hint="the episode's initial state cannot be reproduced")
            total_steps += episode.num_steps
        if check_env:
            _check_env_and_mode(env_id, control_mode, backend, json_path)
    return DemoRecord(env_id=env_id, control_mode=control_mode, num_episodes=len(demos.episodes),
                      total_steps=total_steps, digest=demo_digest(h5_path), h5_path=str(h5_path),
                      json_path=str(json_path), source=str(h5_path), has_env_states=has_states)


def _check_env_and_mode(env_id: str, control_mode: str | None, backend: str, json_path: Path) -> None:
    from ms2core.envs import registered_env_ids, supported_control_modes

    ids = registered_env_ids(backend)
    if env_id not in ids:
        err = unknown_choice(f"env id in {json_path} (env_info.env_id):", env_id, ids, cls=UnknownEnvError)
        raise err
    modes = supported_control_modes(env_id, backend)
    if control_mode is None:
        raise DemoFileError(f"{json_path}: no control_mode in the episodes or env_info.env_kwargs",
                            hint=f"{env_id} supports {', '.join(modes)}")
    if modes and control_mode not in modes:
        raise unknown_choice(f"control mode in {json_path} for {env_id}:", control_mode, modes,
                             cls=UnsupportedModeError)
