"""The ManiSkill2-Learn (ML2L) baseline the storage and read benchmarks compare against: its file and its readers.

File, as ML2L's ``tools/convert_state.py`` writes it: one group ``traj_<i>`` per episode, filled by
``ReplayMemory.to_hdf5`` -> ``GDict.to_hdf5`` -> ``maniskill2_learn.utils.file.dump_hdf5``, which names every
key ``dict_str_<key>`` and writes every array with ``create_dataset(name, data=..., compression="gzip",
compression_opts=5)`` (h5py's automatic chunking, no shuffle). Per-step scalars are (T, 1) (ReplayMemory
items), and ReplayMemory adds ``worker_indices`` (T, 1) int32 and ``is_truncated`` (T, 1) bool. The
observations are the ml2l layout's (``obs_layout: ml2l``: channels-first rgbd with float16 depth, float
point rgb in [0, 1], frame_related_states / to_frames), so the bytes are ML2L's own.

Readers, as ML2L's users read it:

* :class:`H5RandomReader`: random minibatches straight from the file with h5py (one fancy read per
  trajectory dataset). Its chunk cache is h5py's per dataset: at the defaults (1 MiB, 521 slots) or,
  to compare with a reader holding ``cache_bytes`` of decoded chunks, the same total split over the
  datasets by their size (each dataset's share of a cache over the whole file: uniform random rows hit
  it as often as they would hit one shared cache);
* :func:`load_in_memory`: ``ReplayMemory(dynamic_loading=False)``, the default when the buffer capacity
  holds the data: the whole file is read into numpy once, then batches are ``memory.take(idx)``;
* :class:`DynamicLoader`: ``ReplayMemory(dynamic_loading=True)`` (capacity < data): ML2L's FileCache
  reads ``capacity`` transitions in file order into the buffer, batches are drawn from the buffer
  without replacement until it is used up, then the next ``capacity`` transitions are read.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

GZIP_LEVEL = 5  # maniskill2_learn/utils/file/hdf5_utils.py dump_hdf5


def _name(key: str) -> str:
    return "/".join(f"dict_str_{part}" for part in key.split("/"))


def write_ml2l_h5(path: Path, episodes: list[dict[str, np.ndarray]]) -> Path:
    """``traj_<i>`` groups of ``dict_str_*`` datasets, gzip 5, h5py chunks, ReplayMemory's extra keys.

    Each episode is ``{"obs/<key>": (T, ...), "actions": (T, A), "rewards": (T,), "success": (T,)}`` in the
    ml2l layout; ``dones`` is success (convert_state), ``episode_dones`` marks the last step."""
    with h5py.File(path, "w") as f:
        for i, ep in enumerate(episodes):
            group = f.create_group(f"traj_{i}")
            n = len(ep["actions"])
            items = {key: value for key, value in ep.items() if key.startswith("obs/")}
            episode_dones = np.zeros((n, 1), bool)
            episode_dones[-1] = True
            items.update({
                "actions": ep["actions"], "dones": np.asarray(ep["success"], bool).reshape(n, 1),
                "episode_dones": episode_dones, "rewards": np.asarray(ep["rewards"], np.float32).reshape(n, 1),
                "worker_indices": np.zeros((n, 1), np.int32), "is_truncated": np.zeros((n, 1), bool),
            })
            for key, value in items.items():
                group.create_dataset(_name(key), data=value, compression="gzip", compression_opts=GZIP_LEVEL)
    return path


def _keys(group: h5py.Group) -> list[str]:
    keys = []
    group.visititems(lambda k, v: keys.append(k) if isinstance(v, h5py.Dataset) else None)
    return sorted(keys)


def _prime_at_least(n: int) -> int:
    n = max(2, int(n))
    while any(n % d == 0 for d in range(2, int(n ** 0.5) + 1)):
        n += 1
    return n


def _open_with_cache(group: h5py.Group, key: str, nbytes: int) -> h5py.Dataset:
    """``group[key]`` with a chunk cache of ``nbytes`` and a slot per chunk (a prime count, as HDF5 asks)."""
    plain = group[key]
    n_chunks = int(np.prod([-(-s // c) for s, c in zip(plain.shape, plain.chunks or plain.shape)]))
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_chunk_cache(_prime_at_least(max(521, 2 * n_chunks)), int(nbytes), 0.75)
    return h5py.Dataset(h5py.h5d.open(group.id, key.encode(), dapl=dapl))


def _read_rows(dataset: h5py.Dataset, rows: np.ndarray, how: str) -> np.ndarray:
    if how == "fancy":
        return dataset[rows.tolist()]
    if how == "rows":
        return np.stack([dataset[r] for r in rows.tolist()])
    block = dataset.chunks[0] if dataset.chunks else len(dataset)
    parts = []
    for b in np.unique(rows // block).tolist():
        got = dataset[b * block: (b + 1) * block]
        parts.append(got[rows[(rows >= b * block) & (rows < (b + 1) * block)] - b * block])
    return np.concatenate(parts)


class H5RandomReader:
    """Random transitions from the file with h5py: one fancy read per trajectory and dataset.

    ``cache_bytes`` None keeps h5py's chunk caches at their defaults (1 MiB per dataset); a number gives
    the datasets that many bytes of chunk cache in all, each its share by stored size (uncompressed)."""

    def __init__(self, path: Path, cache_bytes: int | None = None):
        self.file = h5py.File(path, "r")
        names = sorted(self.file, key=lambda k: int(k[5:]))
        self.keys = _keys(self.file[names[0]])
        self.datasets = [{k: self.file[n][k] for k in self.keys} for n in names]
        if cache_bytes is not None:
            total = sum(d.nbytes for ds in self.datasets for d in ds.values())
            self.datasets = [{k: _open_with_cache(self.file[n], k, cache_bytes * ds[k].nbytes / total)
                              for k in self.keys} for n, ds in zip(names, self.datasets)]
        self.ends = np.cumsum([d[self.keys[0]].shape[0] for d in self.datasets])
        self.n_rows = int(self.ends[-1])

    def read(self, idx: np.ndarray, how: str = "blocks") -> dict[str, np.ndarray]:
        """Rows ``idx`` (returned sorted), per trajectory and dataset: ``blocks`` reads each h5py chunk
        row-block that holds some of them as one slice; ``rows`` one read per row; ``fancy`` one
        ``dataset[list]`` (h5py's fancy indexing: ~20x slower than a slice of the whole trajectory)."""
        idx = np.sort(idx)
        traj = np.searchsorted(self.ends, idx, side="right")
        local = idx - np.concatenate([[0], self.ends[:-1]])[traj]
        batch = {k: [] for k in self.keys}
        for j in np.unique(traj):
            rows = np.unique(local[traj == j])
            for k in self.keys:
                batch[k].append(_read_rows(self.datasets[j][k], rows, how))
        return {k: np.concatenate(v) for k, v in batch.items()}

    def read_range(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows [start, stop) in file order (what ML2L's FileCache reads)."""
        out = {k: [] for k in self.keys}
        lo = np.concatenate([[0], self.ends[:-1]])
        for j in range(int(np.searchsorted(self.ends, start, side="right")), len(self.datasets)):
            if lo[j] >= stop:
                break
            a, b = max(start, lo[j]) - lo[j], min(stop, self.ends[j]) - lo[j]
            for k in self.keys:
                out[k].append(self.datasets[j][k][a:b])
        return {k: np.concatenate(v) for k, v in out.items()}

    def close(self) -> None:
        self.file.close()


def load_in_memory(path: Path) -> dict[str, np.ndarray]:
    """The whole file as numpy arrays, trajectories concatenated (ReplayMemory without dynamic loading)."""
    reader = H5RandomReader(path)
    try:
        return reader.read_range(0, reader.n_rows)
    finally:
        reader.close()


def take(memory: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in memory.items()}


class DynamicLoader:
    """ReplayMemory(dynamic_loading=True): ``capacity`` transitions read in file order, sampled without
    replacement, then the next ``capacity`` (wrapping around the file)."""

    def __init__(self, path: Path, capacity: int, seed: int = 0):
        self.reader = H5RandomReader(path)
        self.capacity = min(capacity, self.reader.n_rows)
        self.rng = np.random.default_rng(seed)
        self.position = 0
        self.buffer: dict[str, np.ndarray] = {}
        self.order = np.zeros(0, np.int64)

    def _refill(self) -> None:
        stop = min(self.position + self.capacity, self.reader.n_rows)
        self.buffer = self.reader.read_range(self.position, stop)
        self.position = 0 if stop >= self.reader.n_rows else stop
        self.order = self.rng.permutation(len(self.buffer[self.reader.keys[0]]))

    def sample(self, batch: int) -> dict[str, np.ndarray]:
        if batch > self.capacity:
            raise ValueError(f"ReplayMemory's capacity ({self.capacity}) must hold a batch ({batch})")
        if len(self.order) < batch:
            self._refill()
        idx, self.order = self.order[:batch], self.order[batch:]
        return take(self.buffer, idx)

    def close(self) -> None:
        self.reader.close()
