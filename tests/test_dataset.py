"""Demo datasets from real small Zarr stores: uniform sampling, num_samples, several stores, dynamic cache, prefetch."""

import numpy as np
import pytest
import torch
import zarr

from ms2core.data import BatchStream, DemoDataset
from ms2core.errors import DatasetError
from tests.zarr_fixtures import write_counting_dataset, write_demo_zarr, write_fake_expert_dataset


@pytest.fixture
def two_stores(tmp_path):
    a = write_counting_dataset(tmp_path / "a.zarr", [5, 7], start=0, extra_rows=3)  # rows 0..11 (+3 uncommitted)
    b = write_counting_dataset(tmp_path / "b.zarr", [4, 4, 6], start=100)  # rows 100..113
    return a, b


def row_ids(batch):
    ids = np.asarray(batch.actions).ravel()
    np.testing.assert_array_equal(np.asarray(batch.obs["state"])[:, 0], ids)  # obs row matches action row
    return ids


def test_samples_are_uniform_over_committed_rows(two_stores):
    ds = DemoDataset([two_stores[0]], mode="ram")
    assert ds.num_rows == 12 and ds.obs_shapes == {"state": (2,)} and ds.action_dim == 1
    ids = np.concatenate([row_ids(ds.sample(k, 500, seed=3)) for k in range(40)])
    counts = np.bincount(ids.astype(int), minlength=12)
    assert set(np.unique(ids)) == set(range(12))  # never the uncommitted -999 rows
    expected = len(ids) / 12
    assert np.all(np.abs(counts - expected) < 0.1 * expected)


def test_sampling_depends_only_on_seed_and_batch_number(two_stores):
    ds = DemoDataset([two_stores[0]], mode="ram")
    np.testing.assert_array_equal(ds.sample(5, 32, 0).actions, ds.sample(5, 32, 0).actions)
    assert not np.array_equal(ds.sample(5, 32, 0).actions, ds.sample(6, 32, 0).actions)
    assert not np.array_equal(ds.sample(5, 32, 0).actions, ds.sample(5, 32, 1).actions)


def test_several_datasets_and_num_samples(two_stores):
    ds = DemoDataset(list(two_stores), mode="ram")
    ids = set(np.concatenate([row_ids(ds.sample(k, 256, 0)) for k in range(10)]).astype(int))
    assert ids == set(range(12)) | set(range(100, 114))
    first4 = DemoDataset(list(two_stores), num_samples=4, mode="ram")
    assert first4.num_rows == 8
    ids = set(np.concatenate([row_ids(first4.sample(k, 256, 0)) for k in range(10)]).astype(int))
    assert ids == {0, 1, 2, 3, 100, 101, 102, 103}


def test_dynamic_mode_equals_ram_when_the_cache_holds_everything(two_stores):
    ram = DemoDataset(list(two_stores), mode="ram")
    dyn = DemoDataset(list(two_stores), mode="dynamic", block_rows=4, cache_bytes=1 << 20)
    for k in range(5):
        np.testing.assert_array_equal(ram.sample(k, 64, 0).actions, dyn.sample(k, 64, 0).actions)


