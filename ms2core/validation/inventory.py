"""The chunk-inventory checks of ``ms2 validate`` (codes no_inventory, missing_chunk, chunk_size,
chunk_checksum, uninventoried_chunk): every object the manifest's inventory lists is streamed raw
(one object in memory at a time) and compared, and every chunk of the committed rows must be listed.
The inventory itself is written by ms2core.data.store.DatasetWriter (see ms2core.data.integrity).
"""

from __future__ import annotations

from collections.abc import Mapping

import zarr

from ms2core.data.integrity import audit_inventory, chunk_grid_keys
from ms2core.validation.checks import RowLocator
from ms2core.validation.findings import FindingSink
from storage_schemas.dataset import MANIFEST_ATTR, DatasetManifest

INTEGRITY_CHECKS = ["no_inventory", "missing_chunk", "chunk_size", "chunk_checksum", "uninventoried_chunk"]


def check_inventory(store, manifest: DatasetManifest, arrays: Mapping[str, zarr.Array], n_rows: int,
                    sink: FindingSink, locator: RowLocator) -> None:
    """Every object the inventory lists is present with its size and crc32, and every chunk (or shard) of
    the committed rows of every data array is listed: a missing chunk would otherwise read as fill values."""
    if manifest.inventory is None:
        sink.add("no_inventory", "the store has no chunk inventory (written before ms2flow recorded chunk "
                 "checksums): a missing or altered chunk cannot be told from real data; re-render it",
                 key=f"{MANIFEST_ATTR}.inventory", expected="an inventory written by ms2 render")
        return
    for problem in audit_inventory(store, manifest.inventory):
        key = problem.array.removeprefix("data/")
        row = _chunk_first_row(problem.chunk, arrays.get(key))
        episode, step = locator.locate(row) if row is not None and row < n_rows else (None, None)
        sink.add(problem.code, problem.message, episode=episode, key=key, index=step, row=row,
                 value=problem.chunk, expected=problem.expected)
    for key, array in arrays.items():
        listed = manifest.inventory.get(f"data/{key}", {})
        rows_per_object = (array.shards or array.chunks)[0]
        for chunk in chunk_grid_keys(n_rows, array.shape[1:], rows_per_object):
            if chunk not in listed:
                row = _chunk_first_row(chunk, array)
                episode, step = locator.locate(row)
                sink.add("uninventoried_chunk", f"chunk {chunk} of data/{key} holds committed rows but is not in "
                         "the inventory", episode=episode, key=key, index=step, row=row, value=chunk,
                         expected="listed in the inventory")


def _chunk_first_row(chunk: str, array: zarr.Array | None) -> int | None:
    """First row held by object ``c/<i>/...`` of a time-major array (None when it cannot be told)."""
    parts = chunk.split("/")
    if array is None or len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1]) * (array.shards or array.chunks)[0]
