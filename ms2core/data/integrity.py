"""Chunk integrity of ms2flow datasets: the writer's record of every stored object and the reader's check.

Zarr reads a missing chunk as the array's fill value, so a deleted ``data/actions`` chunk used to read
back as zeros. Every commit therefore records, for each committed array, every chunk (or shard) object
it stored with its size and crc32, in the manifest (``DatasetManifest.inventory``), which is written in
the same atomic write that commits the rows::

    inventory = {"data/actions": {"c/0/0": {"nbytes": 5123, "crc32": 3735928559}, ...},
                 "meta/episode_ends": {"c/0": {...}}, ...}

* :class:`RecordingStore` wraps the writer's zarr store and notes every object set, deleted, or removed
  with a directory; :func:`fold_into` applies those notes to the inventory at commit time (only the
  chunks of ``data/*`` and ``meta/*`` arrays; staging ranges and metadata documents are not listed).
* :class:`VerifyingStore` wraps a reader's store: a chunk the inventory lists must be present with the
  listed size and checksum, and a chunk of a data/ or meta/ array that the inventory does not list is
  refused too; each case is a :class:`DatasetError` naming the array, the chunk key and what was
  expected, never a fill value. Whole-object reads (unsharded chunks) are checked on every read;
  byte-range reads (inner chunks of a shard) check the whole shard once per opened store.
* :func:`audit_inventory` streams every listed object's raw bytes for ``ms2 validate``.

Arrays are written with ``write_empty_chunks=True`` (:data:`WRITE_CONFIG`) so that every chunk of the
committed rows is stored and listed: "absent" never means "all fill values".
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

from ms2core.errors import DatasetError
from storage_schemas.dataset import ChunkInventory, StoredObject

#: zarr array config of every array the writer touches: all-fill chunks are stored, not skipped.
WRITE_CONFIG = {"write_empty_chunks": True}
INVENTORIED_ROOTS = ("data/", "meta/")
REHINT = "the store is damaged: re-render it (`ms2 render ... --overwrite`) or restore it from a copy"
#: A render killed between appending rows and committing them leaves the chunk at the committed boundary
#: rewritten; resuming the render rewrites and re-inventories it.
RESUME_HINT = ("its render has not finished: if it was interrupted, resume it by running the same `ms2 render` "
               "again; otherwise " + REHINT.removeprefix("the store is damaged: "))


def _size_and_crc(data: Buffer | bytes | memoryview) -> tuple[int, int]:
    raw = data.as_numpy_array() if isinstance(data, Buffer) else data
    view = memoryview(raw).cast("B")
    return view.nbytes, zlib.crc32(view)


def digest(data: Buffer | bytes | memoryview) -> StoredObject:
    nbytes, crc = _size_and_crc(data)
    return StoredObject(nbytes=nbytes, crc32=crc)


_CHUNK_KEY = re.compile(r"^(?P<path>.+)/(?P<chunk>c(?:/\d+)*)$")


def _array_of(key: str) -> tuple[str, str] | None:
    """(array path, chunk key) of any chunk of a data/ or meta/ array ('<path>/c/<i>/<j>...')."""
    match = _CHUNK_KEY.match(key)
    if match is None or not key.startswith(INVENTORIED_ROOTS):
        return None
    return match["path"], match["chunk"]


class RecordingStore(WrapperStore):
    """A writer's store that notes every object it sets or deletes (in order), for the inventory."""

    def __init__(self, store: Store, events: list | None = None) -> None:
        super().__init__(store)
        self.events: list[tuple[str, str, StoredObject | None]] = [] if events is None else events

    def with_read_only(self, read_only: bool = False) -> RecordingStore:
        return type(self)(self._store.with_read_only(read_only), self.events)  # one record for both views

    def _note(self, kind: str, key: str, value: StoredObject | None = None) -> None:
        if kind == "deldir" or _array_of(key) is not None:
            self.events.append((kind, key, value))

    async def set(self, key: str, value: Buffer) -> None:
        await self._store.set(key, value)
        self._note("set", key, digest(value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if not await self._store.exists(key):
            await self.set(key, value)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        for key, value in values:
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        await self._store.delete(key)
        self._note("del", key)

    async def delete_dir(self, prefix: str) -> None:
        await self._store.delete_dir(prefix)
        self._note("deldir", prefix.rstrip("/"))


def fold_into(inventory: ChunkInventory, events: list[tuple[str, str, StoredObject | None]]) -> ChunkInventory:
    """The inventory after the recorded writes, sorted (so equal stores have equal manifests)."""
    out = {path: dict(objects) for path, objects in inventory.items()}
    for kind, key, value in events:
        if kind == "deldir":
            for path in list(out):
                if path == key or path.startswith(f"{key}/") or not key:
                    del out[path]
            continue
        path, chunk = _array_of(key)
        if kind == "set":
            out.setdefault(path, {})[chunk] = value
        else:
            out.get(path, {}).pop(chunk, None)
    return {path: dict(sorted(objects.items())) for path, objects in sorted(out.items()) if objects}


def _expected_text(expected: StoredObject) -> str:
    return f"{expected.nbytes} bytes with crc32 {expected.crc32:08x}"


def object_problem(found: Buffer | bytes | None, expected: StoredObject) -> tuple[str, str] | None:
    """(check code, what is wrong) when ``found`` does not match the inventory; None when it does."""
    if found is None:
        return "missing_chunk", "is missing"
    nbytes, crc = _size_and_crc(found)
    if nbytes != expected.nbytes:
        return "chunk_size", f"has {nbytes} bytes (truncated or extended)"
    if crc != expected.crc32:
        return "chunk_checksum", f"has crc32 {crc:08x} (its bytes were altered)"
    return None


def integrity_error(label: str, array: str, chunk: str, problem: str, expected: StoredObject | None,
                    hint: str = REHINT) -> DatasetError:
    want = f"the inventory lists {_expected_text(expected)}" if expected else "the inventory does not list it"
    return DatasetError(f"dataset {label}: chunk {chunk} of {array} {problem}; {want}", hint=hint)


class VerifyingStore(WrapperStore):
    """A reader's store that checks every chunk of an inventoried array against the inventory."""

    def __init__(self, store: Store, inventory: ChunkInventory, label: str, hint: str = REHINT) -> None:
        super().__init__(store)
        self.inventory = inventory
        self.label = label
        self.hint = hint
        self._verified: set[str] = set()
        self._where: dict[str, tuple[str, str, StoredObject] | None] = {}  # key -> its inventory entry

    def with_read_only(self, read_only: bool = False) -> VerifyingStore:
        return type(self)(self._store.with_read_only(read_only), self.inventory, self.label, self.hint)

    def _expected(self, key: str) -> tuple[str, str, StoredObject] | None:
        if key in self._where:
            return self._where[key]
        split = _array_of(key)  # every chunk of a data/ or meta/ array, listed in the inventory or not
        if split is None:
            self._where[key] = None
            return None
        path, chunk = split
        expected = self.inventory.get(path, {}).get(chunk)
        if expected is None:
            raise integrity_error(self.label, path, chunk, "is not in the store's inventory (written after the "
                                  "last commit, or the inventory is damaged)", None, self.hint)
        self._where[key] = (path, chunk, expected)
        return self._where[key]

    async def _check_whole(self, key: str, where: tuple[str, str, StoredObject], prototype) -> Buffer:
        path, chunk, expected = where
        found = await self._store.get(key, prototype)
        problem = object_problem(found, expected)
        if problem is not None:
            raise integrity_error(self.label, path, chunk, problem[1], expected, self.hint)
        return found

    async def get(self, key: str, prototype: BufferPrototype | None = None,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        where = self._expected(key)
        if where is None:
            return await self._store.get(key, prototype, byte_range)
        if byte_range is None:
            found = await self._check_whole(key, where, prototype)
            self._verified.add(key)  # checked whole: later byte-range reads of it need not read it again
            return found
        if key not in self._verified:
            await self._check_whole(key, where, prototype)
            self._verified.add(key)
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]


@dataclass
class InventoryProblem:
    """One object that does not match the inventory (what ``ms2 validate`` reports)."""

    code: str  # missing_chunk | chunk_size | chunk_checksum
    array: str
    chunk: str
    message: str
    expected: str


def audit_inventory(store: Store, inventory: ChunkInventory) -> Iterator[InventoryProblem]:
    """Read every listed object's raw bytes (one at a time: memory stays at one object) and compare."""
    from zarr.core.sync import sync

    prototype = default_buffer_prototype()
    for path, objects in inventory.items():
        for chunk, expected in objects.items():
            try:
                found = sync(store.get(f"{path}/{chunk}", prototype))
            except OSError as exc:
                yield InventoryProblem("missing_chunk", path, chunk, f"chunk {chunk} of {path} cannot be read: {exc}",
                                       _expected_text(expected))
                continue
            problem = object_problem(found, expected)
            if problem is not None:
                code, what = problem
                yield InventoryProblem(code, path, chunk, f"chunk {chunk} of {path} {what}", _expected_text(expected))


def chunk_grid_keys(n_rows: int, row_shape: tuple[int, ...], rows_per_object: int) -> list[str]:
    """Object keys ('c/i/0/...') that hold rows [0, n_rows) of a time-major array chunked along time."""
    tail = "/0" * len(tuple(row_shape))
    n_objects = -(-n_rows // max(1, rows_per_object))
    return [f"c/{i}{tail}" for i in range(n_objects)]
