"""Random rows of ms2flow's time-major Zarr arrays: stored objects fetched once, chunks decoded in threads.

``read_rows(arrays, rows, cache)`` is what ``DatasetStore.read_rows`` (a random minibatch) and
``DatasetStore.read`` (a range) run. For an array stored the way ``zarr_io.create_time_arrays`` writes
it (chunks along time only, optionally inside shards; transpose? + bytes + Blosc) it does not go through
zarr's per-chunk codec pipeline (3-4x slower on 256-row batches of 2x128x128 RGB-D: 0.67 vs 2.9
batches/s uncached from 2,560 rows):

1. rows -> (array, chunk) -> stored object (a shard, or the chunk itself); each object a batch needs
   is fetched whole once through the array's store (on a ``DatasetStore`` the verifying store, which
   checks its size and crc32 against the inventory first) and its shard index parsed. Verified objects
   stay in the :class:`ReadCache` while it has room; otherwise only their index is kept and later
   reads fetch just the inner chunks' byte ranges (the object was verified whole once, as zarr's own
   reads are).
2. every chunk the batch touches is decoded once (Blosc releases the GIL: chunks are decoded in a
   thread pool, each thread into its own reused buffer) or straight into the cache's slot for it when
   there is room, and its rows are copied into the batch (a transposed array, e.g. channels-first depth,
   one channel at a time); rows of chunks decoded before are gathered from the cache with one
   ``np.take`` per array.

The cache fills once and then stays: minibatch rows are drawn uniformly, so any ``max_bytes`` of
chunks are hit with probability ``max_bytes / dataset bytes``; an LRU gets the same hit rate and pays
an insertion and an eviction per miss on top (it made 10k-row RGB-D reads slower than no cache).

Arrays with another codec chain (foreign stores) fall back to zarr reading the chunk; the result is
the same.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import zarr
from numcodecs import blosc
from zarr.abc.store import RangeByteRequest
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, TransposeCodec
from zarr.core.buffer import default_buffer_prototype

__all__ = ["ReadCache", "read_rows", "layout_of", "ChunkLayout"]

EMPTY = 2**64 - 1  # zarr's shard-index entry of an absent inner chunk
_POOL: ThreadPoolExecutor | None = None


def decode_threads() -> int:
    """Threads that decode chunks: MS2_READ_THREADS, else the CPUs this process may use (at most 8)."""
    if os.environ.get("MS2_READ_THREADS"):
        return max(1, int(os.environ["MS2_READ_THREADS"]))
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(decode_threads(), thread_name_prefix="ms2-decode")
    return _POOL


@dataclass(frozen=True)
class ChunkLayout:
    """How one array's chunks are stored: rows per chunk and per object, transpose, shard index place."""

    path: str
    row_shape: tuple[int, ...]
    dtype: np.dtype
    chunk_rows: int
    object_rows: int  # rows per stored object: a shard's, or chunk_rows when unsharded
    order: tuple[int, ...] | None  # stored chunk = logical chunk.transpose(order)
    index_at_end: bool
    key_encoding: object = field(compare=False)

    @property
    def sharded(self) -> bool:
        return self.object_rows != self.chunk_rows

    @property
    def chunks_per_object(self) -> int:
        return self.object_rows // self.chunk_rows

    @property
    def chunk_nbytes(self) -> int:
        return self.chunk_rows * int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    def object_key(self, obj: int) -> str:
        return f"{self.path}/{self.key_encoding.encode_chunk_key((obj,) + (0,) * len(self.row_shape))}"

    @property
    def stored_shape(self) -> tuple[int, ...]:
        shape = (self.chunk_rows, *self.row_shape)
        return shape if self.order is None else tuple(shape[i] for i in self.order)

    def decode_stored(self, raw, out: np.ndarray | None = None) -> np.ndarray:
        """One chunk's bytes -> its rows in stored order, into ``out`` or this thread's scratch buffer
        (reused: a fresh 0.5 MiB buffer per chunk cost as much in page faults as the decode)."""
        dest = out if out is not None else _scratch(self.stored_shape, self.dtype)
        blosc.decompress(raw, memoryview(dest.reshape(-1).view(np.uint8)))
        return dest


