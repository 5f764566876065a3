"""Low-level layout of ms2flow Zarr v3 datasets: open/create stores (local or fsspec/S3), chunk and
shard sizing from a byte target, time-major arrays, appending committed rows, episode_ends and
the manifest in the root attributes.

On-disk tree of a dataset (``pipelines.render`` writes it, everything else reads it)::

    <store>/                        root group; attrs["ms2flow"] = DatasetManifest
      data/obs/<key>                (T_total, ...) time-major, e.g. obs/xyz, obs/rgb, obs/state
      data/actions                  (T_total, A) float32
      data/rewards                  (T_total,)   float32  env.step(a_t)'s reward from the recorded state s_t
      data/success                  (T_total,)   bool     info["success"] after that step
      data/terminated               (T_total,)   bool     env.step's terminated there (no bootstrap)
      data/truncated                (T_total,)   bool     last step of an episode not terminated there
                                                          (stores rendered before render version 2 hold
                                                          data/dones instead: readers refuse them)
      meta/episode_ends             (E,) int64 cumulative transition counts
      ranges/<e000012-n4>/          staging of one episode range while a render runs
        data/...                    same keys, only this range's rows (its own chunks)
        attrs: {"complete": true, "episode_lengths": [...], "episode_success": [...]}

Every array is compressed with Blosc zstd + byte shuffle (float image and point arrays, i.e. depth
and xyz, stored channels-first through zarr's transpose codec, which compresses depth ~3x better;
uint8 rgb interleaved as rendered; observation arrays as one Blosc block per chunk) and chunked along time only:
``chunk_rows = target_bytes // row_bytes`` (64 KiB-8 MiB per chunk, 512 KiB by default, 384 KiB for
images: a random row decodes its whole chunk). An array
whose chunk count would exceed ``shard_min_chunks`` is sharded (16 chunks per
shard), so object counts stay small on object stores.

Commit order (pipelines.render): rows are appended to ``data/*``, then
``meta/episode_ends`` is rewritten, then the manifest (one atomic write of the
root zarr.json) records ``n_committed_episodes``: that write is the commit.
The manifest also carries the chunk inventory (every stored object of data/* and meta/* with its
size and crc32, ms2core.data.integrity). Writers go through ``ms2core.data.store.DatasetWriter``,
readers through ``ms2core.data.store.DatasetStore``, which uses :func:`read_episode_ends` (cut to
the committed count) and checks every chunk against the inventory; rows past the last committed
episode may hold a half-appended range and are overwritten when the render resumes.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, TransposeCodec

from ms2core.errors import DatasetError
from storage_schemas.dataset import EPISODE_ENDS, MANIFEST_ATTR, ArraySpec, DatasetManifest

CHUNKS_PER_SHARD = 16
EPISODE_ENDS_CHUNK = 1 << 16

__all__ = [
    "is_remote", "open_store", "store_exists", "read_manifest", "write_manifest", "array_spec_for",
    "create_time_arrays", "append_rows", "write_rows", "set_episode_ends", "read_episode_ends",
    "delete_path", "list_arrays", "read_rows", "open_dataset", "blosc_zstd", "storage_error", "EPISODE_ENDS",
]


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def open_store(url: str, storage_options: Mapping[str, Any] | None = None, read_only: bool = False):
    """A zarr store for a local directory or an fsspec URL (s3://bucket/key with endpoint_url...)."""
    url = str(url)
    if is_remote(url):
        # fsspec keeps one filesystem per thread with a cache of directory listings; a store is written by
        # other processes (a render's workers and commits), so a cached listing would hide the arrays and
        # ranges written since: zarr lists groups through the object store itself.
        options = {"use_listings_cache": False, **(storage_options or {})}
        try:
            return zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=read_only)
        except (ImportError, ValueError) as exc:
            raise DatasetError(f"cannot open store {url}: {exc}",
                               hint="remote stores need the fsspec backend installed, e.g. s3fs for s3://") from exc
    path = Path(url.removeprefix("file://"))
    return zarr.storage.LocalStore(path, read_only=read_only)


def storage_error(exc: OSError, url: str, doing: str) -> DatasetError:
    """A DatasetError saying what failed (disk full, permission, not a directory) and what to do."""
    hints = {
        errno.ENOSPC: "the disk is full: free space or choose another output_dir; finished ranges are kept and "
                      "a rerun resumes from them",
        errno.EACCES: "the path is not writable: choose another output_dir or fix its permissions",
        errno.EROFS: "the file system is read-only: choose another output_dir",
        errno.ENOTDIR: "a parent of the store path is a file, not a directory",
        errno.EDQUOT: "the disk quota is exceeded; finished ranges are kept and a rerun resumes from them",
    }
    name = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return DatasetError(f"cannot {doing} {url}: {name} ({exc})",
                        hint=hints.get(exc.errno, "check the store path and its storage"))


