"""Demo dataset for BC (and demo-augmented RL) from Zarr v3 stores: storage, sampling, prefetch.

Stores are opened through ``ms2core.data.store.DatasetStore`` (committed episodes only, every chunk
checked against the store's inventory: a damaged chunk is a DatasetError, never zeros). Layout::

    <store>/
      data/obs/<key>     (T_total, ...)   processed obs, e.g. xyz (T,N,3) f32, rgb (T,N,3) u8, state (T,S) f32
      data/actions       (T_total, A) float32
      data/rewards (T_total,) float32, data/success, data/terminated, data/truncated (T_total,) bool
      meta/episode_ends  (E,) int64   cumulative (read by DatasetStore, cut to the committed episodes)
      attrs["ms2flow"]   DatasetManifest dict

Three parts, kept apart:

- storage: where the rows live. ``ram`` (numpy arrays), ``gpu`` (torch tensors
  in GPU memory, gathered there), ``dynamic`` (a bounded cache of decoded
  blocks of ``block_rows`` rows for datasets larger than RAM);
- sampling: batch ``k`` is drawn from ``numpy.random.Generator(PCG64([seed, k]))``,
  so a batch depends only on (seed, k). A prefetch thread may run ahead, and a
  resumed run needs only ``k`` (the "sampler state") to continue exactly;
- streaming (``BatchStream``): an optional background thread that gathers
  batches ahead and pins them for non-blocking host->GPU copies.

Sampling is uniform over all committed transitions of all datasets in ``ram``
and ``gpu`` mode. In ``dynamic`` mode it is uniform over the blocks in a
rolling window that fits ``cache_bytes``: one window slot is replaced by a
random block every ``refresh_every_batches`` batches, so every block is
equally likely to be in the window (ManiSkill2-Learn's dynamic loading works
the same way). When the whole dataset fits the cache, dynamic is exact.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from ms2core import nest
from ms2core.data.store import DatasetStore
from ms2core.errors import DatasetError

ROW_KEYS = ("actions",)


@dataclass
class DemoBatch:
    """One training batch: processed obs (dict of arrays/tensors) and the expert actions, first axis = batch."""

    obs: dict[str, Any]
    actions: Any

    def to(self, device, non_blocking: bool = False) -> DemoBatch:
        return DemoBatch(nest.to_device(self.obs, device, non_blocking), self.actions.to(device, non_blocking=non_blocking))


@dataclass
class ZarrDemoStore:
    """One opened dataset (a :class:`DatasetStore`) and how many of its committed rows we use."""

    dataset: DatasetStore
    arrays: dict[str, zarr.Array]  # "obs/<key>" and "actions" (chunks verified on read)
    num_rows: int
    num_episodes: int

    @property
    def path(self) -> str:
        return self.dataset.url

    @property
    def manifest(self) -> dict:
        """The manifest as JSON without its chunk inventory (checkpoints record it; digests are the store's)."""
        return self.dataset.manifest.model_dump(mode="json", exclude={"inventory"})

    @property
    def obs_keys(self) -> list[str]:
        return sorted(k[4:] for k in self.arrays if k.startswith("obs/"))

    def row_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        return {k: (tuple(a.shape[1:]), np.dtype(a.dtype)) for k, a in self.arrays.items()}

    def read(self, name: str, start: int = 0, stop: int | None = None, step: int = 1) -> np.ndarray:
        """Rows of ``name`` within the used rows; a damaged chunk is a DatasetError (DatasetStore.read)."""
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        return self.dataset.read(name, start, stop, step)


def open_demo_store(path: str | Path, num_samples: int | None = None, force: bool = False) -> ZarrDemoStore:
    """Open one dataset through :class:`DatasetStore`; ``num_samples`` keeps the first n committed transitions.

    Refuses stores without a chunk inventory and stores whose render has not finished unless ``force``.
    ``path`` may be an object-store URL (s3://bucket/key.zarr): s3fs then takes the endpoint and
    credentials from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
    """
    dataset = DatasetStore.open(str(path), allow_unverified=force, require_complete=not force)
    if "actions" not in dataset.arrays:
        raise DatasetError(f"dataset {path} lacks data/actions",
                           hint="expected data/obs/<key>, data/actions and meta/episode_ends (pipelines.render layout)")
    if "dones" in dataset.arrays and "terminated" not in dataset.arrays:
        raise DatasetError(f"dataset {path} was rendered before render version 2: it stores data/dones (success or "
                           "the last step) and rewards computed without a physics step",
                           hint="re-render it with `ms2 render` (it then stores the simulator's rewards and "
                                "data/terminated, data/truncated)")
    if not dataset.obs_keys:
        raise DatasetError(f"dataset {path} has no observation arrays under data/obs", hint="expected data/obs/<key>")
    if dataset.n_rows == 0:
        raise DatasetError(f"dataset {path} holds no committed episodes", hint="render some episodes first")
    arrays = {"actions": dataset.arrays["actions"]}
    arrays.update({f"obs/{k}": dataset.arrays[f"obs/{k}"] for k in dataset.obs_keys})
    num_rows = dataset.n_rows if num_samples is None else min(dataset.n_rows, int(num_samples))
    num_episodes = int(np.searchsorted(dataset.episode_ends, num_rows, side="left")) + 1
    return ZarrDemoStore(dataset, arrays, num_rows, num_episodes)


class _RamStorage:
    def __init__(self, stores: list[ZarrDemoStore]):
        self.rows = {name: np.concatenate([s.read(name) for s in stores]) for name in stores[0].arrays}

    def gather(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {name: arr[index] for name, arr in self.rows.items()}


class _GpuStorage:
    """Every row in GPU memory, filled slab by slab so host RAM never holds the whole dataset twice."""

    SLAB_BYTES = 256 << 20

    def __init__(self, stores: list[ZarrDemoStore], device: torch.device):
        self.device = device
        total = sum(s.num_rows for s in stores)
        self.rows: dict[str, torch.Tensor] = {}
        for name, (shape, dtype) in stores[0].row_shapes().items():
            tensor = torch.empty((total, *shape), dtype=_torch_dtype(dtype), device=device)
            row_bytes = max(1, int(np.prod(shape)) * dtype.itemsize)
            slab = max(1, self.SLAB_BYTES // row_bytes)
            offset = 0
            for s in stores:
                for start in range(0, s.num_rows, slab):
                    stop = min(s.num_rows, start + slab)
                    tensor[offset + start: offset + stop] = torch.from_numpy(np.ascontiguousarray(s.read(name, start, stop)))
                offset += s.num_rows
            self.rows[name] = tensor

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: t.index_select(0, index) for name, t in self.rows.items()}


class _DynamicStorage:
    """Blocks of ``block_rows`` rows decoded on demand into an LRU cache bounded by ``cache_bytes``."""

    def __init__(self, stores: list[ZarrDemoStore], block_rows: int, cache_bytes: int, row_bytes: int):
        self.stores = stores
        self.blocks: list[tuple[int, int, int, int]] = []  # (store, start, stop, global_start)
        offset = 0
        for si, s in enumerate(stores):
            for start in range(0, s.num_rows, block_rows):
                stop = min(s.num_rows, start + block_rows)
                self.blocks.append((si, start, stop, offset + start))
            offset += s.num_rows
        self.capacity = max(1, min(len(self.blocks), cache_bytes // max(1, block_rows * row_bytes) - 1))
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def cached_bytes(self) -> int:
        return sum(nest.nbytes(b) for b in self._cache.values())

    def block(self, block_id: int) -> dict[str, np.ndarray]:
        with self._lock:
            hit = self._cache.get(block_id)
            if hit is not None:
                self._cache.move_to_end(block_id)
                return hit
        si, start, stop, _ = self.blocks[block_id]
        store = self.stores[si]
        data = {name: store.read(name, start, stop) for name in store.arrays}
        with self._lock:
            self._cache[block_id] = data
            self.loads += 1
            while len(self._cache) > self.capacity + 1:  # the window plus the block being swapped in
                self._cache.popitem(last=False)
        return data


class DemoDataset:
    """Several Zarr demo datasets behind one uniform sampler. See the module docstring for the modes."""

    def __init__(self, paths: list[str | Path], num_samples: int | None = None, mode: str = "auto",
                 device: str | torch.device = "cpu", cache_bytes: int = 2 << 30, block_rows: int = 2048,
                 refresh_every_batches: int = 8, ram_limit_bytes: int = 8 << 30, gpu_fraction: float = 0.6,
                 force: bool = False):
        if not paths:
            raise DatasetError("no dataset paths given", hint="set dataset.paths to one or more .zarr stores")
        self.stores = [open_demo_store(p, num_samples, force) for p in paths]
        first = self.stores[0]
        shapes = first.row_shapes()
        for s in self.stores[1:]:
            if s.row_shapes() != shapes:
                diff = {k: (shapes.get(k), v) for k, v in s.row_shapes().items() if shapes.get(k) != v}
                missing = sorted(set(shapes) - set(s.row_shapes()))
                raise DatasetError(
                    f"dataset {s.path} does not match {first.path}: differing arrays {diff}, missing {missing}",
                    hint="datasets sampled together need the same obs keys, shapes, dtypes and action size",
                )
        self.device = torch.device(device)
        self.num_rows = sum(s.num_rows for s in self.stores)
        self.row_bytes = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in shapes.values())
        self.obs_shapes = {k[4:]: shape for k, (shape, _) in shapes.items() if k.startswith("obs/")}
        self.action_dim = int(shapes["actions"][0][0])
        self.mode = self._choose_mode(mode, ram_limit_bytes, gpu_fraction)
        self.refresh_every_batches = refresh_every_batches
        if self.mode == "ram":
            self.storage = _RamStorage(self.stores)
        elif self.mode == "gpu":
            self.storage = _GpuStorage(self.stores, self.device)
        else:
            self.storage = _DynamicStorage(self.stores, block_rows, cache_bytes, self.row_bytes)

    @property
    def total_bytes(self) -> int:
        return self.num_rows * self.row_bytes

    @property
    def manifests(self) -> list[dict]:
        return [s.manifest for s in self.stores]

    def _choose_mode(self, mode: str, ram_limit_bytes: int, gpu_fraction: float) -> str:
        allowed = ("auto", "ram", "dynamic", "gpu")
        if mode not in allowed:
            raise DatasetError(f"unknown dataset mode {mode!r}", hint=f"allowed: {', '.join(allowed)}")
        if mode == "gpu" and self.device.type != "cuda":
            raise DatasetError(f"dataset mode 'gpu' needs a CUDA device, training runs on {self.device}",
                               hint="use mode ram/dynamic/auto on CPU")
        if mode != "auto":
            return mode
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if self.total_bytes <= gpu_fraction * free:
                return "gpu"
        return "ram" if self.total_bytes <= ram_limit_bytes else "dynamic"

    # -- sampling -------------------------------------------------------------
    @staticmethod
    def batch_rng(seed: int, batch_index: int, stream: int = 0) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64([seed, stream, batch_index]))

    def sample(self, batch_index: int, batch_size: int, seed: int, shard: slice | None = None) -> DemoBatch:
        """Batch number ``batch_index``: a pure function of (seed, batch_index) and the data. ``shard``: only
        these rows of that batch are read (a data-parallel learner's part of the global batch)."""
        rng = self.batch_rng(seed, batch_index)
        if self.mode == "ram":
            rows = self.storage.gather(rng.integers(0, self.num_rows, batch_size)[shard or slice(None)])
        elif self.mode == "gpu":
            index = torch.from_numpy(rng.integers(0, self.num_rows, batch_size)[shard or slice(None)])
            rows = self.storage.gather(index.to(self.device, non_blocking=True))
        else:
            rows = self._sample_dynamic(rng, batch_index, batch_size, seed, shard)
        return DemoBatch({k[4:]: v for k, v in rows.items() if k.startswith("obs/")}, rows["actions"])

    def window(self, batch_index: int, seed: int) -> list[int]:
        """Block ids cached for batch ``batch_index`` (dynamic mode): a pure function of (seed, batch_index)."""
        storage: _DynamicStorage = self.storage
        n_blocks, cap = len(storage.blocks), storage.capacity
        if cap >= n_blocks:
            return list(range(n_blocks))
        initial = self.batch_rng(seed, 0, stream=1).choice(n_blocks, cap, replace=False)
        events = batch_index // self.refresh_every_batches  # event e (1-based) replaces slot (e-1) % cap
        window = []
        for slot in range(cap):
            last = slot + 1 + ((events - slot - 1) // cap) * cap if events >= slot + 1 else 0
            window.append(int(initial[slot]) if last == 0
                          else int(self.batch_rng(seed, last, stream=2).integers(n_blocks)))
        return window

    def _sample_dynamic(self, rng, batch_index, batch_size, seed, shard: slice | None = None) -> dict[str, np.ndarray]:
        storage: _DynamicStorage = self.storage
        window = self.window(batch_index, seed)
        sizes = np.array([storage.blocks[b][2] - storage.blocks[b][1] for b in window])
        flat = rng.integers(0, int(sizes.sum()), batch_size)[shard or slice(None)]
        batch_size = len(flat)
        slot_of = np.searchsorted(np.cumsum(sizes), flat, side="right")
        within = flat - (np.cumsum(sizes) - sizes)[slot_of]
        out = {}
        parts = []
        for slot in np.unique(slot_of):
            picked = np.nonzero(slot_of == slot)[0]
            parts.append((picked, storage.block(window[slot]), within[picked]))
        for name, (shape, dtype) in self.stores[0].row_shapes().items():
            arr = np.empty((batch_size, *shape), dtype=dtype)
            for picked, block, rows in parts:
                arr[picked] = block[name][rows]
            out[name] = arr
        return out

    def state_stats(self, max_rows: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean/std of obs 'state' over (a strided subset of) the rows, in float64."""
        if "state" not in self.obs_shapes:
            raise DatasetError("the datasets have no 'state' observation", hint=f"obs keys: {sorted(self.obs_shapes)}")
        return self._column_stats("obs/state", max_rows)

    def action_stats(self, max_rows: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean/std of the actions over (a strided subset of) the rows, in float64."""
        return self._column_stats("actions", max_rows)

    def _column_stats(self, key: str, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for s in self.stores:
            step = max(1, math.ceil(s.num_rows * len(self.stores) / max_rows))
            parts.append(np.asarray(s.read(key, 0, s.num_rows, step), dtype=np.float64))
        values = np.concatenate(parts)
        return values.mean(0), values.std(0)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


class BatchStream:
    """Yields ``DemoBatch`` number start, start+1, ... as torch tensors on ``device``.

    With ``prefetch_batches > 0`` a daemon thread gathers batches ahead (pinned
    when the target is CUDA) so the host work overlaps the GPU's. The batches
    are the same as without prefetching because each depends only on its number.
    """

    def __init__(self, dataset: DemoDataset, batch_size: int, seed: int, start_batch: int = 0,
                 device: str | torch.device = "cpu", prefetch_batches: int = 0, shard: slice | None = None):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.shard = shard  # this learner's rows of each global batch of batch_size (ms2core.algos.distributed)
        self.next_batch = start_batch
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda" and dataset.mode != "gpu"
        # Gathering on the GPU is already asynchronous; a thread would only contend for the GIL.
        self.prefetch_batches = 0 if dataset.mode == "gpu" else prefetch_batches
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _host_batch(self, k: int) -> DemoBatch:
        batch = self.dataset.sample(k, self.batch_size, self.seed, self.shard)
        obs, actions = nest.to_torch(batch.obs), nest.to_torch(batch.actions)
        if self.pin:
            obs, actions = nest.pin_memory(obs), actions.pin_memory()
        return DemoBatch(obs, actions)

    def _worker(self, first: int) -> None:
        k = first
        try:
            while not self._stop.is_set():
                item = (k, self._host_batch(k))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                k += 1
        except BaseException as exc:  # surface loader errors in the training thread
            self._queue.put((k, exc))

    def __iter__(self):
        return self

    def __next__(self) -> DemoBatch:
        k = self.next_batch
        if self.prefetch_batches <= 0:
            batch = (self._host_batch(k) if self.dataset.mode != "gpu"
                     else self.dataset.sample(k, self.batch_size, self.seed, self.shard))
        else:
            if self._thread is None:
                self._queue = queue.Queue(maxsize=self.prefetch_batches)
                self._thread = threading.Thread(target=self._worker, args=(k,), daemon=True, name="demo-prefetch")
                self._thread.start()
            got, batch = self._queue.get()
            if isinstance(batch, BaseException):
                raise batch
            assert got == k, f"prefetch out of order: {got} != {k}"
        self.next_batch = k + 1
        if self.dataset.mode == "gpu":
            return batch  # already gathered on the GPU
        return batch.to(self.device, non_blocking=self.pin)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "next_batch": self.next_batch, "batch_size": self.batch_size}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