_LOCAL = threading.local()


def _scratch(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread buffer of ``shape``; valid until this thread's next chunk."""
    buffers = _LOCAL.__dict__.setdefault("buffers", {})
    found = buffers.get((shape, dtype))
    if found is None:
        if len(buffers) > 16:
            buffers.clear()
        found = buffers[(shape, dtype)] = np.empty(shape, dtype)
    return found


def _permuted_copy(dest: np.ndarray, src: np.ndarray, axes: tuple[int, ...]) -> None:
    """dest[...] = src.transpose(axes). The transpose ``channels_first_order`` stores (channel axis right
    after time) is undone one channel at a time: numpy's transposed copy walks the 2-element innermost
    axis of (128,128,2) depth element by element, 10x slower than two strided channel copies."""
    channel = axes[-1]
    if tuple(axes) == (*(a for a in range(len(axes)) if a != channel), channel) and src.shape[channel] <= 16:
        lead = (slice(None),) * channel
        for c in range(src.shape[channel]):
            dest[..., c] = src[lead + (c,)]
    else:
        dest[...] = src.transpose(axes)


def _inner_codecs_ok(codecs, dtype: np.dtype) -> tuple[bool, tuple[int, ...] | None]:
    codecs = list(codecs)
    order = None
    if codecs and isinstance(codecs[0], TransposeCodec):
        order = tuple(int(i) for i in codecs.pop(0).order)
    if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], BloscCodec):
        return False, None
    endian = codecs[0].endian
    little = endian is None or getattr(endian, "value", endian) == "little"
    return little and dtype.byteorder in "=|<" and np.little_endian, order


def layout_of(array: zarr.Array) -> ChunkLayout | None:
    """The layout of an array chunked along time only with transpose? + bytes + Blosc (inside a shard
    indexed by bytes + crc32c), or None for anything else (read through zarr instead)."""
    meta = array.metadata
    if getattr(meta, "zarr_format", 3) != 3 or len(array.shape) < 1:
        return None
    dtype = np.dtype(array.dtype)
    codecs = list(meta.codecs)
    rows = int(meta.chunk_grid.chunk_shape[0])
    chunk_rows, index_at_end = rows, True
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        shard = codecs[0]
        index = list(shard.index_codecs)
        if len(index) != 2 or not isinstance(index[0], BytesCodec) or not isinstance(index[1], Crc32cCodec):
            return None
        chunk_rows = int(shard.chunk_shape[0])
        if tuple(shard.chunk_shape[1:]) != tuple(array.shape[1:]) or rows % chunk_rows:
            return None
        index_at_end = getattr(shard.index_location, "value", shard.index_location) == "end"
        codecs = list(shard.codecs)
    if tuple(meta.chunk_grid.chunk_shape[1:]) != tuple(array.shape[1:]):
        return None
    ok, order = _inner_codecs_ok(codecs, dtype)
    if not ok:
        return None
    return ChunkLayout(array.path, tuple(int(s) for s in array.shape[1:]), dtype, chunk_rows, rows, order,
                       index_at_end, meta.chunk_key_encoding)


class _Pool:
    """Decoded chunks of one array: slot per chunk (-1: none), rows in one array for vectorised gathers."""

    def __init__(self, n_chunks: int, capacity: int, chunk_shape: tuple[int, ...], dtype: np.dtype):
        self.slot_of = np.full(n_chunks, -1, np.int64)
        self.rows = np.empty((max(capacity, 0), *chunk_shape), dtype)  # pages are touched only when filled
        self.used = 0


