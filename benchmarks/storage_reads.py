"""Bytes/frame and random-minibatch reads: ms2flow's Zarr store vs ManiSkill2-Learn's HDF5, same frames, one run.

Inputs are two renders of the same demos per mode (``ms2 render``): the ms2flow layout (what ms2flow
trains on) and the ml2l layout (``obs_layout: ml2l``, ML2L's own observation arrays, which the baseline
file holds, written as ML2L writes it: benchmarks/ml2l_h5.py). A *small* set is the renders as they
are; a *large* set repeats their episodes ``--tile`` times (10k+ frames). The ms2flow side is written by
``write_dataset`` with today's render storage defaults (chunk size, Blosc level, float16 depth) and the
chunking the render chooses for that many rows, so older renders can be the input.

Readers, each pair on the same random 256-transition indices, every array of the dataset:

* random (uniform over the whole dataset): ``DatasetStore.read_rows`` (verified objects, chunks decoded in
  threads, its cache at ``--cache-mb``, and with the cache off) vs h5py reads from ML2L's file, in four
  variants, each measured in its own pass interleaved batch by batch with ours (so both see the same
  machine load): one read per row or one slice per h5py chunk row-block, each with h5py's default chunk
  caches (1 MiB per dataset) and with ``--cache-mb`` in all (ml2l_h5.H5RandomReader). The ratio is
  taken against the fastest variant (the most conservative one). h5py's fancy indexing
  (``dataset[list_of_rows]``, what this benchmark used before) is not among them: on these chunk shapes
  it costs ~20x a slice of the whole trajectory, which no ML2L user would put up with. Every reader
  reads ``--warm`` batches before it is timed (h5py loads each trajectory's chunk index on first touch,
  ms2flow verifies each object once).
* dynamic: ``DemoDataset(mode="dynamic")`` with a cache of ``--cache-fraction`` of the data vs ML2L's
  ``ReplayMemory(dynamic_loading=True)`` with that fraction as capacity (obs + actions vs every key);
* ram: ``DemoDataset(mode="ram")`` vs ML2L's ``ReplayMemory`` loading the whole file (load time apart).

    python -m benchmarks.storage_reads --mode rgbd --ms2 A.zarr --ml2l B.zarr [--tile 16] [--batches 40]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import ml2l_h5
from benchmarks._common import write_result
from ms2core.data.store import DatasetStore, write_dataset
from storage_schemas.dataset import RenderOptions

BATCH = 256


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def episodes_of(store: DatasetStore) -> list[dict[str, np.ndarray]]:
    data = {key: store.read(key) for key in store.arrays}
    return [{k: v[slice(*store.episode_bounds(i))] for k, v in data.items()} for i in range(store.n_episodes)]


STORAGE_OPTIONS = ("chunk_target_bytes", "image_chunk_target_bytes", "compression_level", "depth_dtype")


def ms2_store(src: DatasetStore, out: Path, tile: int) -> Path:
    """The source's episodes ``tile`` times, stored as today's render stores that many rows: its storage
    options (chunk size, level, depth dtype) at today's defaults, chunked by ``array_spec_for``."""
    eps = episodes_of(src) * tile
    columns = {k: np.concatenate([e[k] for e in eps]) for k in eps[0]}
    manifest = src.manifest.model_copy(deep=True)
    defaults = RenderOptions()
    manifest.options = manifest.options.model_copy(update={k: getattr(defaults, k) for k in STORAGE_OPTIONS})
    if "obs/depth" in columns:
        columns["obs/depth"] = columns["obs/depth"].astype(defaults.depth_dtype)
    manifest.arrays = {}
    manifest.episodes = [e.model_copy(update={"episode_id": i}) for i, e in enumerate(manifest.episodes * tile)]
    write_dataset(str(out), manifest, columns, [len(e["actions"]) for e in eps])
    return out


def rate(fn, n: int, warm: int = 2) -> float:
    for i in range(warm):
        fn(i)
    start = time.perf_counter()
    for i in range(n):
        fn(warm + i)
    return n / (time.perf_counter() - start)


def interleaved(readers: dict, n: int, warm: int) -> dict[str, float]:
    """Batches/s of each reader, batch i of every reader read before batch i + 1 of any."""
    for i in range(warm):
        for read in readers.values():
            read(i)
    spent = dict.fromkeys(readers, 0.0)
    for i in range(warm, warm + n):
        for name, read in readers.items():
            start = time.perf_counter()
            read(i)
            spent[name] += time.perf_counter() - start
    return {name: n / t for name, t in spent.items()}


H5_VARIANTS = {"rows": ("rows", None), "rows_cache": ("rows", True), "blocks": ("blocks", None),
               "blocks_cache": ("blocks", True)}


def random_reads(ms2_path: Path, h5_path: Path, draws: list, batches: int, warm: int, cache_bytes: int) -> dict:
    """One pass per h5py variant, each interleaved with ms2flow's reader (cache on and off)."""
    out = {"passes": {}}
    for variant, (how, cached) in H5_VARIANTS.items():
        store, bare = DatasetStore.open(ms2_path), DatasetStore.open(ms2_path)
        store.set_cache_bytes(cache_bytes)
        bare.set_cache_bytes(0)
        keys = list(store.arrays)
        h5 = ml2l_h5.H5RandomReader(h5_path, cache_bytes if cached else None)
        try:
            got = interleaved({"ms2": lambda i: store.read_rows(keys, draws[i]),
                               "ms2_nocache": lambda i: bare.read_rows(keys, draws[i]),
                               "ml2l": lambda i: h5.read(draws[i], how)}, batches, warm)
        finally:
            h5.close()
        got["ratio"] = got["ms2"] / got["ml2l"]
        out["passes"][variant] = got
    worst = min(out["passes"], key=lambda v: out["passes"][v]["ratio"])
    best = out["passes"][worst]
    out.update(ml2l_random_variant=worst, ms2_random_per_s=best["ms2"], ml2l_random_per_s=best["ml2l"],
               ms2_random_nocache_per_s=best["ms2_nocache"], random_ratio=best["ratio"])
    return out


