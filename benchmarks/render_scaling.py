"""Render throughput, dataset size and random-minibatch reads: pipelines.render (Dask + Zarr) vs a
convert_state-style baseline (one process, gzip HDF5), on the same PickCube-v0 episodes.

The baseline does what ManiSkill2-Learn's tools/convert_state.py does with one
process: for each trajectory reset with its seed, set every recorded state,
take and process the observation (the same ms2core.obs processing, so only the
pipeline and the storage differ), step the recorded action for the reward
(``env.step``, which renders the observation a second time), then write ``traj_i/{obs/*, actions,
rewards, dones}`` with h5py gzip (level 4, h5py's automatic chunks).

Both sides are measured warm: the baseline env and every Dask worker's env
are built and have rendered a frame (shader compile, ~6 s per process) before
the clock starts, so the numbers are steady-state frames/s. Episodes are
truncated to --steps steps to keep the run short on a shared CPU.

Targets: Zarr size <= 0.7x the gzip HDF5; 1 worker >= 1.0x and 2 workers >= 1.7x
the baseline frames/s; random 256-transition minibatch reads from Zarr >= 2x HDF5.

Minibatch reads need more rows than one batch, so they use the same number of
episodes at full length (--read-steps, default 80 like PickCube demos),
rendered once by the pipeline, and the same rows written convert_state's way.

    python -m benchmarks.render_scaling [--episodes 20] [--steps 12] [--read-steps 80] [--modes pointcloud rgbd]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from benchmarks._common import write_result
from ms2core.data.store import DatasetStore
from ms2core.obs import observe_env, process_observation
from ms2core.trajectory import DemoPair
from pipelines import render
from storage_schemas.dataset import RenderConfig

ENV_ID = "PickCube-v0"
BATCH = 256


def make_demo(path: Path, n_episodes: int, n_steps: int) -> Path:
    from tests.demo_fixtures import sim_demo_pair

    return sim_demo_pair(path, n_episodes=n_episodes, n_steps=n_steps, seed=7)


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# -- the convert_state-style baseline --------------------------------------------------------------
def baseline_render(demo: Path, out: Path, cfg: RenderConfig, env) -> tuple[float, int]:
    """Render every episode in this process and write gzip HDF5; returns (seconds, frames)."""
    obs_cfg = cfg.options.obs
    start = time.perf_counter()
    frames = 0
    with DemoPair(demo) as pair, h5py.File(out, "w") as f:
        for i, ep in enumerate(pair.iter_episodes()):
            env.reset(seed=ep.meta.seed)
            rng = np.random.default_rng([cfg.options.seed, ep.meta.episode_id])
            rows, rewards, dones = [], [], []
            for t in range(ep.num_steps):
                env.unwrapped.set_state(ep.env_states[t])
                rows.append(process_observation(observe_env(env), obs_cfg, rng))
                # convert_state steps for the reward (contacts), observing again inside env.step
                _, reward, terminated, _, _ = env.step(ep.actions[t])
                rewards.append(reward)
                dones.append(terminated)
            dones = np.asarray(dones, bool)
            write_h5_trajectory(f, i, {key: np.stack([r[key] for r in rows]) for key in rows[0]}, ep.actions,
                                np.asarray(rewards, np.float32), dones)
            frames += ep.num_steps
    return time.perf_counter() - start, frames


def write_h5_trajectory(f: h5py.File, i: int, obs: dict[str, np.ndarray], actions: np.ndarray,
                        rewards: np.ndarray, dones: np.ndarray) -> None:
    """``traj_i/{obs/*, actions, rewards, dones}``, gzip with h5py's automatic chunks, as convert_state writes."""
    group = f.create_group(f"traj_{i}")
    for key, value in obs.items():
        group.create_dataset(f"obs/{key}", data=value, compression="gzip")
    group.create_dataset("actions", data=actions, compression="gzip")
    group.create_dataset("rewards", data=rewards, compression="gzip")
    group.create_dataset("dones", data=dones, compression="gzip")


def h5_from_store(store: str, out: Path) -> Path:
    """The same transitions as a Zarr dataset, written the convert_state way (one group per trajectory)."""
    dataset = DatasetStore.open(store)
    data = {key: dataset.read(key) for key in dataset.arrays}
    ends = dataset.episode_ends
    with h5py.File(out, "w") as f:
        for i, (lo, hi) in enumerate(zip(np.concatenate([[0], ends[:-1]]), ends)):
            obs = {key[4:]: value[lo:hi] for key, value in data.items() if key.startswith("obs/")}
            write_h5_trajectory(f, i, obs, data["actions"][lo:hi], data["rewards"][lo:hi], data["terminated"][lo:hi])
    return out


# -- random minibatch reads ------------------------------------------------------------------------
class H5Reader:
    """Random transitions from the convert_state-style file: one fancy read per trajectory dataset."""

    def __init__(self, path: Path):
        self.file = h5py.File(path, "r")
        names = sorted(self.file, key=lambda k: int(k[5:]))
        self.ends = np.cumsum([self.file[n]["actions"].shape[0] for n in names])
        self.keys = []
        self.file[names[0]].visititems(lambda k, v: self.keys.append(k) if isinstance(v, h5py.Dataset) else None)
        self.datasets = [{k: self.file[n][k] for k in self.keys} for n in names]

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        traj = np.searchsorted(self.ends, idx, side="right")
        local = idx - np.concatenate([[0], self.ends[:-1]])[traj]
        batch = {k: [] for k in self.keys}
        for j in np.unique(traj):
            rows = local[traj == j].tolist()
            for k in self.keys:
                batch[k].append(self.datasets[j][k][rows])
        return {k: np.concatenate(v) for k, v in batch.items()}


def minibatch_rates(store: str, h5_path: Path, n_batches: int, seed: int = 0) -> tuple[float, float]:
    """Batches/s for Zarr and HDF5, interleaved batch by batch on the same random indices."""
    dataset = DatasetStore.open(store)
    total = dataset.n_rows
    h5 = H5Reader(h5_path)
    rng = np.random.default_rng(seed)
    zarr_s = h5_s = 0.0
    try:
        for _ in range(n_batches):
            idx = np.sort(rng.choice(total, min(BATCH, total), replace=False))
            start = time.perf_counter()
            batch = dataset.read_rows(dataset.arrays, idx)
            zarr_s += time.perf_counter() - start
            start = time.perf_counter()
            h5_batch = h5.read(idx)
            h5_s += time.perf_counter() - start
            assert len(batch["actions"]) == len(h5_batch["actions"]) == len(idx)
    finally:
        h5.file.close()
    return n_batches / zarr_s, n_batches / h5_s


def _warm_worker(env_key, obs_cfg):
    env = render._cached_env(env_key)
    env.reset(seed=0)
    process_observation(observe_env(env), obs_cfg)
    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=12, help="steps per episode (demos are truncated to this)")
    parser.add_argument("--modes", nargs="+", default=["pointcloud", "rgbd"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--read-steps", type=int, default=80,
                        help="steps per episode of the dataset the minibatch reads use (PickCube demos run ~60-100)")
    args = parser.parse_args()

    from dask.distributed import Client, LocalCluster

    from ms2core.envs import make_env

    work = Path(tempfile.mkdtemp(prefix="ms2-render-bench-"))
    try:
        demo = make_demo(work / "demos" / "pick.h5", args.episodes, args.steps)
        read_demo = make_demo(work / "demos" / "read.h5", args.episodes, args.read_steps)
        rows, plans = {}, {}

        def baseline(mode: str, h5_path: Path) -> tuple[float, int]:
            cfg, plan = plans[mode]
            env = make_env(ENV_ID, plan.env.obs_mode, plan.env.control_mode, plan.env.reward_mode)
            env.reset(seed=0)
            process_observation(observe_env(env), cfg.options.obs)  # warm: shader compile, first picture
            seconds, frames = baseline_render(demo, h5_path, cfg, env)
            env.close()
            return frames / seconds, frames

        for mode in args.modes:  # plain baselines first: the allocator setting below is irreversible
            cfg = RenderConfig.model_validate(dict(source=str(demo), output_dir=str(work / "zarr"),
                                                   options=dict(obs=dict(obs_mode=mode)), progress=False,
                                                   episodes_per_range=2))
            plans[mode] = (cfg, render.plan_render(cfg))
            h5_path = work / f"{mode}.h5"
            base_fps, frames = baseline(mode, h5_path)
            rows[mode] = dict(frames=frames, baseline_frames_per_s=base_fps, h5_bytes=h5_path.stat().st_size)
            print(f"{mode:10s} baseline (1 process, gzip HDF5): {base_fps:6.2f} frames/s, "
                  f"{rows[mode]['h5_bytes'] / 2**20:.1f} MiB", flush=True)
        # For transparency: the baseline with the allocator setting our Dask workers apply.
        if render.relax_malloc_trimming():
            for mode in args.modes:
                tuned_fps, _ = baseline(mode, work / f"{mode}-tuned.h5")
                rows[mode]["baseline_malloc_tuned_frames_per_s"] = tuned_fps
                print(f"{mode:10s} baseline with relaxed malloc trimming: {tuned_fps:6.2f} frames/s", flush=True)
        for mode in args.modes:
            cfg, plan = plans[mode]
            row = rows[mode]
            h5_path = work / f"{mode}.h5"
            base_fps = row["baseline_frames_per_s"]
            for n in args.workers:
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
                client = Client(cluster)
                try:
                    client.run(_warm_worker, plan.env, cfg.options.obs)
                    store = str(work / "zarr" / f"{mode}-w{n}.zarr")
                    run_cfg = cfg.model_copy(update={"scheduler": cluster.scheduler_address, "store": store})
                    result = render.run(run_cfg)
                finally:
                    render.close_dask(client, cluster)
                fps = result.n_rows / result.elapsed_s
                row[f"workers_{n}_frames_per_s"] = fps
                row[f"workers_{n}_ratio"] = fps / base_fps
                if "baseline_malloc_tuned_frames_per_s" in row:
                    row[f"workers_{n}_ratio_vs_tuned_baseline"] = fps / row["baseline_malloc_tuned_frames_per_s"]
                row["zarr_bytes"] = tree_bytes(Path(store))
                print(f"{mode:10s} pipelines.render, {n} Dask worker(s): {fps:6.2f} frames/s = "
                      f"{fps / base_fps:.2f}x baseline (target {'1.0' if n == 1 else '1.7'}x), "
                      f"{row.get(f'workers_{n}_ratio_vs_tuned_baseline', float('nan')):.2f}x the malloc-tuned baseline",
                      flush=True)
            row["size_ratio"] = row["zarr_bytes"] / row["h5_bytes"]
            # Random minibatches need a dataset larger than one batch: the same number of episodes at full
            # length, rendered once by the pipeline; the HDF5 side holds the same rows in convert_state's layout.
            read_store = str(work / "zarr" / f"{mode}-read.zarr")
            render.run(cfg.model_copy(update={"source": str(read_demo), "store": read_store,
                                              "workers": max(args.workers)}))
            read_h5 = h5_from_store(read_store, work / f"{mode}-read.h5")
            row["read_rows"] = DatasetStore.open(read_store).n_rows
            row["read_size_ratio"] = tree_bytes(Path(read_store)) / read_h5.stat().st_size
            row["zarr_minibatches_per_s"], row["h5_minibatches_per_s"] = minibatch_rates(read_store, read_h5,
                                                                                         args.batches)
            row["read_ratio"] = row["zarr_minibatches_per_s"] / row["h5_minibatches_per_s"]
            print(f"{mode:10s} size: Zarr {row['zarr_bytes'] / 2**20:.1f} MiB = {row['size_ratio']:.2f}x gzip HDF5 "
                  f"(target <= 0.7x; {row['read_size_ratio']:.2f}x on the {row['read_rows']}-row read set); "
                  f"random {BATCH}-transition minibatches: Zarr "
                  f"{row['zarr_minibatches_per_s']:.1f}/s vs HDF5 {row['h5_minibatches_per_s']:.1f}/s = "
                  f"{row['read_ratio']:.2f}x (target >= 2x)")
        path = write_result("render_scaling", dict(env_id=ENV_ID, episodes=args.episodes, steps_per_episode=args.steps,
                                                   read_steps_per_episode=args.read_steps,
                                                   camera="128x128 (task default)", results=rows))
        print(f"wrote {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