class ReadCache:
    """Verified stored objects and decoded chunks, within ``max_bytes`` together (0: nothing is kept).

    Fills once, then stays (see the module doc): ``hits``/``misses`` count decoded chunks served from
    it or decoded. Only objects that came through the arrays' store are kept, so on a DatasetStore
    every cached byte was checked against the inventory."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = self.misses = 0
        self.objects: dict[str, np.ndarray] = {}  # object key -> its verified bytes
        self.indexes: dict[str, np.ndarray | None] = {}  # object key -> (n, 2) offsets/lengths (None: unsharded)
        self.pools: dict[str, _Pool] = {}
        self.lock = threading.Lock()  # one batch at a time fills it

    def reserve(self, nbytes: int) -> bool:
        if self.nbytes + nbytes > self.max_bytes:
            return False
        self.nbytes += nbytes
        return True

    def pool(self, layout: ChunkLayout, n_rows: int) -> _Pool:
        pool = self.pools.get(layout.path)
        n_chunks = -(-n_rows // layout.chunk_rows)
        if pool is None or len(pool.slot_of) < n_chunks:  # first use, or the store committed more rows
            capacity = min(n_chunks, self.max_bytes // max(1, layout.chunk_nbytes))
            fresh = _Pool(n_chunks, capacity, (layout.chunk_rows, *layout.row_shape), layout.dtype)
            if pool is not None:  # keep what was decoded
                fresh.slot_of[: len(pool.slot_of)] = pool.slot_of
                fresh.rows[: pool.used] = pool.rows[: pool.used]
                fresh.used = pool.used
            self.pools[layout.path] = pool = fresh
        return pool

    def clear(self) -> None:
        with self.lock:
            self.__init__(self.max_bytes)


@dataclass
class _Plan:
    """What one array contributes to a batch: its output, the rows it still has to decode."""

    array: zarr.Array
    layout: ChunkLayout | None
    out: np.ndarray
    local: np.ndarray  # row within its chunk, per batch position
    pool: _Pool | None
    misses: list[tuple[int, np.ndarray]]  # (chunk, batch positions) of the chunks to decode


def _plan(array: zarr.Array, rows: np.ndarray, cache: ReadCache) -> _Plan:
    layout = layout_of(array)
    chunk_rows = layout.chunk_rows if layout else int(array.chunks[0])
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    chunk_of = rows // chunk_rows
    ids, inverse = np.unique(chunk_of, return_inverse=True)
    pool = cache.pool(layout, array.shape[0]) if layout is not None and cache.max_bytes > 0 else None
    plan = _Plan(array, layout, out, rows - chunk_of * chunk_rows, pool, [])
    slots = pool.slot_of[ids] if pool is not None else np.full(len(ids), -1)
    hit = slots >= 0
    if hit.any():  # one gather from the cached chunks, straight into the batch when every row is cached
        flat = pool.rows.reshape(-1, *array.shape[1:])
        at = hit[inverse]
        index = slots[inverse] * chunk_rows + plan.local
        if at.all():
            np.take(flat, index, axis=0, out=out, mode="clip")
        else:
            out[at] = np.take(flat, index[at], axis=0, mode="clip")
    cache.hits += int(hit.sum())
    cache.misses += int((~hit).sum())
    order = np.argsort(inverse, kind="stable")
    positions = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(ids)))[:-1])
    plan.misses = [(c, where) for c, where, h in zip(ids.tolist(), positions, hit) if not h]
    return plan


def _slot(plan: _Plan, cache: ReadCache) -> int:
    """A cache slot for one more decoded chunk of ``plan``'s array, or -1 when the cache is full.
    Taken after the batch's stored objects were cached: those hold ~25x more rows per byte."""
    pool = plan.pool
    if pool is not None and pool.used < len(pool.rows) and cache.reserve(plan.layout.chunk_nbytes):
        pool.used += 1
        return pool.used - 1
    return -1


def _parse_index(raw: np.ndarray, layout: ChunkLayout) -> np.ndarray:
    size = layout.chunks_per_object * 16
    if len(raw) < size + 4:
        raise ValueError(f"shard of {layout.path} has {len(raw)} bytes, less than its index ({size + 4})")
    index = raw[len(raw) - size - 4: len(raw) - 4] if layout.index_at_end else raw[:size]
    return np.frombuffer(index.tobytes(), "<u8").reshape(layout.chunks_per_object, 2)


