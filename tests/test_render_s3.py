"""Render into an S3-compatible object store (moto in server mode on 127.0.0.1, started here) via fsspec."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from ms2core import zarr_io  # noqa: E402
from pipelines import export, render  # noqa: E402
from storage_schemas.dataset import ExportConfig, RenderConfig  # noqa: E402
from tests.demo_fixtures import fake_demo_pair  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_options(s3_endpoint):
    import boto3

    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "us-east-1"}}
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    if "ms2-datasets" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="ms2-datasets")
    return options


def test_render_to_s3_resume_and_export(tmp_path, s3_options):
    demo = fake_demo_pair(tmp_path / "pick.h5", n_episodes=4)
    cfg = RenderConfig.model_validate(dict(
        source=str(demo), output_dir="s3://ms2-datasets/PickCube-v0", storage_options=s3_options,
        options=dict(backend="fake", obs=dict(obs_mode="pointcloud", n_points=32)),
        workers=0, episodes_per_range=2, progress=False))
    result = render.run(cfg)
    assert result.store.startswith("s3://ms2-datasets/PickCube-v0/pick.pointcloud.")
    root = zarr_io.open_dataset(result.store, s3_options)
    manifest = zarr_io.read_manifest(root)
    assert manifest.complete and "storage_options" not in str(manifest.model_dump())  # no secrets stored
    assert "testing" not in str(dict(root.attrs))
    ends = zarr_io.read_episode_ends(root)
    assert len(ends) == 4 and root["data/obs/xyz"].shape == (ends[-1], 32, 3)
    assert "ranges" not in root
    # The same render into a local directory holds the same bytes.
    local = render.run(cfg.model_copy(update={"output_dir": str(tmp_path / "local"), "storage_options": {}}))
    local_root = zarr.open_group(local.store, mode="r")
    for key, arr in zarr_io.list_arrays(local_root["data"]).items():
        np.testing.assert_array_equal(root["data"][key][:], arr[:], err_msg=key)
    assert render.run(cfg).nothing_to_do
    out = export.run(ExportConfig(store=result.store, storage_options=s3_options, output=str(tmp_path / "x.h5")))
    assert out.n_episodes == 4


@pytest.fixture
def s3_env(s3_endpoint, s3_options, monkeypatch, tmp_path):
    """Endpoint and credentials the way a scaled-out process gets them: AWS_* variables only."""
    for name, value in dict(AWS_ENDPOINT_URL=s3_endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                            AWS_DEFAULT_REGION="us-east-1").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "ms2data"))
    monkeypatch.setenv("MS2FLOW_DATASETS_URL", "s3://ms2-datasets/env-configured")


def test_default_output_is_the_datasets_url_and_bc_reads_it_from_s3(tmp_path, s3_env):
    from ms2core.data import DemoDataset, open_demo_store

    demo = fake_demo_pair(tmp_path / "pick.h5", n_episodes=3)
    cfg = RenderConfig.model_validate(dict(source=str(demo), options=dict(backend="fake", obs=dict(obs_mode="state")),
                                           workers=0, progress=False))
    result = render.run(cfg)  # no output_dir, no storage_options: MS2FLOW_DATASETS_URL + AWS_* decide
    assert result.store.startswith("s3://ms2-datasets/env-configured/PickCube-v0/pick.state.")
    store = open_demo_store(result.store)
    assert store.path == result.store and store.num_episodes == 3 and store.obs_keys == ["state"]
    local = render.run(cfg.model_copy(update={"output_dir": str(tmp_path / "local")}))
    expected = open_demo_store(local.store)
    np.testing.assert_array_equal(store.arrays["actions"][:], expected.arrays["actions"][:])
    dataset = DemoDataset([result.store], mode="ram", device="cpu")
    assert dataset.num_rows == result.n_rows
    assert dataset.sample(0, 4, seed=0).actions.shape == (4, expected.arrays["actions"].shape[1])


def test_a_missing_s3_dataset_is_a_dataset_error(s3_env):
    from ms2core.data import open_demo_store
    from ms2core.errors import DatasetError

    with pytest.raises(DatasetError, match="s3://ms2-datasets/nothing-here.zarr does not exist"):
        open_demo_store("s3://ms2-datasets/nothing-here.zarr")


def test_an_unreachable_object_store_is_a_dataset_error(monkeypatch):
    from ms2core.data import open_demo_store
    from ms2core.errors import DatasetError

    port = _free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(DatasetError, match=f"object store at http://127.0.0.1:{port} cannot be reached"):
        open_demo_store("s3://ms2-datasets/x.zarr")


def test_a_store_rewritten_elsewhere_is_listed_afresh_when_opened_again(s3_env):
    """fsspec keeps one S3 filesystem per thread, with a cache of directory listings: a process that had
    opened a store kept listing the arrays it had then, though another thread or process (a render's
    commits) had written new ones since (the services tier's resumed render listed no data/ arrays)."""
    from concurrent.futures import ThreadPoolExecutor

    from ms2core.data.store import DatasetStore, synthetic_manifest, write_dataset

    url = "s3://ms2-datasets/relisted.zarr"
    actions = np.zeros((3, 4), np.float32)
    state = np.ones((3, 10), np.float32)
    manifest = synthetic_manifest("PickCube-v0", "pd_ee_delta_pose", "state", [3], source="test")
    with ThreadPoolExecutor(1) as writer:  # another thread: its own filesystem instance, like another process
        writer.submit(write_dataset, url, manifest, {"actions": actions}, [3]).result()
        assert set(DatasetStore.open(url).arrays) == {"actions"}
        writer.submit(write_dataset, url, manifest, {"actions": actions, "obs/state": state}, [3]).result()
    reopened = DatasetStore.open(url)
    assert set(reopened.arrays) == {"actions", "obs/state"}
    np.testing.assert_array_equal(reopened.read("obs/state"), state)
