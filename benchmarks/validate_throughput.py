"""Validation throughput and memory on a dataset larger than the validator may hold in memory.

Builds a synthetic point-cloud dataset (default 1.1 GB uncompressed: 1200 points x (3 float32 + 3 uint8)
per row + state/actions/rewards/success/dones, episodes of 200 steps, 4 MiB chunks, Blosc zstd) under
/tmp, then, each in a fresh child process so peak RSS is the stage's own:

1. baseline: decode every committed chunk of every array and do nothing else (raw read MB/s);
2. ``pipelines.validate.run`` with every streaming check (replay off: the source demos are synthetic).

Prints uncompressed MB/s of both, the validation/raw time ratio, and peak RSS (ru_maxrss) of each
child, and writes benchmarks/results/validate_throughput.json. The dataset is deleted afterwards.

    python -m benchmarks.validate_throughput [--gb 1.1] [--workers 0] [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_POINTS = 1200
STATE_DIM = 32
ACTION_DIM = 7
EPISODE_STEPS = 200
ROW_BYTES = N_POINTS * (3 * 4 + 3) + STATE_DIM * 4 + ACTION_DIM * 4 + 4 + 1 + 1


def build(store: Path, target_gb: float) -> dict:
    """Write the synthetic dataset block by block (memory stays bounded while building too)."""
    from ms2core.data.store import DatasetWriter
    from storage_schemas.dataset import (
        ArraySpec, DatasetManifest, EpisodeStatus, ObsProcessConfig, RenderOptions, SourceInfo,
    )

    n_episodes = max(1, math.ceil(target_gb * 1e9 / ROW_BYTES / EPISODE_STEPS))
    n_rows = n_episodes * EPISODE_STEPS
    shapes = {"obs/xyz": ((N_POINTS, 3), "float32"), "obs/rgb": ((N_POINTS, 3), "uint8"),
              "obs/state": ((STATE_DIM,), "float32"), "actions": ((ACTION_DIM,), "float32"),
              "rewards": ((), "float32"), "success": ((), "bool"), "terminated": ((), "bool"),
              "truncated": ((), "bool")}
    specs = {}
    for key, (row_shape, dtype) in shapes.items():
        row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
        specs[key] = ArraySpec(row_shape=list(row_shape), dtype=dtype, chunk_rows=max(1, (4 << 20) // row_bytes),
                               codec="blosc(zstd, clevel=3, shuffle)")
    writer = DatasetWriter(str(store), create=True)  # the one writer: its commit records the chunk inventory
    writer.create_arrays(specs, level=3, use_shards=False)
    rng = np.random.default_rng(0)
    block = specs["obs/xyz"].chunk_rows * 8
    for a in range(0, n_rows, block):
        b = min(a + block, n_rows)
        n = b - a
        last = (np.arange(a, b) % EPISODE_STEPS) == EPISODE_STEPS - 1
        writer.write_rows(a, {
            "obs/xyz": rng.normal(0, 0.3, (n, N_POINTS, 3)).astype(np.float32),
            "obs/rgb": rng.integers(0, 256, (n, N_POINTS, 3), dtype=np.uint8),
            "obs/state": rng.normal(0, 1, (n, STATE_DIM)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
            "rewards": rng.uniform(0, 1, n).astype(np.float32), "success": last, "terminated": last,
            "truncated": np.zeros(n, bool)})
    ends = np.arange(1, n_episodes + 1, dtype=np.int64) * EPISODE_STEPS
    options = RenderOptions(obs=ObsProcessConfig(obs_mode="pointcloud", n_points=N_POINTS), backend="fake")
    manifest = DatasetManifest(
        dataset_version="benchmark", versions={}, options=options, arrays=specs,
        source=SourceInfo(path=str(store.parent / "no-demos"), digest="0" * 64, env_id="PickCube-v0",
                          control_mode="pd_ee_delta_pose", n_episodes=n_episodes, replay="env_states"),
        episodes=[EpisodeStatus(episode_id=i, seed=i, n_steps=EPISODE_STEPS, committed=True, success=True)
                  for i in range(n_episodes)],
        n_committed_episodes=n_episodes, n_committed_rows=n_rows, complete=True, inventory={})
    writer.commit(manifest, ends)
    return {"n_rows": n_rows, "n_episodes": n_episodes, "uncompressed_bytes": n_rows * ROW_BYTES}


def child_raw_read(store: str) -> dict:
    """Baseline: decode every chunk of every array, chunk-aligned blocks like the validator's."""
    import zarr

    from ms2core.validation.zarr_dataset import block_rows_for

    root = zarr.open_group(store, mode="r")
    t0 = time.perf_counter()
    total = 0
    for key in ("obs/xyz", "obs/rgb", "obs/state", "actions", "rewards", "success", "terminated", "truncated"):
        arr = root[f"data/{key}"]
        step = block_rows_for(arr, 64 << 20)
        for a in range(0, arr.shape[0], step):
            total += np.asarray(arr[a:a + step]).nbytes
    return {"seconds": time.perf_counter() - t0, "bytes": total}


