"""The random-read path (ms2core.data.row_reader behind DatasetStore.read_rows / read, its cache), the
chunk layout it reads (float16 depth channels-first, uint8 rgb interleaved, image chunks) and the render's
automatic range size. Stores come from the real render on the fake env."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from ms2core import zarr_io
from ms2core.data.store import DatasetStore
from ms2core.errors import DatasetError
from pipelines import render
from storage_schemas.dataset import DatasetManifest, RenderConfig
from tests.demo_fixtures import fake_demo_pair


def _render(tmp_path, **options) -> DatasetStore:
    demo = fake_demo_pair(tmp_path / "demos" / "pick.h5", n_episodes=4)
    opts = dict(backend="fake", obs=dict(obs_mode="rgbd"), camera_size=(16, 12), chunk_target_bytes=64 << 10)
    opts.update(options)
    cfg = RenderConfig.model_validate(dict(source=str(demo), store=str(tmp_path / "s.zarr"), options=opts,
                                           workers=0, progress=False))
    return DatasetStore.open(render.run(cfg).store)


@pytest.fixture
def store(tmp_path) -> DatasetStore:
    return _render(tmp_path)


def test_cached_reads_equal_plain_reads_in_any_order_with_repeats(store):
    full = {key: store.read(key) for key in store.arrays}
    rng = np.random.default_rng(0)
    for _ in range(3):
        rows = rng.integers(0, store.n_rows, 50)
        rows[:3] = rows[0]  # repeats
        batch = store.read_rows(store.arrays, rows)
        for key in store.arrays:
            np.testing.assert_array_equal(batch[key], full[key][rows], err_msg=key)
    assert store.chunk_cache.hits > 0 and store.chunk_cache.nbytes <= store.chunk_cache.max_bytes


def test_cache_is_bounded_and_can_be_turned_off(store):
    depth = store.array("obs/depth")
    chunk_bytes = depth.chunks[0] * int(np.prod(depth.shape[1:])) * depth.dtype.itemsize
    store.set_cache_bytes(2 * chunk_bytes)
    store.read_rows(["obs/depth"], np.arange(store.n_rows))
    assert 0 < store.chunk_cache.nbytes <= 2 * chunk_bytes
    store.set_cache_bytes(0)
    store.read_rows(["obs/depth"], np.array([0, 1]))
    assert store.chunk_cache.nbytes == 0 and store.chunk_cache.misses > 0


def test_damaged_chunk_is_an_error_and_never_cached(store, tmp_path):
    path = tmp_path / "s.zarr" / "data" / "actions" / "c" / "0" / "0"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    damaged = DatasetStore.open(tmp_path / "s.zarr")
    for _ in range(2):  # a second read checks again: nothing was cached from the failed one
        with pytest.raises(DatasetError, match="crc32"):
            damaged.read_rows(["actions"], np.array([0]))
    assert damaged.chunk_cache.nbytes == 0


def test_depth_is_stored_as_float16_by_default_and_float32_on_request(tmp_path):
    store = _render(tmp_path / "a")
    assert store.array("obs/depth").dtype == np.float16 and store.manifest.arrays["obs/depth"].dtype == "float16"
    exact = _render(tmp_path / "b", depth_dtype="float32")
    depth32 = exact.read("obs/depth")
    assert depth32.dtype == np.float32 and (depth32 >= 0).all()
    np.testing.assert_array_equal(store.read("obs/depth"), depth32.astype(np.float16))
    assert store.manifest.dataset_version != exact.manifest.dataset_version


def test_manifest_written_before_depth_dtype_says_float32(store):
    raw = store.manifest.model_dump(mode="json")
    del raw["options"]["depth_dtype"]
    assert DatasetManifest.model_validate(raw).options.depth_dtype == "float32"


def test_manifest_written_before_image_chunk_target_says_images_used_the_common_target(store):
    raw = store.manifest.model_dump(mode="json")
    del raw["options"]["image_chunk_target_bytes"]
    assert DatasetManifest.model_validate(raw).options.image_chunk_target_bytes is None
    assert store.manifest.options.image_chunk_target_bytes == 384 << 10


def test_float_depth_is_stored_channels_first_and_uint8_rgb_interleaved(store):
    depth = store.root["data/obs/depth"].metadata.to_dict()["codecs"]
    assert depth[0]["name"] == "transpose" and list(depth[0]["configuration"]["order"]) == [0, 3, 1, 2]
    assert "transpose" in store.manifest.arrays["obs/depth"].codec
    rgb = store.root["data/obs/rgb"].metadata.to_dict()["codecs"]
    assert "transpose" not in {c["name"] for c in rgb} and "transpose" not in store.manifest.arrays["obs/rgb"].codec


@pytest.mark.parametrize("n_pending, workers, expected", [(8, 1, 1), (8, 2, 1), (100, 2, 7), (10_000, 4, 8)])
def test_automatic_range_size_keeps_every_worker_busy(n_pending, workers, expected):
    cfg = RenderConfig(source="x.h5", workers=workers)
    assert render.range_size(cfg, n_pending) == expected
    assert render.range_size(cfg.model_copy(update={"episodes_per_range": 3}), n_pending) == 3


def test_read_rows_without_a_cache_reads_plain_zarr_arrays(store):
    root = zarr.open_group(store.url, mode="r")
    arrays = zarr_io.list_arrays(root["data"])
    rows = np.array([5, 1, 5])
    batch = zarr_io.read_rows(arrays, rows)
    np.testing.assert_array_equal(batch["obs/rgb"], arrays["obs/rgb"][:][rows])


@pytest.fixture
def sharded(tmp_path) -> DatasetStore:
    """rgbd with the image arrays sharded: depth transposed (channels first) in 5-row chunks, rgb interleaved
    in 3-row chunks (64x48 cameras, 64 KiB image chunks)."""
    return _render(tmp_path, camera_size=(64, 48), image_chunk_target_bytes=64 << 10, shard_min_chunks=2)


def _plain(store: DatasetStore) -> dict[str, np.ndarray]:
    arrays = zarr_io.list_arrays(zarr.open_group(store.url, mode="r")["data"])
    return {key: arr[:store.n_rows] for key, arr in arrays.items()}


@pytest.mark.parametrize("cache_bytes", [256 << 20, 0, 2 << 10])
def test_sharded_reads_equal_zarr_whatever_the_cache_holds(sharded, cache_bytes):
    assert sharded.array("obs/rgb").shards is not None and sharded.array("obs/depth").chunks[0] == 5
    full = _plain(sharded)
    sharded.set_cache_bytes(cache_bytes)
    rng = np.random.default_rng(1)
    for _ in range(4):
        rows = rng.integers(0, sharded.n_rows, 40)
        batch = sharded.read_rows(sharded.arrays, rows)
        for key in sharded.arrays:
            np.testing.assert_array_equal(batch[key], full[key][rows], err_msg=key)
    cache = sharded.chunk_cache
    assert cache.nbytes <= cache.max_bytes
    if cache_bytes == 2 << 10:  # no depth shard fits: their indexes are kept and inner chunks read by range
        assert not [k for k in cache.objects if k.startswith("data/obs/depth/")]
        assert [k for k in cache.indexes if k.startswith("data/obs/depth/")]


def test_range_reads_equal_zarr(sharded):
    full = _plain(sharded)
    for start, stop, step in [(0, None, 1), (3, 17, 1), (1, 30, 4), (5, 5, 1)]:
        for key in ("obs/depth", "obs/rgb", "actions"):
            end = sharded.n_rows if stop is None else stop
            np.testing.assert_array_equal(sharded.read(key, start, stop, step), full[key][start:end:step])


def test_the_cache_fills_once_and_keeps_what_it_holds(sharded):
    depth = sharded.array("obs/depth")
    chunk_bytes = depth.chunks[0] * int(np.prod(depth.shape[1:])) * depth.dtype.itemsize
    shards = sum(o.nbytes for o in sharded.manifest.inventory["data/obs/depth"].values())
    sharded.set_cache_bytes(shards + 3 * chunk_bytes)  # the stored shards (cached first), three decoded chunks
    sharded.read_rows(["obs/depth"], np.arange(0, sharded.n_rows))
    assert len(sharded.chunk_cache.objects) == len(sharded.manifest.inventory["data/obs/depth"])
    pool = sharded.chunk_cache.pools["data/obs/depth"]
    kept = pool.slot_of.copy()
    assert (kept >= 0).sum() == 3 and sharded.chunk_cache.nbytes <= shards + 3 * chunk_bytes
    sharded.read_rows(["obs/depth"], np.arange(sharded.n_rows - 1, -1, -1))
    np.testing.assert_array_equal(pool.slot_of, kept)  # nothing evicted, nothing churned
    hits = sharded.chunk_cache.hits
    sharded.read_rows(["obs/depth"], np.flatnonzero(np.repeat(kept >= 0, depth.chunks[0]))[:5])
    assert sharded.chunk_cache.hits == hits + 1


def test_a_damaged_shard_is_an_error_and_never_cached(sharded, tmp_path):
    shard = tmp_path / "s.zarr" / "data" / "obs" / "depth" / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    shard.write_bytes(bytes(raw))
    damaged = DatasetStore.open(tmp_path / "s.zarr")
    for _ in range(2):
        with pytest.raises(DatasetError, match="chunk c/0/0/0/0 of data/obs/depth has crc32"):
            damaged.read_rows(["obs/depth"], np.array([0, 1]))
    assert damaged.chunk_cache.nbytes == 0 and not damaged.chunk_cache.objects


def test_arrays_with_other_codecs_are_read_through_zarr(tmp_path):
    from zarr.codecs import GzipCodec

    from ms2core.data.row_reader import layout_of, read_rows

    values = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    foreign = zarr.create_array(str(tmp_path / "foreign.zarr"), shape=values.shape, dtype="float32",
                                chunks=(8, 3), compressors=GzipCodec())
    foreign[:] = values
    assert layout_of(foreign) is None
    rows = np.array([39, 0, 9, 9])
    np.testing.assert_array_equal(read_rows({"x": foreign}, rows)["x"], values[rows])