def store_exists(store) -> bool:
    from zarr.core.sync import sync

    return bool(sync(store.exists("zarr.json")))


def read_manifest(root: zarr.Group) -> DatasetManifest | None:
    raw = root.attrs.get(MANIFEST_ATTR)
    return None if raw is None else DatasetManifest.model_validate(raw)


def manifest_attributes(manifest: DatasetManifest) -> dict:
    """The root group's attributes that hold ``manifest``."""
    return {MANIFEST_ATTR: manifest.model_dump(mode="json")}


def write_manifest(root: zarr.Group, manifest: DatasetManifest) -> None:
    """One write of the root zarr.json (atomic on local disk: zarr renames; one PUT on S3)."""
    root.attrs.put(manifest_attributes(manifest))


def blosc_zstd(level: int, block_bytes: int = 0) -> BloscCodec:
    """Blosc zstd + byte shuffle. ``block_bytes`` 0 keeps Blosc's automatic blocks: a whole-chunk
    block compresses ~7% better but decodes on one thread, which made minibatch reads ~1.5x slower."""
    return BloscCodec(cname="zstd", clevel=level, shuffle="shuffle", blocksize=block_bytes)


def round_mantissa(values: np.ndarray, keep_bits: int) -> np.ndarray:
    """float32 values with all but ``keep_bits`` mantissa bits rounded away (round to nearest, ties to
    even; numcodecs' BitRound, as xbitinfo uses for climate data). The zeroed low bits then compress to
    almost nothing; the array stays float32, so any zarr reader sees plain values."""
    from numcodecs import BitRound

    if values.dtype != np.float32:
        raise TypeError(f"round_mantissa needs float32 values, got {values.dtype}")
    rounded = BitRound(keepbits=keep_bits).encode(np.ascontiguousarray(values))
    return np.asarray(rounded).view(np.float32).reshape(values.shape)


def channels_first_order(row_shape: tuple[int, ...], dtype="float32") -> tuple[int, ...] | None:
    """Storage order that puts the last (channel/camera/xyz) axis right after time, for float arrays.

    Float (T,H,W,C) images (depth) are stored (T,C,H,W) and float (T,N,3) points (T,3,N): each camera
    plane / coordinate becomes contiguous, so neighbouring values resemble each other and Blosc's
    byte shuffle groups their exponents (float16 depth of two 128x128 cameras: 3.4 kB/frame instead
    of 11 kB). Readers see the logical (T,H,W,C) layout; this is zarr v3's transpose codec.
    uint8 rgb stays interleaved: it compresses better so (2.6 vs 3.2 kB/frame for two cameras, 5-frame
    chunks) and a random row needs no transposed copy.
    """
    if len(row_shape) < 2 or row_shape[-1] > 16 or np.dtype(dtype).kind != "f":
        return None  # uint8 rgb (images and points) / bool seg compress better interleaved
    n = len(row_shape) + 1
    return (0, n - 1, *range(1, n - 1))


def whole_chunk_block(row_shape) -> bool:
    """Observation arrays (rows of >= 2 axes: images, point clouds) are compressed as one Blosc block per
    chunk: on two 128x128 cameras that stores rgb in 0.72x and float16 depth in 0.8x of the bytes of
    Blosc's automatic blocks (zstd sees the whole chunk), and the chunk cache hides the single-threaded
    decode."""
    return len(tuple(row_shape)) >= 2


