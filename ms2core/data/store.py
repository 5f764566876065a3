"""The one writer and the one reader of ms2flow datasets (layout drawn in ms2core.zarr_io).

:class:`DatasetWriter` is how anything writes a dataset's committed arrays (``pipelines.render``'s
commits, ``import_h5``, ``scripts/ship_dataset.py`` unpack, test fixtures): rows go to ``data/*``, then
``commit`` rewrites ``meta/episode_ends``, folds every chunk object written since the last commit into
the manifest's inventory (ms2core.data.integrity) and writes the manifest, the commit point.

:class:`DatasetStore` is how every consumer reads one (BC, DAPG/GAIL/SAC demos, export, benchmarks,
tools)::

    ds = DatasetStore.open("datasets/PickCube-v0/pick.pointcloud.3f2a.zarr")   # or s3://bucket/x.zarr
    ds.manifest                   # typed DatasetManifest
    ds.episode_ends, ds.n_rows    # committed episodes only
    ds.episode_bounds(3)          # (start, stop) rows of episode 3
    ds.read("actions", 0, 100)    # rows of data/actions, every chunk checked against the inventory
    ds.read_rows(["obs/xyz", "actions"], rows)   # a random minibatch

A missing, truncated, altered or undecodable chunk is a DatasetError naming the array and the chunk,
never a fill value or a codec traceback. Stores without an inventory (written before inventories)
are refused unless ``allow_unverified``; stores whose render has not finished are refused when
``require_complete``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from ms2core import zarr_io
from ms2core.data import row_reader
from ms2core.data.row_reader import ReadCache
from ms2core.data.integrity import REHINT, RESUME_HINT, WRITE_CONFIG, RecordingStore, VerifyingStore, fold_into
from ms2core.errors import DatasetError
from storage_schemas.dataset import MANIFEST_ATTR, ArraySpec, DatasetManifest

__all__ = ["DatasetStore", "DatasetWriter", "write_dataset", "synthetic_manifest"]


def _writing():
    return zarr.config.set({f"array.{k}": v for k, v in WRITE_CONFIG.items()})


class DatasetWriter:
    """Writes data/* rows and commits them with episode_ends, the inventory and the manifest."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None, create: bool = False,
                 manifest: DatasetManifest | None = None):
        """``create`` replaces whatever is at ``url`` by an empty store whose root zarr.json already holds
        ``manifest``: one write, so a store never exists without its manifest (a render killed between
        two writes once left one that its own rerun refused)."""
        self.url = str(url)
        self.recorder = RecordingStore(zarr_io.open_store(self.url, storage_options))
        attributes = zarr_io.manifest_attributes(manifest) if create and manifest is not None else None
        self.root = zarr.open_group(self.recorder, mode="w" if create else "r+", attributes=attributes)

    def create_arrays(self, specs: Mapping[str, ArraySpec], level: int, use_shards: bool = True) -> None:
        with _writing():
            zarr_io.create_time_arrays(self.root.require_group("data"), specs, level, use_shards)

    def write_rows(self, start_row: int, rows: Mapping[str, np.ndarray]) -> None:
        """Rows [start_row, start_row + n) of each data/<key> (visible to readers only after ``commit``)."""
        with _writing():
            data = self.root["data"]
            for key, values in rows.items():
                zarr_io.write_rows(data[key], start_row, values)

    def commit(self, manifest: DatasetManifest, episode_ends: np.ndarray) -> None:
        """episode_ends, then the manifest with the updated inventory in one write (the commit point)."""
        with _writing():
            zarr_io.set_episode_ends(self.root, episode_ends)
        if manifest.inventory is not None:  # None: an old store being resumed stays uninventoried
            manifest.inventory = fold_into(manifest.inventory, self.recorder.events)
        self.recorder.events.clear()
        zarr_io.write_manifest(self.root, manifest)


def write_dataset(url: str, manifest: DatasetManifest, columns: Mapping[str, np.ndarray],
                  episode_lengths: Sequence[int], use_shards: bool = True,
                  chunk_rows: int | None = None, shard_chunks: int | None = None) -> DatasetManifest:
    """A whole dataset in one commit: arrays from ``manifest.arrays`` (derived from the columns and the
    options' byte target when empty, or ``chunk_rows`` per chunk and ``shard_chunks`` chunks per shard),
    every episode committed. Used by
    imports, unpacking and fixtures; returns the manifest as written."""
    manifest = manifest.model_copy(deep=True)
    lengths = [int(n) for n in episode_lengths]
    if chunk_rows is not None:
        shard_rows = chunk_rows * shard_chunks if shard_chunks else None
        manifest.arrays = {key: ArraySpec(row_shape=list(v.shape[1:]), dtype=v.dtype.name, chunk_rows=chunk_rows,
                                          shard_rows=shard_rows, codec=f"blosc(zstd, clevel={manifest.options.compression_level}, shuffle)")
                           for key, v in columns.items()}
    if not manifest.arrays:
        options = manifest.options
        manifest.arrays = {key: zarr_io.array_spec_for(v.shape[1:], v.dtype, options.chunk_target_bytes, len(v),
                                                       options.shard_min_chunks, options.compression_level,
                                                       options.image_chunk_target_bytes)
                           for key, v in columns.items()}
    nothing_yet = manifest.model_copy(update=dict(  # until the commit below, the store says it holds no rows
        n_committed_episodes=0, n_committed_rows=0, inventory={},
        episodes=[e.model_copy(update={"committed": False}) for e in manifest.episodes]))
    writer = DatasetWriter(url, create=True, manifest=nothing_yet)
    writer.create_arrays(manifest.arrays, manifest.options.compression_level, use_shards)
    writer.write_rows(0, columns)
    manifest.inventory = {}
    manifest.n_committed_episodes = len(lengths)
    manifest.n_committed_rows = int(sum(lengths))
    writer.commit(manifest, np.cumsum(lengths, dtype=np.int64))
    return manifest


def synthetic_manifest(env_id: str, control_mode: str | None, obs_mode: str, episode_lengths: Sequence[int],
                       source: str, success: Sequence[bool] | None = None, backend: str = "fake") -> DatasetManifest:
    """The manifest of rows that were not rendered from a demo pair (tests, benchmarks, foreign imports):
    built through the DatasetManifest model, source digest 'none', every episode committed."""
    from storage_schemas.dataset import EpisodeStatus, ObsProcessConfig, RenderOptions, SourceInfo, dataset_version

    options = RenderOptions(obs=ObsProcessConfig(obs_mode=obs_mode), backend=backend)
    lengths = [int(n) for n in episode_lengths]
    flags = list(success) if success is not None else [True] * len(lengths)
    episodes = [EpisodeStatus(episode_id=i, seed=i, n_steps=n, committed=True, success=bool(ok))
                for i, (n, ok) in enumerate(zip(lengths, flags))]
    versions = {"mani_skill2": backend, "sapien": backend}
    return DatasetManifest(
        dataset_version=dataset_version("none", options, versions),
        source=SourceInfo(path=source, digest="none", env_id=env_id, control_mode=control_mode,
                          n_episodes=len(lengths), replay="env_states"),
        versions=versions, options=options, episodes=episodes, n_committed_episodes=len(lengths),
        n_committed_rows=sum(lengths), complete=True, inventory={})


class DatasetStore:
    """One opened dataset: typed manifest, committed episode ends, verified arrays (see the module doc)."""

    def __init__(self, url: str, root: zarr.Group, manifest: DatasetManifest, episode_ends: np.ndarray,
                 verified: bool):
        self.url = url
        self.root = root
        self.manifest = manifest
        self.episode_ends = episode_ends
        self.verified = verified
        self.arrays: dict[str, zarr.Array] = zarr_io.list_arrays(root["data"]) if "data" in root else {}
        #: verified stored objects and decoded chunks that ``read_rows`` keeps (ms2core.data.row_reader).
        #: Size it with ``set_cache_bytes``; MS2_READ_CACHE_MB sets the default (256 MiB).
        self.chunk_cache = ReadCache(int(float(os.environ.get("MS2_READ_CACHE_MB", 256)) * 2**20))

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, *,
             allow_unverified: bool = False, require_complete: bool = False) -> DatasetStore:
        url = str(url)
        root = _open_root(url, storage_options)
        manifest = _manifest(root, url)
        if manifest.inventory is None and not allow_unverified:
            raise DatasetError(f"dataset {url} has no chunk inventory (written before ms2flow recorded chunk "
                               "checksums), so a missing or altered chunk could not be told from real data",
                               hint="re-render it with `ms2 render ... --overwrite`, or pass --force to read "
                                    "it unverified")
        if require_complete and not manifest.complete:
            raise DatasetError(
                f"dataset {url} is incomplete: {manifest.n_committed_episodes} of {len(manifest.episodes)} "
                "episodes are committed (its render was interrupted)",
                hint="resume it by running the same `ms2 render` again, or pass --force to use the committed part")
        verified = manifest.inventory is not None
        if verified:
            hint = REHINT if manifest.complete else RESUME_HINT
            root = zarr.open_group(VerifyingStore(root.store, manifest.inventory, url, hint), mode="r")
        try:
            ends = zarr_io.read_episode_ends(root, manifest)
        except DatasetError:
            raise
        except Exception as exc:  # noqa: BLE001 - codec errors of every kind
            raise DatasetError(f"dataset {url}: {zarr_io.EPISODE_ENDS} cannot be decoded: {exc}", hint=REHINT) from exc
        store = cls(url, root, manifest, ends, verified)
        store._check_layout()
        return store

    def _check_layout(self) -> None:
        ends = self.episode_ends
        if ends.ndim != 1 or (len(ends) and (ends[0] <= 0 or np.any(np.diff(ends) <= 0))):
            raise DatasetError(f"dataset {self.url}: {zarr_io.EPISODE_ENDS} must be strictly increasing positive "
                               f"counts, got {ends[:8].tolist()}...", hint=REHINT)
        if len(ends) < self.manifest.n_committed_episodes:
            raise DatasetError(f"dataset {self.url}: {zarr_io.EPISODE_ENDS} has {len(ends)} entries, the manifest "
                               f"commits {self.manifest.n_committed_episodes} episodes", hint=REHINT)
        for key, arr in self.arrays.items():
            if arr.shape[0] < self.n_rows:
                raise DatasetError(f"dataset {self.url}: data/{key} has {arr.shape[0]} rows but "
                                   f"{self.n_rows} are committed", hint=REHINT)

    # -- what is in it --------------------------------------------------------------------------
    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_rows(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    @property
    def obs_keys(self) -> list[str]:
        return sorted(k[4:] for k in self.arrays if k.startswith("obs/"))

    def episode_bounds(self, episode: int) -> tuple[int, int]:
        """(start, stop) rows of committed episode number ``episode`` (its position, 0-based)."""
        if not 0 <= episode < self.n_episodes:
            raise IndexError(f"episode {episode} is out of range: {self.url} has {self.n_episodes} committed "
                             f"episodes (0..{self.n_episodes - 1})")
        start = int(self.episode_ends[episode - 1]) if episode > 0 else 0
        return start, int(self.episode_ends[episode])

    def array(self, key: str) -> zarr.Array:
        if key not in self.arrays:
            raise DatasetError(f"dataset {self.url} has no data/{key}",
                               hint=f"it has data/{{{', '.join(self.arrays)}}}")
        return self.arrays[key]

    # -- reading --------------------------------------------------------------------------------
    def read(self, key: str, start: int = 0, stop: int | None = None, step: int = 1) -> np.ndarray:
        """Rows [start, stop) (cut to the committed rows) of data/<key>, every step-th."""
        stop = self.n_rows if stop is None else min(int(stop), self.n_rows)
        array = self.array(key)
        try:
            return row_reader.read_rows({key: array}, np.arange(start, max(start, stop), step))[key]
        except DatasetError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt bytes raise codec errors of every kind
            raise self._decode_error(key, f"rows {start}-{stop - 1}", exc) from exc

    def set_cache_bytes(self, max_bytes: int) -> None:
        """Bound the cache of ``read_rows`` (0 turns it off); drops what it holds."""
        self.chunk_cache = ReadCache(max_bytes)

    def read_rows(self, keys: Iterable[str], rows: np.ndarray) -> dict[str, np.ndarray]:
        """The given committed rows (any order, repeats allowed) of several arrays: each stored object
        fetched and verified once, each touched chunk decoded once (in threads), verified objects and
        decoded chunks kept in ``chunk_cache`` while it has room (ms2core.data.row_reader)."""
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise IndexError(f"rows must lie in [0, {self.n_rows}) (the committed rows of {self.url})")
        arrays = {key: self.array(key) for key in keys}
        try:
            return row_reader.read_rows(arrays, rows, self.chunk_cache)
        except DatasetError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._decode_error(", ".join(arrays), f"{rows.size} rows", exc) from exc

    def _decode_error(self, key: str, where: str, exc: Exception) -> DatasetError:
        return DatasetError(f"dataset {self.url}: {where} of data/{key} cannot be decoded "
                            f"({type(exc).__name__}: {exc})", hint=REHINT)


def _open_root(url: str, storage_options: Mapping[str, Any] | None) -> zarr.Group:
    remote = zarr_io.is_remote(url)
    try:
        store = zarr_io.open_store(url, storage_options, read_only=True)
        exists = zarr_io.store_exists(store)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreachable endpoint, bad credentials, unknown protocol
        raise DatasetError(f"cannot reach dataset {url}: {type(exc).__name__}: {exc}",
                           hint="check AWS_ENDPOINT_URL and the AWS_* credentials of this process") from exc
    if not exists and remote:  # zarr/s3fs report an unreachable endpoint as a missing key
        endpoint = (storage_options or {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL",
                                                                                 "the default AWS endpoint")
        raise DatasetError(f"dataset {url} does not exist or the object store at {endpoint} cannot be reached",
                           hint="check the path, AWS_ENDPOINT_URL and the AWS_* credentials of this process")
    if not exists:
        raise DatasetError(f"dataset {url} does not exist", hint="render one with `ms2 render` or check the path")
    try:
        return zarr.open_group(store, mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for non-stores
        raise DatasetError(f"{url} is not a readable Zarr group: {exc}", hint="pass a .zarr store") from exc


def _manifest(root: zarr.Group, url: str) -> DatasetManifest:
    try:
        manifest = zarr_io.read_manifest(root)
    except ValueError as exc:
        raise DatasetError(f"dataset {url}: its manifest (attrs[{MANIFEST_ATTR!r}]) is invalid: {exc}",
                           hint=REHINT) from exc
    if manifest is None:
        raise DatasetError(f"{url} is a Zarr store without an ms2flow manifest (attrs[{MANIFEST_ATTR!r}])",
                           hint="only stores written by `ms2 render` can be read here")
    return manifest