def test_dynamic_mode_keeps_the_cache_bounded_and_reaches_every_row(tmp_path):
    path = write_counting_dataset(tmp_path / "big.zarr", [50] * 8, chunk_rows=8)  # 400 rows
    row_bytes = 4 * 2 + 4 * 1
    cache = 4 * 16 * row_bytes  # about four blocks of 16 rows
    ds = DemoDataset([path], mode="dynamic", block_rows=16, cache_bytes=cache, refresh_every_batches=1)
    assert ds.storage.capacity < len(ds.storage.blocks)
    seen = set()
    for k in range(400):
        batch = ds.sample(k, 32, seed=0)
        seen |= set(row_ids(batch).astype(int))
        window = ds.window(k, 0)
        assert ds.storage.cached_bytes() <= (ds.storage.capacity + 1) * 16 * row_bytes
        assert set(row_ids(batch).astype(int) // 16) <= set(window)  # samples come from the window only
    assert seen == set(range(400))
    assert ds.window(123, 0) == ds.window(123, 0)  # a pure function: resumable


def test_prefetch_thread_yields_the_same_batches(two_stores):
    ds = DemoDataset(list(two_stores), mode="ram")
    plain = BatchStream(ds, 16, seed=7, start_batch=3)
    pre = BatchStream(ds, 16, seed=7, start_batch=3, prefetch_batches=3)
    try:
        for _ in range(10):
            a, b = next(plain), next(pre)
            assert isinstance(b.actions, torch.Tensor)
            torch.testing.assert_close(a.actions, b.actions)
            torch.testing.assert_close(a.obs["state"], b.obs["state"])
    finally:
        pre.close()
    assert pre.state_dict() == {"seed": 7, "next_batch": 13, "batch_size": 16}


def test_prefetch_thread_surfaces_loader_errors(two_stores, monkeypatch):
    ds = DemoDataset([two_stores[0]], mode="ram")

    def broken(*args, **kwargs):
        raise DatasetError("disk went away")

    monkeypatch.setattr(ds, "sample", broken)
    stream = BatchStream(ds, 4, seed=0, prefetch_batches=2)
    with pytest.raises(DatasetError, match="disk went away"):
        next(stream)
    stream.close()


def test_state_stats_and_fake_expert_dataset(tmp_path):
    path = write_fake_expert_dataset(tmp_path / "expert.zarr", num_episodes=10)
    ds = DemoDataset([path])
    assert ds.mode == "ram" and ds.obs_shapes == {"state": (51,)} and ds.action_dim == 7
    mean, std = ds.state_stats()
    states = zarr.open_group(str(path), mode="r")["data/obs/state"][:]
    np.testing.assert_allclose(mean, states.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, states.std(0), rtol=1e-4, atol=1e-6)
    assert ds.manifests[0]["options"]["obs"]["obs_mode"] == "state"  # the real DatasetManifest


def test_pointcloud_dataset_shapes(tmp_path):
    path = write_fake_expert_dataset(tmp_path / "pc.zarr", num_episodes=3, obs_mode="pointcloud", n_points=32)
    ds = DemoDataset([path])
    assert ds.obs_shapes == {"rgb": (32, 3), "state": (35,), "xyz": (32, 3)}
    batch = next(BatchStream(ds, 8, seed=0))
    assert batch.obs["rgb"].dtype == torch.uint8 and batch.obs["xyz"].shape == (8, 32, 3)


# -- bad inputs ------------------------------------------------------------------

def test_no_paths(tmp_path):
    with pytest.raises(DatasetError, match="no dataset paths"):
        DemoDataset([])


def test_missing_store(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        DemoDataset([tmp_path / "nope.zarr"])


def test_not_a_zarr_store(tmp_path):
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "x.txt").write_text("hello")
    with pytest.raises(DatasetError):
        DemoDataset([tmp_path / "junk.zarr"])


def _recommit(path, ends, **manifest_updates):
    """Commit other episode ends through the real writer (a buggy writer; the inventory stays consistent)."""
    from ms2core.data.store import DatasetStore, DatasetWriter

    manifest = DatasetStore.open(path).manifest.model_copy(update=manifest_updates)
    DatasetWriter(str(path)).commit(manifest, np.asarray(ends, np.int64))


def test_missing_episode_ends(tmp_path):
    path = write_counting_dataset(tmp_path / "s.zarr", [3])
    del zarr.open_group(str(path), mode="r+")["meta/episode_ends"]
    with pytest.raises(DatasetError, match="meta/episode_ends"):
        DemoDataset([path])


def test_missing_obs(tmp_path):
    path = write_counting_dataset(tmp_path / "s.zarr", [3])
    del zarr.open_group(str(path), mode="r+")["data/obs"]
    with pytest.raises(DatasetError, match="data/obs"):
        DemoDataset([path])


def test_non_increasing_episode_ends(tmp_path):
    path = write_counting_dataset(tmp_path / "a.zarr", [5, 7])
    _recommit(path, [5, 5])
    with pytest.raises(DatasetError, match="strictly increasing"):
        DemoDataset([path])


def test_episode_ends_changed_behind_the_writer_is_a_checksum_error(tmp_path):
    path = write_counting_dataset(tmp_path / "a.zarr", [5, 7])
    zarr.open_group(str(path), mode="r+")["meta/episode_ends"][:] = np.array([5, 5])
    with pytest.raises(DatasetError, match=r"chunk c/0 of meta/episode_ends has crc32"):
        DemoDataset([path])


def test_arrays_shorter_than_episode_ends(tmp_path):
    path = write_counting_dataset(tmp_path / "a.zarr", [5, 7])
    root = zarr.open_group(str(path), mode="r+")
    root["data/actions"].resize((10, 1))
    with pytest.raises(DatasetError, match="data/actions has 10 rows"):
        DemoDataset([path])


def test_no_committed_episodes(tmp_path):
    path = write_counting_dataset(tmp_path / "a.zarr", [5])
    _recommit(path, [], n_committed_episodes=0, n_committed_rows=0)
    with pytest.raises(DatasetError, match="no committed episodes"):
        DemoDataset([path])


def test_datasets_that_do_not_match(tmp_path):
    a = write_counting_dataset(tmp_path / "a.zarr", [5])
    eps = [dict(obs={"state": np.zeros((3, 4), np.float32)}, actions=np.zeros((3, 1)), rewards=np.zeros(3),
                success=np.zeros(3))]
    b = write_demo_zarr(tmp_path / "b.zarr", eps)
    with pytest.raises(DatasetError, match="does not match"):
        DemoDataset([a, b])


def test_bad_modes(two_stores):
    with pytest.raises(DatasetError, match="unknown dataset mode"):
        DemoDataset([two_stores[0]], mode="disk")
    if not torch.cuda.is_available():
        with pytest.raises(DatasetError, match="CUDA"):
            DemoDataset([two_stores[0]], mode="gpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_resident_mode_matches_ram(two_stores):
    ram = DemoDataset(list(two_stores), mode="ram")
    gpu = DemoDataset(list(two_stores), mode="gpu", device="cuda")
    batch = next(BatchStream(gpu, 32, seed=0, device="cuda"))
    assert batch.actions.is_cuda
    np.testing.assert_array_equal(ram.sample(0, 32, 0).actions, batch.actions.cpu().numpy())