def measure(ms2_path: Path, h5_path: Path, batches: int, cache_fraction: float, warm: int, cache_bytes: int) -> dict:
    from ms2core.data.demo_dataset import DemoDataset

    store = DatasetStore.open(ms2_path)
    n = store.n_rows
    rng = np.random.default_rng(0)
    draws = [rng.choice(n, BATCH, replace=False) for _ in range(batches + warm)]
    row = dict(rows=n, ms2_bytes_per_frame=tree_bytes(ms2_path) / n, ml2l_bytes_per_frame=h5_path.stat().st_size / n)
    row["size_ratio"] = row["ms2_bytes_per_frame"] / row["ml2l_bytes_per_frame"]
    row.update(random_reads(ms2_path, h5_path, draws, batches, warm, cache_bytes))
    row_bytes = sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize for a in store.arrays.values())
    # the same number of rows in memory on both sides, at least 4 batches (ML2L needs capacity >= batch)
    capacity = min(n, max(4 * BATCH, int(cache_fraction * n)))
    dyn = DemoDataset([ms2_path], mode="dynamic", cache_bytes=capacity * row_bytes, block_rows=BATCH)
    row["ms2_dynamic_per_s"] = rate(lambda i: dyn.sample(i, BATCH, 0), batches)
    row["dynamic_capacity_rows"] = capacity
    loader = ml2l_h5.DynamicLoader(h5_path, capacity=capacity)
    row["ml2l_dynamic_per_s"] = rate(lambda i: loader.sample(BATCH), batches)
    loader.close()
    start = time.perf_counter()
    ram = DemoDataset([ms2_path], mode="ram")
    row["ms2_ram_load_s"] = time.perf_counter() - start
    row["ms2_ram_per_s"] = rate(lambda i: ram.sample(i, BATCH, 0), batches)
    start = time.perf_counter()
    memory = ml2l_h5.load_in_memory(h5_path)
    row["ml2l_ram_load_s"] = time.perf_counter() - start
    row["ml2l_ram_per_s"] = rate(lambda i: ml2l_h5.take(memory, draws[i]), batches)
    for kind in ("dynamic", "ram"):
        row[f"{kind}_ratio"] = row[f"ms2_{kind}_per_s"] / row[f"ml2l_{kind}_per_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", required=True, help="label of the pair (pointcloud, rgbd)")
    parser.add_argument("--ms2", required=True, help="store rendered in the ms2flow layout")
    parser.add_argument("--ml2l", required=True, help="store of the same demos rendered with obs_layout ml2l")
    parser.add_argument("--tile", type=int, default=16, help="repeats of the episodes in the large set")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warm", type=int, default=4, help="batches each reader reads before it is timed")
    parser.add_argument("--cache-mb", type=float, default=256,
                        help="ms2flow's read cache, and h5py's chunk caches in all in the cached variants")
    parser.add_argument("--cache-fraction", type=float, default=0.25)
    parser.add_argument("--result", default=None, help="results/<name>.json (default storage_reads_<mode>)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ms2-storage-bench-"))
    try:
        src, ml2l_src = DatasetStore.open(args.ms2), DatasetStore.open(args.ml2l)
        results = {}
        for name, tile in (("small", 1), ("large", args.tile)):
            ms2_path = ms2_store(src, work / f"{name}.zarr", tile)
            h5_path = ml2l_h5.write_ml2l_h5(work / f"{name}.h5", episodes_of(ml2l_src) * tile)
            row = results[name] = measure(ms2_path, h5_path, args.batches, args.cache_fraction, args.warm,
                                          int(args.cache_mb * 2**20))
            print(f"{args.mode:10s} {name:5s} {row['rows']:6d} frames: bytes/frame ms2flow "
                  f"{row['ms2_bytes_per_frame']:8.0f} vs ML2L {row['ml2l_bytes_per_frame']:8.0f} = "
                  f"{row['size_ratio']:.2f}x (target <= 0.7x)", flush=True)
            for kind in ("random", "dynamic", "ram"):
                target = " (target >= 2x)" if kind == "random" else ""
                print(f"{'':17s}{kind:8s} batches/s ms2flow {row[f'ms2_{kind}_per_s']:8.1f} vs ML2L "
                      f"{row[f'ml2l_{kind}_per_s']:8.1f} = {row[f'{kind}_ratio']:.2f}x{target}", flush=True)
            print(f"{'':17s}random vs each h5py variant: " + ", ".join(
                f"{v} {p['ms2']:.1f} vs {p['ml2l']:.1f}" for v, p in row["passes"].items()), flush=True)
            print(f"{'':17s}random, ms2flow cache off: {row['ms2_random_nocache_per_s']:.1f}/s; "
                  f"ram load s: ms2flow {row['ms2_ram_load_s']:.2f}, ML2L {row['ml2l_ram_load_s']:.2f}", flush=True)
        path = write_result(args.result or f"storage_reads_{args.mode}",
                            dict(mode=args.mode, batch=BATCH, tile=args.tile, cache_fraction=args.cache_fraction,
                                 cache_mb=args.cache_mb, warm=args.warm, batches=args.batches,
                                 ms2_layout_store=str(args.ms2), results=results))
        print(f"wrote {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
