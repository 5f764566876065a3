"""Render stage on the fake env: layout, manifest, identity/versioning, Dask, resume after kill -9,
fault injection (full disk), bad inputs, export to ManiSkill2-Learn's HDF5 and the CLI."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from ms2core import zarr_io
from ms2core.envs import make_env
from ms2core.errors import DatasetError, DemoFileError
from ms2core.obs import process_observation
from ms2core.trajectory import DemoPair, pair_paths
from pipelines import export, render
from storage_schemas.dataset import ExportConfig, ObsProcessConfig, RenderConfig, RenderOptions
from tests.demo_fixtures import fake_demo_pair

REPO = Path(__file__).resolve().parents[1]


def _cfg(source, tmp_path, obs=None, **kw) -> RenderConfig:
    options = dict(backend="fake", obs=obs or dict(obs_mode="pointcloud", n_points=64))
    options.update(kw.pop("options", {}))
    base = dict(source=str(source), output_dir=str(tmp_path / "datasets"), options=options, workers=0,
                episodes_per_range=2, progress=False)
    base.update(kw)
    return RenderConfig.model_validate(base)


def _read_all(url) -> dict[str, np.ndarray]:
    root = zarr.open_group(url, mode="r")
    out = {f"data/{k}": a[:] for k, a in zarr_io.list_arrays(root["data"]).items()}
    out["meta/episode_ends"] = root["meta/episode_ends"][:]
    return out


def _assert_same_store(a, b):
    da, db = _read_all(a), _read_all(b)
    assert sorted(da) == sorted(db)
    for key in da:
        np.testing.assert_array_equal(da[key], db[key], err_msg=key)
    ma = zarr.open_group(a, mode="r").attrs["ms2flow"]
    mb = zarr.open_group(b, mode="r").attrs["ms2flow"]
    assert ma == mb


@pytest.fixture
def demo(tmp_path):
    return fake_demo_pair(tmp_path / "demos" / "pick.h5", n_episodes=5)


def test_pointcloud_dataset_layout_contents_and_manifest(demo, tmp_path):
    result = render.run(_cfg(demo, tmp_path))
    assert not result.nothing_to_do and result.n_episodes == 5 and result.ranges_rendered == 3
    root = zarr.open_group(result.store, mode="r")
    manifest = zarr_io.read_manifest(root)
    with DemoPair(demo) as pair:
        episodes = list(pair.iter_episodes())
        assert manifest.source.digest == pair.digest()
    lengths = [e.num_steps for e in episodes]
    np.testing.assert_array_equal(root["meta/episode_ends"][:], np.cumsum(lengths))
    assert root["meta/episode_ends"].dtype == np.int64
    total = sum(lengths)
    assert root["data/obs/xyz"].shape == (total, 64, 3) and root["data/obs/xyz"].dtype == np.float32
    assert root["data/obs/rgb"].dtype == np.uint8 and root["data/obs/state"].shape[0] == total
    np.testing.assert_array_equal(root["data/actions"][:], np.concatenate([e.actions for e in episodes]))
    assert "dones" not in root["data"]
    terminated, truncated = root["data/terminated"][:], root["data/truncated"][:]
    last = np.zeros(total, bool)
    last[np.cumsum(lengths) - 1] = True
    np.testing.assert_array_equal(terminated, root["data/success"][:])  # ManiSkill2 0.5: get_done = success
    np.testing.assert_array_equal(truncated, last & ~terminated)
    # Observation t of episode 1 is the processed observation of env state t.
    env = make_env("PickCube-v0", "pointcloud", "pd_ee_delta_pose", backend="fake")
    env.reset(seed=episodes[1].meta.seed)
    env.unwrapped.set_state(episodes[1].env_states[3])
    raw = env.unwrapped.get_obs()
    row = lengths[0] + 3
    expected_state = process_observation(raw, ObsProcessConfig(obs_mode="pointcloud", n_points=64))["state"]
    np.testing.assert_allclose(root["data/obs/state"][row], expected_state)
    # Success comes from evaluate() after each step: the recorded flags of the demo.
    np.testing.assert_array_equal(root["data/success"][:], np.concatenate([e.success for e in episodes]))
    # Manifest: versions, options, codecs and chunking, per-range/episode status.
    assert manifest.complete and manifest.n_committed_rows == total
    assert set(manifest.versions) >= {"mani_skill2", "sapien", "zarr"}
    from ms2core.numerics import blas_kernel

    assert manifest.versions["openblas_core"] == blas_kernel()  # the rewards' last bits depend on it
    assert manifest.renderer is None  # fake backend: no Vulkan device (sapien renders record theirs)
    assert manifest.options.obs.n_points == 64
    assert all(r.status == "committed" for r in manifest.ranges) and len(manifest.ranges) == 3
    assert all(e.committed for e in manifest.episodes)
    spec = manifest.arrays["obs/xyz"]
    assert "blosc(zstd" in spec.codec and spec.chunk_rows == RenderOptions().chunk_target_bytes // (64 * 3 * 4)
    codecs = json.loads((Path(result.store) / "data/obs/xyz/zarr.json").read_text())["codecs"]
    blosc = [c for c in codecs if c["name"] == "blosc"][0]["configuration"]
    assert blosc["cname"] == "zstd" and blosc["shuffle"] == "shuffle"
    assert codecs[0] == {"name": "transpose", "configuration": {"order": [0, 2, 1]}}  # stored (T, 3, N)
    assert "ranges" not in root  # staging removed once complete


def test_rgbd_dataset_stacks_cameras_and_random_rows_read_back(demo, tmp_path):
    cfg = _cfg(demo, tmp_path, obs=dict(obs_mode="rgbd"), options=dict(camera_size=(16, 12)))
    root = zarr.open_group(render.run(cfg).store, mode="r")
    assert root["data/obs/rgb"].shape[1:] == (12, 16, 6) and root["data/obs/depth"].shape[1:] == (12, 16, 2)
    arrays = zarr_io.list_arrays(root["data"])
    rows = np.array([7, 0, 30, 7, 2])
    batch = zarr_io.read_rows(arrays, rows)
    for key, arr in arrays.items():
        np.testing.assert_array_equal(batch[key], arr[:][rows], err_msg=key)


def test_large_arrays_are_sharded(demo, tmp_path):
    cfg = _cfg(demo, tmp_path, obs=dict(obs_mode="rgbd"), options=dict(camera_size=(256, 256), shard_min_chunks=2))
    result = render.run(cfg)
    manifest = zarr_io.read_manifest(zarr.open_group(result.store, mode="r"))
    spec = manifest.arrays["obs/rgb"]
    assert spec.chunk_rows == RenderOptions().image_chunk_target_bytes // (256 * 256 * 6) and spec.shard_rows == spec.chunk_rows * 16
    meta = json.loads((Path(result.store) / "data/obs/depth/zarr.json").read_text())
    assert meta["codecs"][0]["name"] == "sharding_indexed"
    inner = meta["codecs"][0]["configuration"]
    depth_spec = manifest.arrays["obs/depth"]
    assert inner["chunk_shape"][0] == depth_spec.chunk_rows
    assert inner["codecs"][0] == {"name": "transpose", "configuration": {"order": [0, 3, 1, 2]}}
    assert manifest.arrays["actions"].shard_rows is None  # few chunks: no shards


def test_rerun_is_a_no_op_and_changed_options_make_a_new_version(demo, tmp_path):
    first = render.run(_cfg(demo, tmp_path))
    mtime = (Path(first.store) / "data/obs/xyz/zarr.json").stat().st_mtime_ns
    again = render.run(_cfg(demo, tmp_path))
    assert again.nothing_to_do and again.store == first.store
    assert (Path(first.store) / "data/obs/xyz/zarr.json").stat().st_mtime_ns == mtime
    changed = render.run(_cfg(demo, tmp_path, obs=dict(obs_mode="pointcloud", n_points=32)))
    assert changed.dataset_version != first.dataset_version and changed.store != first.store
    assert zarr.open_group(first.store, mode="r")["data/obs/xyz"].shape[1] == 64  # old version intact
    assert zarr.open_group(changed.store, mode="r")["data/obs/xyz"].shape[1] == 32
    # A new demo digest is a new version too.
    other = fake_demo_pair(tmp_path / "demos" / "pick2.h5", n_episodes=2, seed=3)
    assert render.run(_cfg(other, tmp_path)).dataset_version != first.dataset_version


def test_existing_store_with_a_different_manifest_is_an_error_unless_overwrite(demo, tmp_path):
    store = str(tmp_path / "fixed.zarr")
    render.run(_cfg(demo, tmp_path, store=store))
    with pytest.raises(DatasetError, match=r"already holds a different dataset.*n_points: 64 -> 32"):
        render.run(_cfg(demo, tmp_path, store=store, obs=dict(obs_mode="pointcloud", n_points=32)))
    assert zarr.open_group(store, mode="r")["data/obs/xyz"].shape[1] == 64  # untouched
    result = render.run(_cfg(demo, tmp_path, store=store, obs=dict(obs_mode="pointcloud", n_points=32),
                             overwrite=True))
    assert zarr.open_group(result.store, mode="r")["data/obs/xyz"].shape[1] == 32
    (tmp_path / "notzarr").mkdir()
    (tmp_path / "notzarr" / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="is not a Zarr store"):
        render.run(_cfg(demo, tmp_path, store=str(tmp_path / "notzarr")))


def test_dask_workers_and_an_existing_scheduler_give_the_same_dataset_as_one_process(demo, tmp_path):
    from dask.distributed import LocalCluster

    inproc = render.run(_cfg(demo, tmp_path, store=str(tmp_path / "a.zarr")))
    dask = render.run(_cfg(demo, tmp_path, store=str(tmp_path / "b.zarr"), workers=2))
    assert dask.ranges_rendered == 3
    _assert_same_store(inproc.store, dask.store)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = render.run(_cfg(demo, tmp_path, store=str(tmp_path / "c.zarr"), scheduler=cluster.scheduler_address))
    _assert_same_store(inproc.store, remote.store)


def test_soft_body_action_replay_matches_state_replay(tmp_path):
    states = fake_demo_pair(tmp_path / "s.h5", n_episodes=3, seed=5)
    actions_only = fake_demo_pair(tmp_path / "a.h5", n_episodes=3, seed=5, with_states=False)
    a = render.run(_cfg(states, tmp_path, store=str(tmp_path / "s.zarr")))
    b = render.run(_cfg(actions_only, tmp_path, store=str(tmp_path / "a.zarr")))
    assert zarr_io.read_manifest(zarr.open_group(b.store, mode="r")).source.replay == "actions"
    da, db = _read_all(a.store), _read_all(b.store)
    for key in ("data/obs/state", "data/actions", "data/success", "data/rewards", "meta/episode_ends"):
        np.testing.assert_allclose(da[key], db[key], atol=1e-5, err_msg=key)


def test_max_episodes_and_reward_mode(demo, tmp_path):
    result = render.run(_cfg(demo, tmp_path, options=dict(max_episodes=2, reward_mode="sparse")))
    root = zarr.open_group(result.store, mode="r")
    assert result.n_episodes == 2 and root["meta/episode_ends"].shape == (2,)
    np.testing.assert_array_equal(root["data/rewards"][:], root["data/success"][:].astype(np.float32))


def test_full_disk_keeps_finished_ranges_and_rerun_resumes(demo, tmp_path, monkeypatch):
    store = str(tmp_path / "full.zarr")
    real_commit = render._commit_range
    calls = {"n": 0}

    def commit_then_fill_disk(root, manifest, report):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_commit(root, manifest, report)

    monkeypatch.setattr(render, "_commit_range", commit_then_fill_disk)
    with pytest.raises(DatasetError, match=r"No space left on device.*") as info:
        render.run(_cfg(demo, tmp_path, store=store))
    assert "disk is full" in str(info.value) and "e000002-n2" in str(info.value)
    root = zarr.open_group(store, mode="r")
    assert len(zarr_io.read_episode_ends(root)) == 2  # the first range is committed and readable
    assert root["ranges/e000002-n2"].attrs["complete"]  # the rendered range waits in staging
    monkeypatch.setattr(render, "_commit_range", real_commit)
    resumed = render.run(_cfg(demo, tmp_path, store=store))
    assert resumed.ranges_reused == 1 and resumed.ranges_rendered == 1
    assert resumed.episodes_kept == 2  # the first range, committed before the disk filled: not rendered again
    fresh = render.run(_cfg(demo, tmp_path, store=str(tmp_path / "fresh.zarr")))
    _assert_same_store(resumed.store, fresh.store)
    _assert_inventory_matches(resumed.store)


def test_unwritable_store_path_is_a_clear_error(demo, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(DatasetError, match=r"cannot create dataset .*a_file/sub.*Not a directory"):
        render.run(_cfg(demo, tmp_path, output_dir=str(blocker / "sub")))


def test_bad_demo_pairs_are_rejected_before_any_store_exists(demo, tmp_path):
    h5, js = pair_paths(demo)
    meta = json.loads(js.read_text())
    meta["episodes"][0]["elapsed_steps"] = 999
    js.write_text(json.dumps(meta))
    with pytest.raises(DemoFileError, match="episode 0: json says elapsed_steps=999"):
        render.run(_cfg(demo, tmp_path))
    assert not (tmp_path / "datasets").exists()
    with pytest.raises(DemoFileError, match="does not exist"):
        render.run(_cfg(tmp_path / "missing.h5", tmp_path))


def test_unsupported_modes_are_clear_errors(demo, tmp_path):
    h5, js = pair_paths(demo)
    meta = json.loads(js.read_text())
    for ep in meta["episodes"]:
        ep["control_mode"] = "pd_teleport"
    js.write_text(json.dumps(meta))
    # the demo gate at the start of render refuses both, before any store exists
    with pytest.raises(DemoFileError, match=r"(?s)demo-pair checks.*control_mode \(.*'pd_teleport'"):
        render.run(_cfg(demo, tmp_path))
    meta["env_info"]["env_id"] = "OpenCabinetDrawer-v1"
    js.write_text(json.dumps(meta))
    with pytest.raises(DemoFileError, match=r"(?s)demo-pair checks.*env_id \(.*OpenCabinetDrawer-v1"):
        render.run(_cfg(demo, tmp_path))
    with pytest.raises(Exception, match="include_seg needs obs_mode pointcloud or rgbd"):
        _cfg(demo, tmp_path, obs=dict(obs_mode="state", include_seg=True))


def test_export_h5_has_maniskill2_learn_layout_and_imports_back(tmp_path, demo):
    cfg = _cfg(demo, tmp_path, obs=dict(obs_mode="rgbd"), options=dict(camera_size=(16, 12)))
    result = render.run(cfg)
    out = tmp_path / "export" / "pick.rgbd.h5"
    exported = export.run(ExportConfig(store=result.store, output=str(out)))
    assert exported.n_episodes == 5
    root = zarr.open_group(result.store, mode="r")
    ends = root["meta/episode_ends"][:]
    with h5py.File(out, "r") as f:
        assert sorted(k for k in f) == [f"traj_{i}" for i in range(5)]
        t1 = f["traj_1"]
        assert set(t1) == {"obs", "actions", "rewards", "dones", "success", "episode_dones", "is_truncated"}
        assert t1["obs/rgb"].shape == (ends[1] - ends[0], 6, 12, 16)  # channels first, like ManiSkill2-Learn
        assert t1["obs/rgb"].compression == "gzip"
        np.testing.assert_array_equal(t1["obs/rgb"][()].transpose(0, 2, 3, 1), root["data/obs/rgb"][ends[0]:ends[1]])
        assert t1["episode_dones"][-1] and not t1["episode_dones"][0] and not t1["is_truncated"][()].any()
        # ManiSkill2-Learn's dones = terminated (convert_state: the recorded success), never "last step"
        np.testing.assert_array_equal(t1["dones"][()], root["data/terminated"][ends[0]:ends[1]])
    with pytest.raises(DatasetError, match="already exists"):
        export.run(ExportConfig(store=result.store, output=str(out)))
    back = export.import_h5(str(out), str(tmp_path / "back.zarr"))
    _assert_same_store(result.store, back)


def _manifest_on_disk(store: Path) -> dict | None:
    try:
        return json.loads((store / "zarr.json").read_text())["attributes"]["ms2flow"]
    except (OSError, ValueError, KeyError):
        return None


def kill_resume_and_compare(args: list[str], store: Path, fresh: Path, min_committed: int, timeout_s: float) -> int:
    """Run ``ms2 render`` (args), kill -9 it once >= min_committed episodes are committed, rerun it (it must
    reuse the committed ranges), render the same into ``fresh`` uninterrupted, and assert both stores are
    identical. Returns the number of episodes committed at the kill."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        manifest = _manifest_on_disk(store)
        if manifest and min_committed <= manifest["n_committed_episodes"] and not manifest["complete"]:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = manifest["n_committed_episodes"]
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert killed_at is not None, f"render finished before it could be killed: {proc.stderr.read()[-2000:]}"
    assert not _manifest_on_disk(store)["complete"]
    resumed = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "reused" in resumed.stdout
    fresh_args = [a if a != str(store) else str(fresh) for a in args]
    subprocess.run(fresh_args, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    _assert_same_store(store, fresh)  # the manifests, chunk inventories included, are equal too
    _assert_inventory_matches(store)
    return killed_at


def _assert_inventory_matches(store) -> None:
    """Every stored chunk of the resumed store is listed with its exact size and crc32, and reads verified."""
    from ms2core.data.integrity import audit_inventory
    from ms2core.data.store import DatasetStore

    dataset = DatasetStore.open(store, require_complete=True)
    assert list(audit_inventory(zarr_io.open_store(str(store), read_only=True), dataset.manifest.inventory)) == []
    chunk_files = {str(p.relative_to(store)) for p in Path(store).rglob("*") if p.is_file() and p.name != "zarr.json"}
    listed = {f"{path}/{chunk}" for path, objects in dataset.manifest.inventory.items() for chunk in objects}
    assert chunk_files == listed
    for key in dataset.arrays:
        dataset.read(key)


def test_kill_9_mid_render_then_rerun_equals_an_uninterrupted_run(tmp_path):
    demo = fake_demo_pair(tmp_path / "big.h5", n_episodes=24, steps=(10, 20))
    store = tmp_path / "killed.zarr"
    args = [sys.executable, "-m", "flows.cli", "render", str(demo), "--store", str(store), "--workers", "0",
            "--obs-mode", "rgbd", "--set", "options.backend=fake", "--set", "options.camera_size=[96,96]",
            "--set", "episodes_per_range=2", "--set", "progress=false"]
    killed_at = kill_resume_and_compare(args, store, tmp_path / "fresh.zarr", min_committed=4, timeout_s=120)
    committed_before = zarr_io.read_manifest(zarr.open_group(store, mode="r")).episodes[:killed_at]
    assert all(e.committed for e in committed_before)


def test_cli_render_and_errors(tmp_path, demo):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "flows.cli", "render", str(demo), "--workers", "0", "--output-dir",
            str(tmp_path / "d"), "--config", str(REPO / "configs/render/pointcloud.yaml"),
            "--set", "options.backend=fake", "--set", "progress=false"]
    ok = subprocess.run(base, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "rendered" in ok.stdout and "5 episodes" in ok.stdout
    again = subprocess.run(base, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert "up to date" in again.stdout
    bad = subprocess.run(base + ["--set", "options.obs.n_points=-1"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "n_points" in bad.stderr


def test_segmentation_and_channel_selection_reach_the_store(demo, tmp_path):
    cfg = _cfg(demo, tmp_path, obs=dict(obs_mode="rgbd", include_seg=True, include_depth=False),
               options=dict(camera_size=(16, 12)))
    root = zarr.open_group(render.run(cfg).store, mode="r")
    assert sorted(root["data/obs"].array_keys()) == ["rgb", "seg", "state"]
    assert root["data/obs/seg"].dtype == bool and root["data/obs/seg"].shape[1:] == (12, 16, 2)
    assert root["data/obs/seg"][:].any()  # the fake robot (TCP) is marked
    pc = _cfg(demo, tmp_path, obs=dict(obs_mode="pointcloud", n_points=32, include_seg=True, include_rgb=False))
    pc_root = zarr.open_group(render.run(pc).store, mode="r")
    assert sorted(pc_root["data/obs"].array_keys()) == ["seg", "state", "xyz"]


def test_xyz_mantissa_rounding_is_bounded_and_optional(demo, tmp_path):
    exact = render.run(_cfg(demo, tmp_path, options=dict(xyz_keep_bits=None)))
    rounded = render.run(_cfg(demo, tmp_path))  # default: 16 mantissa bits kept
    assert exact.store != rounded.store  # a different option is a different dataset version
    a = zarr.open_group(exact.store, mode="r")["data/obs/xyz"][:]
    b = zarr.open_group(rounded.store, mode="r")["data/obs/xyz"][:]
    assert b.dtype == np.float32 and not np.array_equal(a, b)
    assert np.all(np.abs(b - a) <= np.abs(a) * 2.0 ** -17 + 1e-30)
    assert not (b.view(np.uint32) & np.uint32((1 << 7) - 1)).any()  # the 7 dropped bits are zero
    # Everything else is untouched.
    ra, rb = _read_all(exact.store), _read_all(rounded.store)
    for key in ra:
        if key != "data/obs/xyz":
            np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)


def test_round_mantissa_rounds_to_nearest_and_rejects_other_dtypes():
    x = np.array([1.0 + 2.0 ** -20, 1.0 + 2.0 ** -17 + 2.0 ** -21, -3.0], np.float32)
    np.testing.assert_array_equal(zarr_io.round_mantissa(x, 16), np.array([1.0, 1.0 + 2.0 ** -16, -3.0], np.float32))
    with pytest.raises(TypeError, match="float64"):
        zarr_io.round_mantissa(x.astype(np.float64), 16)


def test_a_render_killed_as_it_creates_its_store_leaves_a_manifest_and_resumes(demo, tmp_path, monkeypatch):
    """The store's first write already holds the manifest: a kill right after it (here: creating the staging
    group fails) leaves a store that the same render resumes, not one without a manifest that it refuses."""
    real = zarr.Group.create_group

    def killed(self, name, **kw):
        if name == render.STAGING:
            raise KeyboardInterrupt("killed while creating the store")
        return real(self, name, **kw)

    monkeypatch.setattr(zarr.Group, "create_group", killed)
    with pytest.raises(KeyboardInterrupt):
        render.run(_cfg(demo, tmp_path))
    monkeypatch.setattr(zarr.Group, "create_group", real)
    [store] = list((tmp_path / "datasets").rglob("*.zarr"))
    manifest = zarr_io.read_manifest(zarr.open_group(str(store), mode="r"))
    assert manifest is not None and manifest.n_committed_episodes == 0
    resumed = render.run(_cfg(demo, tmp_path))
    assert resumed.store == str(store) and zarr_io.read_manifest(zarr.open_group(str(store), mode="r")).complete
