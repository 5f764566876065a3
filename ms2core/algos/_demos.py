"""Demo transitions for the RL algorithms (DAPG's BC term, GAIL's discriminator, SAC's demo buffer), read
through the one store reader ``ms2core.data.store.DatasetStore`` (committed episodes only, chunks verified).

The layout (written by ``pipelines.render``)::

    <store>/data/obs/<key>      (T_total, ...)   processed observation before action t
    <store>/data/actions        (T_total, A)     float32, in the env's action units
    <store>/meta/episode_ends   (E,)             cumulative transition counts, strictly increasing

``write_demo_zarr`` writes the same layout through the one writer (``write_dataset``) for test fixtures
and benchmarks.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ms2core.errors import DatasetError


@dataclass
class DemoTransitions:
    obs: dict[str, np.ndarray]   # (T, ...) per key
    actions: np.ndarray          # (T, A) env units
    episode_ends: np.ndarray     # (E,)

    def __len__(self) -> int:
        return len(self.actions)

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        idx = rng.integers(0, len(self), batch_size)
        return {k: v[idx] for k, v in self.obs.items()}, self.actions[idx]


def load_demo_transitions(path: str | os.PathLike, obs_keys: list[str], max_episodes: int | None = None,
                          force: bool = False) -> DemoTransitions:
    """Read every committed transition (they fit in memory for state/point-cloud demos of a few thousand episodes).

    Opening and checking the store is ms2core.data's ``open_demo_store`` (DatasetStore underneath).
    """
    from ms2core.data.demo_dataset import open_demo_store

    store = open_demo_store(path, force=force)
    ends = store.dataset.episode_ends
    if max_episodes is not None:
        ends = ends[:max_episodes]
    n = int(ends[-1])
    missing = [k for k in obs_keys if f"obs/{k}" not in store.arrays]
    if missing:
        raise DatasetError(f"demo dataset {path} has no {', '.join(f'data/obs/{k}' for k in missing)}",
                           hint=f"it has data/obs/{{{', '.join(store.obs_keys)}}}")
    obs = {k: store.read(f"obs/{k}", 0, n) for k in obs_keys}
    return DemoTransitions(obs, np.asarray(store.read("actions", 0, n), np.float32), ends)


def check_demo_shapes(demos: DemoTransitions, env_obs_shapes: dict[str, tuple[int, ...]], obs_keys: list[str],
                      action_dim: int, path: str) -> None:
    """The demos must fit the env the agent acts in (same obs keys and shapes, same action dimension)."""
    if demos.actions.ndim != 2 or demos.actions.shape[1] != action_dim:
        raise DatasetError(f"demo dataset {path}: actions have shape {demos.actions.shape[1:]}, the env needs ({action_dim},)",
                           hint="render the demos with the same control mode as rollout.env.control_mode")
    for key in obs_keys:
        if key not in env_obs_shapes:
            raise DatasetError(f"demos.obs_keys names {key!r}, which the env's observations lack",
                               hint=f"the env gives {sorted(env_obs_shapes)}")
        shape = env_obs_shapes[key]
        if tuple(demos.obs[key].shape[1:]) != tuple(shape):
            raise DatasetError(f"demo dataset {path}: obs {key!r} has shape {demos.obs[key].shape[1:]}, the env gives {shape}",
                               hint="render the demos with the same obs mode and options as the rollout")


def check_demo_processing(path: str | os.PathLike, rollout_cfg) -> None:
    """Demos rendered with other observation processing (points, frame, goal points) than the rollouts would
    teach the policy inputs it never sees; the dataset manifest says how the demos were processed."""
    from ms2core.data.store import DatasetStore
    from ms2core.rollout import rollout_obs_processor

    if rollout_cfg.gym_env_id is not None:
        return
    try:
        manifest = DatasetStore.open(str(path), allow_unverified=True).manifest
    except Exception:  # noqa: BLE001 - missing or unreadable store: load_demo_transitions says what is wrong
        return
    demo = manifest.options.obs
    rollout = rollout_obs_processor(rollout_cfg).cfg
    if demo.obs_mode == "state" and rollout.obs_mode == "state":
        return  # the env's flat state vector either way: no options apply
    if demo != rollout:
        differing = {k: (v, getattr(rollout, k)) for k, v in demo if getattr(rollout, k) != v}
        raise DatasetError(
            f"demo dataset {path} was processed differently from the rollouts: "
            + ", ".join(f"{k}={a!r} (rollout: {b!r})" for k, (a, b) in differing.items()),
            hint="set rollout.obs to the dataset's options, e.g. "
            + " ".join(f"--set rollout.obs.{k}={a}" for k, (a, _) in differing.items()))


def write_demo_zarr(path: str | os.PathLike, episodes: list[dict[str, np.ndarray]], env_id: str = "PickCube-v0",
                    control_mode: str = "pd_ee_delta_pose", obs_mode: str = "state") -> Path:
    """Write episodes ``{"obs/<key>": (T, ...), "actions": (T, A), "rewards": (T,), "success": (T,)}`` as a
    committed dataset through the one writer; the manifest says the rows were not rendered from a demo pair."""
    from ms2core.data.store import synthetic_manifest, write_dataset

    path = Path(path)
    lengths = [len(ep["actions"]) for ep in episodes]
    columns = {key: np.concatenate([ep[key] for ep in episodes]) for key in episodes[0]}
    if "dones" not in columns:
        columns["dones"] = np.concatenate([np.arange(n) == n - 1 for n in lengths])
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    manifest = synthetic_manifest(env_id, control_mode, obs_mode, lengths, source=f"write_demo_zarr:{path.name}")
    write_dataset(str(tmp), manifest, columns, lengths)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path
