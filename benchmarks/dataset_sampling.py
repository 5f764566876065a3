"""Batches/s of point-cloud demo sampling (batch 256, 1250 points) from a Zarr store: in RAM vs dynamic loading.

Writes a synthetic point-cloud dataset in the pipelines.render layout (random
points, Blosc-zstd, ~4 MB chunks), then samples batches through
``ms2core.data.DemoDataset`` in ``ram`` mode (the baseline), ``dynamic`` mode
with a cache of a fraction of the dataset, and both through the prefetch
thread. Prints batches/s, the ratio to the RAM baseline, and the process RSS
after each. Writes results/dataset_sampling.json.

    python -m benchmarks.dataset_sampling [--rows 20000] [--points 1250] [--batches 200] [--cache-fraction 0.25]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import write_result

CHUNK_BYTES = 4 << 20


def write_synthetic_pointcloud_dataset(path: str | Path, rows: int, points: int = 1250, episode_len: int = 100,
                                       state_dim: int = 32, action_dim: int = 7, seed: int = 0) -> Path:
    """A realistic-size point-cloud dataset (random content) in the Zarr layout pipelines.render writes."""
    from ms2core.data.store import DatasetWriter, synthetic_manifest
    from storage_schemas.dataset import ArraySpec

    path = Path(path)
    rng = np.random.default_rng(seed)
    shapes = {
        "obs/xyz": ((points, 3), np.float32), "obs/rgb": ((points, 3), np.uint8),
        "obs/state": ((state_dim,), np.float32), "actions": ((action_dim,), np.float32),
        "rewards": ((), np.float32), "success": ((), bool), "terminated": ((), bool),
        "truncated": ((), bool),
    }
    specs = {}
    for name, (shape, dtype) in shapes.items():
        row_bytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        specs[name] = ArraySpec(row_shape=list(shape), dtype=np.dtype(dtype).name,
                                chunk_rows=int(max(1, min(rows, CHUNK_BYTES // row_bytes))),
                                codec="blosc(zstd, clevel=3, shuffle)")
    ends = np.arange(episode_len, rows + episode_len, episode_len).clip(max=rows)
    ends = np.unique(ends).astype(np.int64)
    last = np.zeros(rows, bool)
    last[ends - 1] = True
    writer = DatasetWriter(str(path), create=True)  # the one writer: its commit records the chunk inventory
    writer.create_arrays(specs, level=3, use_shards=False)
    slab = 4096
    for start in range(0, rows, slab):
        n = min(slab, rows - start)
        writer.write_rows(start, {
            "obs/xyz": rng.uniform(-0.5, 0.5, (n, points, 3)).astype(np.float32),
            "obs/rgb": rng.integers(0, 256, (n, points, 3), dtype=np.uint8),
            "obs/state": rng.normal(size=(n, state_dim)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
            "rewards": np.zeros(n, np.float32), "success": np.zeros(n, bool),
            # no success: every episode is cut (truncated) at its last row
            "terminated": np.zeros(n, bool), "truncated": last[start:start + n]})
    manifest = synthetic_manifest("PickCube-v0", "pd_ee_delta_pose", "pointcloud", np.diff(ends, prepend=0),
                                  source="benchmarks/dataset_sampling.py synthetic", success=[False] * len(ends))
    manifest.arrays = specs
    writer.commit(manifest, ends)
    return path


def rss_mb() -> float:
    """Current resident set size (from /proc; ru_maxrss is the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batches_per_s(dataset, batch_size: int, n_batches: int, prefetch: int) -> float:
    from ms2core.data import BatchStream

    stream = BatchStream(dataset, batch_size, seed=0, device="cpu", prefetch_batches=prefetch)
    for _ in range(3):
        next(stream)
    start = time.perf_counter()
    for _ in range(n_batches):
        next(stream)
    elapsed = time.perf_counter() - start
    stream.close()
    return n_batches / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--points", type=int, default=1250)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--cache-fraction", type=float, default=0.25, help="dynamic mode cache / dataset bytes")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    from ms2core.data import DemoDataset

    tmp = tempfile.TemporaryDirectory() if args.data_dir is None else None
    path = Path(args.data_dir or tmp.name) / "pointcloud_bench.zarr"
    t0 = time.perf_counter()
    write_synthetic_pointcloud_dataset(path, args.rows, args.points)
    print(f"wrote {args.rows} rows x {args.points} points in {time.perf_counter() - t0:.1f} s; RSS {rss_mb():.0f} MB")
    rows = {}
    rss_start = rss_mb()
    for mode, prefetch in (("dynamic", 0), ("dynamic", 4), ("ram", 0), ("ram", 4)):
        t0 = time.perf_counter()
        dataset_bytes = args.rows * (args.points * 15 + 4 * (32 + 7))
        ds = DemoDataset([path], mode=mode, cache_bytes=int(args.cache_fraction * dataset_bytes), block_rows=512)
        load_s = time.perf_counter() - t0
        rate = batches_per_s(ds, args.batch_size, args.batches, prefetch)
        label = f"{mode}{'+prefetch' if prefetch else ''}"
        cached = ds.storage.cached_bytes() if mode == "dynamic" else ds.total_bytes
        rows[label] = dict(batches_per_s=rate, load_s=load_s, rss_mb=rss_mb(), data_in_memory_mb=cached / 2**20)
        del ds
    base = rows["ram"]["batches_per_s"]
    for label, row in rows.items():
        row["ratio_to_ram"] = row["batches_per_s"] / base
        print(f"{label:18s} {row['batches_per_s']:8.1f} batches/s  x{row['ratio_to_ram']:.2f} of RAM  "
              f"load {row['load_s']:.1f} s  RSS {row['rss_mb']:.0f} MB  data held {row['data_in_memory_mb']:.0f} MB")
    dataset_mb = args.rows * args.points * 15 / 2**20
    path_out = write_result("dataset_sampling", dict(
        rows=args.rows, points=args.points, batch_size=args.batch_size, dataset_mb=dataset_mb,
        cache_fraction=args.cache_fraction, rss_before_mb=rss_start, modes=rows,
    ))
    print(f"dataset {dataset_mb:.0f} MB; results in {path_out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