def _chunk_bytes(layout: ChunkLayout, key: str, chunk: int, index: np.ndarray | None, raw: np.ndarray) -> np.ndarray:
    """The stored bytes of one chunk out of its object's bytes (a shard: by the index)."""
    if index is None:
        return raw
    offset, nbytes = (int(v) for v in index[chunk % layout.chunks_per_object])
    if offset == EMPTY:
        raise ValueError(f"chunk {chunk} of {layout.path} is absent from shard {key}")
    if offset + nbytes > len(raw):
        raise ValueError(f"chunk {chunk} of {layout.path} lies past the end of shard {key}")
    return raw[offset: offset + nbytes]


async def _get_all(requests: list[tuple[zarr.Array, str, tuple[int, int] | None]]) -> list:
    prototype = default_buffer_prototype()

    async def one(array, key, span):
        byte_range = None if span is None else RangeByteRequest(*span)
        found = await array.store.get(key, prototype, byte_range)
        if found is None:
            raise ValueError(f"stored object {key} is missing")
        return found.as_numpy_array()

    return await asyncio.gather(*(one(*r) for r in requests))


def _requests(plans: list[_Plan], cache: ReadCache) -> tuple[dict, list, list]:
    """What the missing chunks need: objects to fetch whole (first touch, or cached already), inner-chunk
    byte ranges of verified shards the cache has no room for, and chunks zarr must read (foreign codecs)."""
    whole, ranges, fallback = {}, [], []
    for plan in plans:
        for c, where in plan.misses:
            if plan.layout is None:
                fallback.append((plan, c, where))
                continue
            key = plan.layout.object_key(c // plan.layout.chunks_per_object)
            index = cache.indexes.get(key)
            if key in cache.objects or key in whole or index is None:
                whole.setdefault(key, plan.array)
            else:
                offset, nbytes = (int(v) for v in index[c % plan.layout.chunks_per_object])
                if offset == EMPTY:
                    raise ValueError(f"chunk {c} of {plan.layout.path} is absent from shard {key}")
                ranges.append((plan, c, where, key, (offset, offset + nbytes)))
    return whole, ranges, fallback


def _fetch(plans: list[_Plan], cache: ReadCache) -> list[tuple[_Plan, int, np.ndarray, int, object]]:
    """(plan, chunk, its stored bytes or zarr's decoded rows, slot, positions) for every chunk to decode;
    every store read of the batch in one event-loop call."""
    from zarr.core.sync import sync

    whole, ranges, fallback = _requests(plans, cache)
    wanted = [(arr, key, None) for key, arr in whole.items() if key not in cache.objects]
    wanted += [(plan.array, key, span) for plan, _, _, key, span in ranges]

    async def everything():
        stored = _get_all(wanted)
        decoded = asyncio.gather(*(p.array.async_array.getitem(
            slice(c * int(p.array.chunks[0]), min((c + 1) * int(p.array.chunks[0]), p.array.shape[0])))
            for p, c, _ in fallback))
        return await asyncio.gather(stored, decoded)

    stored, decoded = sync(everything()) if wanted or fallback else ([], [])
    objects = dict(cache.objects)
    for (arr, key, span), raw in zip(wanted, stored):
        if span is not None:
            continue
        objects[key] = raw
        layout = next(p.layout for p in plans if p.array is arr)
        if layout.sharded and key not in cache.indexes:
            cache.indexes[key] = _parse_index(raw, layout)
        if key not in cache.objects and cache.reserve(raw.nbytes):
            cache.objects[key] = raw
    tasks = []
    range_bytes = iter(stored[len(wanted) - len(ranges):])
    for plan, c, where, _, _ in ranges:
        tasks.append((plan, c, next(range_bytes), _slot(plan, cache), where))
    for plan in plans:
        if plan.layout is None:
            continue
        for c, where in plan.misses:
            key = plan.layout.object_key(c // plan.layout.chunks_per_object)
            if key in objects:
                index = cache.indexes.get(key) if plan.layout.sharded else None
                tasks.append((plan, c, _chunk_bytes(plan.layout, key, c, index, objects[key]), _slot(plan, cache),
                              where))
    tasks += [(p, c, np.asarray(block), -1, where) for (p, c, where), block in zip(fallback, decoded)]
    return tasks


def _decode_task(task) -> None:
    """Decode one chunk and put its rows where the batch wants them: from the cache slot it fills, or
    straight from the decoded bytes (permuting only the rows taken)."""
    plan, c, raw, slot, where = task
    out, local, layout = plan.out, plan.local, plan.layout
    if layout is None:  # zarr decoded it
        block, axes = raw, None
    elif slot >= 0:
        block, axes = plan.pool.rows[slot], None
        if layout.order is None:
            layout.decode_stored(raw, block)
        else:
            _permuted_copy(block, layout.decode_stored(raw), tuple(int(a) for a in np.argsort(layout.order)))
    else:
        block = layout.decode_stored(raw)
        axes = None if layout.order is None else tuple(int(a) - 1 for a in np.argsort(layout.order)[1:])
    if len(where) == 1:  # the common case of a random batch
        w, p = int(where[0]), int(local[where[0]])
        if axes is None:
            out[w] = block[p]
        else:
            _permuted_copy(out[w], block[p], axes)
        return
    first, picked = int(where[0]), local[where]
    if int(where[-1]) - first == len(where) - 1 and np.all(np.diff(picked) == 1):
        parts = [(slice(first, first + len(where)), slice(int(picked[0]), int(picked[0]) + len(where)))]
    elif axes is None:
        out[where] = block[picked]
        return
    else:
        parts = [(int(w), int(p)) for w, p in zip(where, picked)]
    for dest, src in parts:
        if axes is None:
            out[dest] = block[src]
        elif isinstance(src, slice):
            _permuted_copy(out[dest], block[src], (0, *(a + 1 for a in axes)))
        else:
            _permuted_copy(out[dest], block[src], axes)


def _run(tasks: list) -> None:
    threads = decode_threads()
    if threads == 1 or len(tasks) < 2:
        for task in tasks:
            _decode_task(task)
        return
    tasks = sorted(tasks, key=lambda t: -len(t[2]) if t[0].layout is not None else 0)
    groups = [tasks[i::min(len(tasks), 4 * threads)] for i in range(min(len(tasks), 4 * threads))]
    list(_pool().map(lambda group: [_decode_task(t) for t in group], groups))


def read_rows(arrays: Mapping[str, zarr.Array], rows: np.ndarray, cache: ReadCache | None = None
              ) -> dict[str, np.ndarray]:
    """The given rows (any order, repeats allowed) of several time-major arrays, through ``cache``
    (None: nothing is kept). See the module doc."""
    rows = np.asarray(rows, np.int64)
    cache = cache if cache is not None else ReadCache(0)
    with cache.lock:
        return _read_rows(arrays, rows, cache)


def _read_rows(arrays: Mapping[str, zarr.Array], rows: np.ndarray, cache: ReadCache) -> dict[str, np.ndarray]:
    before = (cache.nbytes, dict(cache.objects), {k: p.used for k, p in cache.pools.items()})
    try:
        plans = {key: _plan(array, rows, cache) for key, array in arrays.items()}
        tasks = _fetch(list(plans.values()), cache) if rows.size else []
        _run(tasks)
    except BaseException:  # nothing of a failed read stays: slots, reserved bytes, objects
        cache.nbytes, cache.objects = before[0], before[1]
        for key, pool in cache.pools.items():
            pool.used = before[2].get(key, 0)
        raise
    for plan, c, _, slot, _ in tasks:  # decoded without error: their slots now hold them
        if slot >= 0:
            plan.pool.slot_of[c] = slot
    return {key: plan.out for key, plan in plans.items()}