def child_validate(store: str, workers: int) -> dict:
    from pipelines.validate import run
    from storage_schemas.validation import ValidationConfig

    t0 = time.perf_counter()
    result = run(ValidationConfig(path=store, progress=False, write_report=False, workers=workers))
    report = result.report
    return {"seconds": time.perf_counter() - t0, "bytes": report.bytes_checked, "status": report.status,
            "n_errors": report.n_errors, "n_warnings": report.n_warnings,
            "codes": {c.code: c.count for c in report.counts}}


def in_child(mode: str, store: Path, workers: int) -> dict:
    """Run one measurement in a fresh interpreter; its ru_maxrss is that stage's peak RSS."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.validate_throughput", "--child", mode,
                          "--store", str(store), "--workers", str(workers)],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.1, help="uncompressed size of the synthetic dataset")
    parser.add_argument("--workers", type=int, default=0, help="Dask workers for the validation run")
    parser.add_argument("--keep", action="store_true", help="keep the dataset (printed path)")
    parser.add_argument("--child", choices=["raw", "validate"], help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        res = child_raw_read(args.store) if args.child == "raw" else child_validate(args.store, args.workers)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(json.dumps(res))
        return

    from benchmarks._common import write_result

    work = Path(tempfile.mkdtemp(prefix="ms2flow-validate-bench-"))
    store = work / "bench.zarr"
    try:
        t0 = time.perf_counter()
        info = build(store, args.gb)
        build_s = time.perf_counter() - t0
        on_disk = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        print(f"dataset: {info['uncompressed_bytes'] / 1e9:.2f} GB uncompressed ({on_disk / 1e9:.2f} GB on disk), "
              f"{info['n_rows']} rows, {info['n_episodes']} episodes; built in {build_s:.0f} s")
        raw = in_child("raw", store, 0)
        val = in_child("validate", store, args.workers)
        raw_mb_s = raw["bytes"] / raw["seconds"] / 1e6
        val_mb_s = val["bytes"] / val["seconds"] / 1e6
        ratio = val["seconds"] / raw["seconds"]
        print(f"raw chunk read : {raw_mb_s:8.1f} MB/s  ({raw['seconds']:.1f} s, peak RSS {raw['peak_rss_mb']:.0f} MB)")
        print(f"validation     : {val_mb_s:8.1f} MB/s  ({val['seconds']:.1f} s, peak RSS {val['peak_rss_mb']:.0f} MB, "
              f"workers={args.workers})")
        print(f"validation / raw read time: {ratio:.2f}x; status {val['status']} "
              f"({val['n_errors']} errors, {val['n_warnings']} warnings: {val['codes']})")
        ok = val["peak_rss_mb"] < 2048
        print(f"peak RSS below 2 GB: {'yes' if ok else 'NO'}")
        path = write_result("validate_throughput", {
            "dataset": {**info, "on_disk_bytes": on_disk, "rows_per_episode": EPISODE_STEPS,
                        "row_bytes": ROW_BYTES, "chunk_target_bytes": 4 << 20},
            "raw_read": {**raw, "mb_per_s": raw_mb_s},
            "validation": {**val, "mb_per_s": val_mb_s, "workers": args.workers},
            "validation_over_raw_time": ratio,
            "peak_rss_below_2gb": ok,
            "cpu_count": os.cpu_count(),
        })
        print(f"wrote {path}")
    finally:
        if args.keep:
            print(f"kept {store}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
