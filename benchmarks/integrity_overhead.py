"""Cost of chunk verification on random minibatch reads: DatasetStore with its inventory checks vs the same
store read without them, measured in the same run on the same random rows (batches interleaved).

A fake-env point-cloud dataset is rendered by pipelines.render (the real writer, so the inventory is the
real one), then ``--batches`` random minibatches of ``--batch-size`` rows are read with
``DatasetStore.read_rows`` over every array, once through the verifying store and once through the plain
one, alternating batch by batch, for a store of plain chunks and for the same store sharded.
Verification is a crc32 over each whole chunk object as it is read (unsharded arrays) or once per
shard per opened store (sharded arrays, whose inner chunks are read by byte range).

    python benchmarks/integrity_overhead.py [--episodes 60] [--batches 200]

Writes benchmarks/results/integrity_overhead.json; prints the ratio verified / plain read time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from benchmarks._common import write_result
from ms2core.data.store import DatasetStore
from pipelines import render
from storage_schemas.dataset import RenderConfig
from tests.demo_fixtures import fake_demo_pair


def unverified(store: DatasetStore) -> DatasetStore:
    """The same store read through the plain zarr store (what every reader did before inventories)."""
    raw = zarr.open_group(store.root.store._store, mode="r")
    return DatasetStore(store.url, raw, store.manifest, store.episode_ends, verified=False)


def measure(work: Path, demo: Path, args, shard_min_chunks: int) -> dict:
    """Render one store (sharded when shard_min_chunks is small) and time interleaved verified/plain reads."""
    cfg = RenderConfig.model_validate(dict(
        source=str(demo), store=str(work / f"pc-{shard_min_chunks}.zarr"), workers=0, progress=False,
        episodes_per_range=8, options=dict(backend="fake", shard_min_chunks=shard_min_chunks,
                                           obs=dict(obs_mode="pointcloud", n_points=args.n_points))))
    render.run(cfg)
    verified = DatasetStore.open(cfg.store)
    plain = unverified(verified)
    keys = list(verified.arrays)
    rng = np.random.default_rng(args.seed)
    seconds = {"verified": 0.0, "plain": 0.0}
    for k in range(args.batches):
        rows = rng.integers(0, verified.n_rows, args.batch_size)
        order = [("verified", verified), ("plain", plain)]
        batches = {}
        for name, store in order if k % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            batches[name] = store.read_rows(keys, rows)
            seconds[name] += time.perf_counter() - start
        assert all(np.array_equal(batches["verified"][key], batches["plain"][key]) for key in keys)
    return {
        "rows": int(verified.n_rows), "shard_min_chunks": shard_min_chunks,
        "inventoried_objects": sum(len(v) for v in verified.manifest.inventory.values()),
        "sharded_arrays": sorted(key for key, arr in verified.arrays.items() if arr.shards is not None),
        "verified_batches_per_s": args.batches / seconds["verified"],
        "plain_batches_per_s": args.batches / seconds["plain"],
        "ratio_verified_over_plain_time": seconds["verified"] / seconds["plain"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--n-points", type=int, default=1200)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    cases = {}
    with tempfile.TemporaryDirectory(prefix="integrity-bench-") as tmp:
        work = Path(tmp)
        demo = fake_demo_pair(work / "demos" / "pick.h5", n_episodes=args.episodes, steps=(30, 60))
        for name, shard_min_chunks in (("chunks", 64), ("shards", 2)):
            cases[name] = measure(work, demo, args, shard_min_chunks)
            c = cases[name]
            print(f"{name}: {c['rows']} rows, {c['inventoried_objects']} stored objects, sharded {c['sharded_arrays']}; "
                  f"random minibatches of {args.batch_size}: verified {c['verified_batches_per_s']:.1f}/s, plain "
                  f"{c['plain_batches_per_s']:.1f}/s, read time verified/plain = "
                  f"{c['ratio_verified_over_plain_time']:.3f}x", flush=True)
    payload = {"episodes": args.episodes, "n_points": args.n_points, "batches": args.batches,
               "batch_size": args.batch_size, "cases": cases,
               "ratio_verified_over_plain_time": cases["chunks"]["ratio_verified_over_plain_time"]}
    print(f"-> {write_result('integrity_overhead', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