def array_spec_for(row_shape: tuple[int, ...], dtype, target_bytes: int, total_rows: int,
                   shard_min_chunks: int, level: int, image_target_bytes: int | None = None) -> ArraySpec:
    """Chunk rows from the byte target (``image_target_bytes`` for rows of three axes, when given);
    shards once the chunk count would exceed shard_min_chunks."""
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    if image_target_bytes and len(tuple(row_shape)) == 3:
        target_bytes = image_target_bytes
    chunk_rows = max(1, target_bytes // row_bytes)
    n_chunks = math.ceil(max(total_rows, 1) / chunk_rows)
    shard_rows = chunk_rows * CHUNKS_PER_SHARD if n_chunks > shard_min_chunks else None
    order = channels_first_order(tuple(row_shape), dtype)
    block = ", one block per chunk" if whole_chunk_block(row_shape) else ""
    codec = (f"transpose{list(order)} + " if order else "") + f"blosc(zstd, clevel={level}, shuffle{block})"
    return ArraySpec(row_shape=list(row_shape), dtype=np.dtype(dtype).name, chunk_rows=chunk_rows,
                     shard_rows=shard_rows, codec=codec)


def create_time_arrays(group: zarr.Group, specs: Mapping[str, ArraySpec], level: int,
                       use_shards: bool = True) -> None:
    """Empty (0, ...) arrays under ``group`` at each key of ``specs`` (nested keys as paths)."""
    for key, spec in specs.items():
        shards = None
        if use_shards and spec.shard_rows:
            shards = (spec.shard_rows, *spec.row_shape)
        order = channels_first_order(tuple(spec.row_shape), spec.dtype)
        chunk_bytes = spec.chunk_rows * int(np.prod(spec.row_shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
        block = min(int(chunk_bytes), 1 << 30) if whole_chunk_block(spec.row_shape) else 0
        group.create_array(
            key, shape=(0, *spec.row_shape), dtype=spec.dtype,
            chunks=(spec.chunk_rows, *spec.row_shape), shards=shards,
            filters=[TransposeCodec(order=order)] if order else None,
            compressors=blosc_zstd(level, block), fill_value=0, overwrite=True,
        )


def list_arrays(group: zarr.Group, prefix: str = "") -> dict[str, zarr.Array]:
    """Every array below ``group`` keyed by its path relative to it (e.g. 'obs/xyz')."""
    out = {}
    for name, member in group.members():
        path = f"{prefix}{name}"
        if isinstance(member, zarr.Array):
            out[path] = member
        else:
            out.update(list_arrays(member, f"{path}/"))
    return dict(sorted(out.items()))


def write_rows(array: zarr.Array, start_row: int, values: np.ndarray) -> None:
    """Grow ``array`` to hold rows [start_row, start_row+len) and write them (idempotent)."""
    end = start_row + len(values)
    if array.shape[0] != end:
        array.resize((end, *array.shape[1:]))
    if len(values):
        array[start_row:end] = values


def append_rows(group: zarr.Group, start_row: int, rows: Mapping[str, np.ndarray]) -> None:
    for key, values in rows.items():
        write_rows(group[key], start_row, values)


def set_episode_ends(root: zarr.Group, ends: np.ndarray) -> None:
    ends = np.asarray(ends, np.int64)
    if EPISODE_ENDS not in root:
        root.create_array(EPISODE_ENDS, shape=(0,), dtype="int64", chunks=(EPISODE_ENDS_CHUNK,),
                          compressors=blosc_zstd(3), fill_value=0)
    write_rows(root[EPISODE_ENDS], 0, ends)


def read_episode_ends(root: zarr.Group, manifest: DatasetManifest | Mapping | None = None) -> np.ndarray:
    """Committed episode ends: meta/episode_ends cut to what the manifest says is committed.

    The one reader of meta/episode_ends (``DatasetStore`` and validation call it). ``manifest`` may be
    the typed manifest, its raw dict (validation reads stores whose manifest does not parse), or None
    to read it from ``root``. Integer dtypes other than int64 are converted; others raise TypeError.
    """
    if EPISODE_ENDS not in root:
        return np.zeros(0, np.int64)
    ends = np.asarray(root[EPISODE_ENDS][:])
    if ends.dtype != np.int64:
        if not np.issubdtype(ends.dtype, np.integer):
            raise TypeError(f"{EPISODE_ENDS} has dtype {ends.dtype}, expected int64")
        ends = ends.astype(np.int64)
    if manifest is None:
        manifest = read_manifest(root)
    committed = manifest.get("n_committed_episodes") if isinstance(manifest, Mapping) else (
        manifest.n_committed_episodes if manifest is not None else None)
    if isinstance(committed, int):
        ends = ends[:committed]
    return ends


def read_rows(arrays: Mapping[str, zarr.Array], rows: np.ndarray, cache=None) -> dict[str, np.ndarray]:
    """The given rows (any order, repeats allowed) of several time-major arrays: a random minibatch
    (``ms2core.data.row_reader``, which ``DatasetStore`` reads through; ``cache`` a ``ReadCache``)."""
    from ms2core.data.row_reader import read_rows as read

    return read(arrays, rows, cache)


def delete_path(group: zarr.Group, path: str) -> None:
    if path in group:
        del group[path]


def open_dataset(url: str, storage_options: Mapping[str, Any] | None = None) -> zarr.Group:
    """The root group of a dataset opened by :class:`ms2core.data.store.DatasetStore` (chunks verified
    against the inventory when the store has one). New code should use DatasetStore itself."""
    from ms2core.data.store import DatasetStore

    return DatasetStore.open(url, storage_options, allow_unverified=True).root
