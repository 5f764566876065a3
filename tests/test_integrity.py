"""Chunk integrity, fault injection on real stores rendered by pipelines.render on the fake env.

Each damaged store (deleted chunk, truncated chunk, flipped bit, deleted shard, no inventory,
incomplete render) must fail ``ms2 validate`` with its code, make ``DatasetStore`` raise a DatasetError
that names the chunk, and make BC training refuse: never zeros, never a codec traceback.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from ms2core.config import load_config
from ms2core.data import DemoDataset
from ms2core.data.integrity import digest, fold_into
from ms2core.data.store import DatasetStore
from ms2core.errors import DatasetError
from pipelines import render, train, validate
from storage_schemas.dataset import MANIFEST_ATTR, RenderConfig
from storage_schemas.training import BCConfig
from storage_schemas.validation import ValidationConfig
from tests.demo_fixtures import fake_demo_pair

REPO = Path(__file__).resolve().parents[1]
ACTIONS_CHUNK = "data/actions/c/0/0"


def _render_cfg(demo: Path, store: Path, obs_mode: str = "state", **options) -> RenderConfig:
    return RenderConfig.model_validate(dict(
        source=str(demo), store=str(store), workers=0, episodes_per_range=2, progress=False,
        options=dict(backend="fake", obs=dict(obs_mode=obs_mode), **options)))


def _validate(store: Path):
    return validate.run(ValidationConfig(path=str(store), progress=False, recheck=True, success_only=False)).report


def _codes(report) -> set[str]:
    return {f.code for f in report.findings if f.severity == "error"}


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """A state store and a sharded rgbd store, rendered and validated once (the record says passed, so a
    training's validation gate lets them through and the chunk checks are what must refuse them)."""
    base = tmp_path_factory.mktemp("integrity")
    demo = fake_demo_pair(base / "demos" / "pick.h5", n_episodes=5)
    state = render.run(_render_cfg(demo, base / "state.zarr")).store
    rgbd = render.run(_render_cfg(demo, base / "rgbd.zarr", "rgbd", camera_size=(96, 96), shard_min_chunks=2)).store
    for store in (state, rgbd):
        assert _validate(Path(store)).status == "passed"
    return {"demo": demo, "state": Path(state), "rgbd": Path(rgbd)}


@pytest.fixture
def copy(templates, tmp_path):
    def make(name: str = "state") -> Path:
        target = tmp_path / templates[name].name
        shutil.copytree(templates[name], target)
        return target

    return make


def _bc_cfg(store: Path, tmp_path: Path, obs: str = "state") -> BCConfig:
    return load_config(BCConfig, REPO / "configs" / "bc" / f"pickcube_{obs}.yaml", [
        f"dataset.paths=[{store}]", "train.num_steps=2", "train.batch_size=4", "run.device=cpu",
        "run.torch_threads=1", "run.eval_episodes=0", f"run.run_dir={tmp_path / 'run'}", "env.backend=fake"])


def _refused(store: Path, tmp_path: Path, match: str, obs: str = "state") -> None:
    """BC's dataset (every committed row read through DatasetStore) and BC training both refuse the store.
    Training may refuse earlier (a validation gate), so only the dataset's message is matched."""
    with pytest.raises(DatasetError, match=match):
        DemoDataset([store], mode="ram")
    with pytest.raises(DatasetError):
        train.run(_bc_cfg(store, tmp_path, obs), "bc", progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "final.pt").exists()


def test_clean_store_has_a_complete_inventory_and_reads_back(templates):
    ds = DatasetStore.open(templates["state"])
    inventory = ds.manifest.inventory
    assert set(inventory) == {f"data/{k}" for k in ds.arrays} | {"meta/episode_ends"}
    raw = (templates["state"] / ACTIONS_CHUNK).read_bytes()
    assert inventory["data/actions"]["c/0/0"] == digest(raw)
    assert ds.read_rows(["actions", "obs/state"], np.array([3, 0, 3]))["actions"].shape == (3, 7)
    sharded = DatasetStore.open(templates["rgbd"])
    assert sharded.arrays["obs/depth"].shards is not None
    assert set(sharded.manifest.inventory["data/obs/depth"]) == {"c/0/0/0/0"}  # one shard object


def test_deleted_chunk(copy, tmp_path):
    store = copy()
    (store / ACTIONS_CHUNK).unlink()
    report = _validate(store)
    assert report.status == "failed" and "missing_chunk" in _codes(report)
    finding = next(f for f in report.findings if f.code == "missing_chunk")
    assert finding.key == "actions" and finding.value == "c/0/0" and finding.row == 0 and finding.episode == 0
    assert zarr.open_group(str(store), mode="r")["data/actions"][:].max() == 0  # what zarr alone would return
    with pytest.raises(DatasetError, match="chunk c/0/0 of data/actions is missing"):
        DatasetStore.open(store).read_rows(["actions"], np.array([1, 2]))
    _refused(store, tmp_path, r"chunk c/0/0 of data/actions is missing; the inventory lists \d+ bytes")


def test_truncated_chunk(copy, tmp_path):
    store = copy()
    chunk = store / ACTIONS_CHUNK
    chunk.write_bytes(chunk.read_bytes()[:-7])
    report = _validate(store)
    assert {"chunk_size"} <= _codes(report)
    with pytest.raises(DatasetError, match="chunk c/0/0 of data/actions has"):
        DatasetStore.open(store).read("actions", 0, 3)
    _refused(store, tmp_path, r"chunk c/0/0 of data/actions has \d+ bytes \(truncated or extended\)")


def test_bit_flipped_chunk(copy, tmp_path):
    store = copy()
    chunk = store / ACTIONS_CHUNK
    blob = bytearray(chunk.read_bytes())
    blob[len(blob) // 2] ^= 0x10
    chunk.write_bytes(bytes(blob))
    report = _validate(store)
    assert "chunk_checksum" in _codes(report)
    with pytest.raises(DatasetError, match="chunk c/0/0 of data/actions has crc32"):
        DatasetStore.open(store).read("actions")
    _refused(store, tmp_path, r"chunk c/0/0 of data/actions has crc32 [0-9a-f]{8} \(its bytes were altered\)")


def test_deleted_shard(copy, tmp_path):
    store = copy("rgbd")
    (store / "data/obs/depth/c/0/0/0/0").unlink()
    report = _validate(store)
    assert "missing_chunk" in _codes(report)
    assert next(f for f in report.findings if f.code == "missing_chunk").key == "obs/depth"
    with pytest.raises(DatasetError, match="chunk c/0/0/0/0 of data/obs/depth is missing"):
        DatasetStore.open(store).read_rows(["obs/depth"], np.array([5]))
    _refused(store, tmp_path, "chunk c/0/0/0/0 of data/obs/depth is missing", obs="rgbd")


def _strip_inventory(store: Path) -> None:
    root = zarr.open_group(str(store), mode="r+")
    raw = dict(root.attrs[MANIFEST_ATTR])
    raw.pop("inventory")  # what a store written before inventories holds
    root.attrs.update({MANIFEST_ATTR: raw})


def test_store_without_inventory_is_refused_unless_forced(copy, tmp_path):
    store = copy()
    _strip_inventory(store)
    report = _validate(store)
    assert "no_inventory" in _codes(report)
    with pytest.raises(DatasetError, match="re-render it"):
        DatasetStore.open(store)
    _refused(store, tmp_path, "has no chunk inventory")
    forced = DatasetStore.open(store, allow_unverified=True)
    assert not forced.verified and forced.read("actions").shape == (forced.n_rows, 7)


def test_undecodable_chunk_of_a_forced_store_is_a_dataset_error_not_a_codec_traceback(copy):
    store = copy()
    _strip_inventory(store)
    (store / ACTIONS_CHUNK).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DatasetError, match=r"rows 0-\d+ of data/actions cannot be decoded"):
        DemoDataset([store], mode="ram", force=True)


def test_incomplete_store(templates, tmp_path, monkeypatch):
    store = tmp_path / "half.zarr"
    real_commit, calls = render._commit_range, {"n": 0}

    def commit_then_die(writer, manifest, report):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_commit(writer, manifest, report)

    monkeypatch.setattr(render, "_commit_range", commit_then_die)
    with pytest.raises(DatasetError):
        render.run(_render_cfg(templates["demo"], store))
    report = _validate(store)
    finding = next(f for f in report.findings if f.code == "incomplete")
    assert finding.severity == "error" and report.status == "failed" and "2 of 5" in finding.message
    assert DatasetStore.open(store).n_episodes == 2  # committed episodes only, verified
    _refused(store, tmp_path, "incomplete: 2 of 5 episodes are committed")
    monkeypatch.setattr(render, "_commit_range", real_commit)
    render.run(_render_cfg(templates["demo"], store))  # resuming completes it, with a full inventory
    assert _validate(store).status == "passed"
    assert DatasetStore.open(store, require_complete=True).manifest.inventory == \
        DatasetStore.open(templates["state"]).manifest.inventory


def test_chunk_written_behind_the_inventory_is_refused(copy):
    store = copy()
    inventory = DatasetStore.open(store).manifest.inventory
    root = zarr.open_group(str(store), mode="r+")
    raw = dict(root.attrs[MANIFEST_ATTR])
    raw["inventory"] = {p: {c: o.model_dump() for c, o in objs.items()}
                        for p, objs in fold_into(inventory, [("del", ACTIONS_CHUNK, None)]).items()}
    root.attrs.update({MANIFEST_ATTR: raw})
    assert "uninventoried_chunk" in _codes(_validate(store))
    with pytest.raises(DatasetError, match="c/0/0 of data/actions is not in the store's inventory"):
        DatasetStore.open(store).read("actions")


def test_cli_training_on_a_damaged_store_is_one_paragraph_and_exit_2(copy, tmp_path):
    store = copy()
    blob = bytearray((store / ACTIONS_CHUNK).read_bytes())
    blob[-3] ^= 0x01
    (store / ACTIONS_CHUNK).write_bytes(bytes(blob))
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", "bc", "--config", str(REPO / "configs/bc/pickcube_state.yaml"),
         "--set", f"dataset.paths=[{store}]", "--set", "train.num_steps=2", "--set", "run.eval_episodes=0",
         "--set", "env.backend=fake", "--set", f"run.run_dir={tmp_path / 'run'}", "--device", "cpu"],
        capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    message = " ".join(out.stderr.split())  # the CLI may wrap lines (issue 17 item 9)
    assert "Traceback" not in message and "chunk c/0/0 of data/actions has crc32" in message
    out = subprocess.run([sys.executable, "-m", "flows.cli", "validate", str(store), "--recheck", "--any-outcome"],
                         capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                         timeout=300)
    assert out.returncode != 0 and "chunk_checksum" in out.stdout + out.stderr and "Traceback" not in out.stderr
