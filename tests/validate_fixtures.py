"""Small real datasets for the validation tests: fake-env demo pairs (written with
ms2core.trajectory.write_demo_pair) and Zarr datasets rendered from them the way pipelines.render
does (ms2core.envs.episode_sim: obs at each recorded env state, reward/success/terminated from stepping
its action, truncated at a last row not terminated; Blosc zstd chunks along time, DatasetManifest in
attrs["ms2flow"]).

The simulation mirrors pipelines.render with chunks small enough that episodes span several; the
store is written by the project's one writer (ms2core.data.store.write_dataset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from ms2core.data.store import write_dataset
from ms2core.envs import make_env
from ms2core.envs.episode_sim import simulate_recorded_episode
from ms2core.obs import observe_env, process_observation
from ms2core.trajectory import DemoPair, Episode, demo_digest, write_demo_pair
from storage_schemas.dataset import (
    MANIFEST_ATTR, DatasetManifest, EpisodeStatus, ObsProcessConfig, RenderOptions, SourceInfo,
    dataset_version,
)
from storage_schemas.demos import EnvInfo, EpisodeMeta

ENV_ID = "PickCube-v0"
CONTROL_MODE = "pd_ee_delta_pose"


def record_fake_demos(path: Path, n_episodes: int = 4, seed0: int = 0, max_steps: int = 40) -> Path:
    """Solve the fake PickCube with its reaching policy; record actions, env states and success."""
    env = make_env(ENV_ID, "state", CONTROL_MODE, backend="fake")
    u = env.unwrapped
    episodes = []
    for i in range(n_episodes):
        seed = seed0 + i
        env.reset(seed=seed)
        states, actions, success = [u.get_state()], [], []
        for _ in range(max_steps):
            s = u.get_state()
            action = np.zeros(7, np.float32)
            action[:3] = np.clip((s[3:6] - s[0:3]) / 0.05, -0.3, 0.3)  # slow: episodes span chunks
            _, _, _, _, info = env.step(action)
            actions.append(action)
            states.append(u.get_state())
            success.append(bool(info["success"]))
            if info["success"]:
                break
        meta = EpisodeMeta(episode_id=i, episode_seed=seed, reset_kwargs={"seed": seed}, control_mode=CONTROL_MODE,
                           elapsed_steps=len(actions), info={"success": success[-1]})
        episodes.append(Episode(meta=meta, actions=np.asarray(actions), success=np.asarray(success),
                                env_states=np.asarray(states)))
    env.close()
    env_info = EnvInfo(env_id=ENV_ID, max_episode_steps=200,
                       env_kwargs={"obs_mode": "none", "control_mode": CONTROL_MODE, "reward_mode": "dense"})
    write_demo_pair(path, env_info, episodes, extra_json={"ms2flow": {"key": {"backend": "fake"}}})
    return path


@dataclass
class BuiltDataset:
    store: Path
    demos: Path
    manifest: DatasetManifest


def render_fake_dataset(demos: Path, store: Path, obs_mode: str = "pointcloud", n_points: int = 64,
                        chunk_rows: int = 4, camera_size=(32, 24),
                        backend: str = "fake", shard_chunks: int | None = None) -> BuiltDataset:
    """Render a demo pair (fake env by default) into a Zarr v3 dataset, stored by the one writer
    (``write_dataset``: chunks of ``chunk_rows`` rows, optional shards, the chunk inventory)."""
    obs_cfg = ObsProcessConfig(obs_mode=obs_mode, n_points=n_points)
    options = RenderOptions(obs=obs_cfg, backend=backend, camera_size=camera_size if obs_mode == "rgbd" else None,
                            chunk_target_bytes=1 << 20)
    with DemoPair(demos) as pair:
        env_id, control_mode = pair.env_info.env_id, pair.meta.control_mode
    env = make_env(env_id, obs_cfg.env_obs_mode, control_mode, "dense", backend=backend,
                   camera_size=options.camera_size)
    columns: dict[str, list] = {}
    ends, statuses = [], []
    with DemoPair(demos) as pair:
        for ep in pair.iter_episodes():
            rng = np.random.default_rng(ep.meta.episode_id)
            n = ep.num_steps
            sim = simulate_recorded_episode(
                env, ep, lambda env_now, raw, rng=rng: process_observation(observe_env(env_now) if raw is None else raw,
                                                                          obs_cfg, rng))
            obs_rows = sim.observations
            rows = {"actions": ep.actions.astype(np.float32), "rewards": sim.rewards.astype(np.float32),
                    "success": sim.success, "terminated": sim.terminated, "truncated": sim.truncated}
            for key in obs_rows[0]:
                rows[f"obs/{key}"] = np.stack([o[key] for o in obs_rows])
            for key, value in rows.items():
                columns.setdefault(key, []).append(value)
            ends.append((ends[-1] if ends else 0) + n)
            statuses.append(EpisodeStatus(episode_id=ep.meta.episode_id, seed=ep.meta.seed, n_steps=n, committed=True,
                                          success=bool(rows["success"][-1])))
        source = SourceInfo(path=str(demos), digest=demo_digest(demos), env_id=env_id, control_mode=control_mode,
                            n_episodes=len(pair), replay="env_states")
    env.close()
    columns = {key: np.concatenate(parts) for key, parts in sorted(columns.items())}
    versions = {"mani_skill2": backend, "sapien": backend}
    manifest = DatasetManifest(
        dataset_version=dataset_version(source.digest, options, versions), source=source, versions=versions,
        options=options, episodes=statuses, complete=True, inventory={})
    manifest = write_dataset(str(store), manifest, columns, np.diff(np.concatenate([[0], ends])),
                             chunk_rows=chunk_rows, shard_chunks=shard_chunks)
    return BuiltDataset(store=store, demos=demos, manifest=manifest)


def build(tmp_path: Path, obs_mode: str = "pointcloud", n_episodes: int = 4, **kwargs) -> BuiltDataset:
    demos = record_fake_demos(tmp_path / "demos" / "pick", n_episodes=n_episodes)
    return render_fake_dataset(demos, tmp_path / f"pick.{obs_mode}.zarr", obs_mode=obs_mode, **kwargs)


def write_rows(store: Path, key: str, rows: slice | np.ndarray, value) -> None:
    """Overwrite rows of data/<key> (a defect injected the way a buggy writer would: through the real
    writer, so the chunk inventory matches and only the value checks can find it)."""
    data = zarr.open_group(str(store), mode="r")[key][:]
    data[rows] = value
    write_array(store, key, data)


def write_array(store: Path, key: str, values: np.ndarray) -> None:
    """Replace every row of data/<key> through DatasetWriter and record the new chunks in the inventory
    of the manifest as stored (which tests may have edited, so it is updated as a raw dict)."""
    from ms2core.data.integrity import fold_into
    from ms2core.data.store import DatasetWriter
    from storage_schemas.dataset import StoredObject

    writer = DatasetWriter(str(store))
    writer.write_rows(0, {key.removeprefix("data/"): values})
    raw = dict(writer.root.attrs[MANIFEST_ATTR])
    inventory = {path: {chunk: StoredObject.model_validate(obj) for chunk, obj in objects.items()}
                 for path, objects in raw["inventory"].items()}
    folded = fold_into(inventory, writer.recorder.events)
    raw["inventory"] = {path: {c: o.model_dump() for c, o in objs.items()} for path, objs in folded.items()}
    writer.root.attrs.update({MANIFEST_ATTR: raw})


def set_manifest(store: Path, **updates) -> None:
    root = zarr.open_group(str(store), mode="r+")
    raw = dict(root.attrs[MANIFEST_ATTR])
    raw.update(updates)
    root.attrs.update({MANIFEST_ATTR: raw})
