"""scripts/ship_dataset.py: a point-cloud store packed into size-capped parts unpacks to the same dataset
(xyz within quantum / 2 as a multiset per frame, everything else bit-exact); missing parts are refused."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.flows.conftest import build_fake_dataset

ROOT = Path(__file__).resolve().parents[1]


def _ship():
    spec = importlib.util.spec_from_file_location("ship_dataset", ROOT / "scripts" / "ship_dataset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _canonical(q: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((rgb[:, 2], rgb[:, 1], rgb[:, 0], q[:, 2], q[:, 1], q[:, 0]))
    return q[order], rgb[order]


def test_encode_decode_is_a_point_permutation_within_half_a_quantum():
    ship = _ship()
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-0.7, 0.7, (5, 300, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (5, 300, 3), dtype=np.uint8)
    origin, deltas, rgb_planar = ship.encode_points(xyz, rgb, 0.001)
    assert deltas.dtype == np.int16 and deltas.shape == (5, 3, 300)
    back, rgb_back = ship.decode_points(origin, deltas, rgb_planar, 0.001)
    for t in range(5):
        qa = np.rint((xyz[t] - origin) / 0.001).astype(np.int64)
        qb = np.rint((back[t] - origin) / 0.001).astype(np.int64)
        a, b = _canonical(qa, rgb[t]), _canonical(qb, rgb_back[t])
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.abs(np.sort(back, axis=1) - np.sort(xyz, axis=1)).max() <= 0.0005 + 1e-6
    assert not np.array_equal(back, xyz)  # the order changed: the codec is not the identity


def test_pack_unpack_round_trip_through_several_parts(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    ship = _ship()
    store = build_fake_dataset("pointcloud", num_episodes=4, n_points=64)
    parts = ship.pack([store], tmp_path / "ship", part_mb=0.0005, quantum=0.001, level=3)
    assert len(parts) >= 2
    with pytest.raises(SystemExit, match="parts given"):
        ship.unpack(parts[:-1], tmp_path / "out")
    (out,) = ship.unpack(parts, tmp_path / "out")
    a, b = zarr.open_group(store, mode="r"), zarr.open_group(str(out), mode="r")
    for name, arr in a.members(max_depth=None):
        if isinstance(arr, zarr.Array) and name not in ("data/obs/xyz", "data/obs/rgb"):
            assert np.array_equal(arr[:], b[name][:]), name
    manifest_a, manifest_b = dict(a.attrs["ms2flow"]), dict(b.attrs["ms2flow"])
    assert manifest_b.pop("inventory").keys() == manifest_a.pop("inventory").keys()  # new xyz bytes, same arrays
    assert manifest_b == manifest_a and b.attrs["transport"]["xyz_quantum_m"] == 0.001
    assert "ms2flow_validation" not in b.attrs  # new bytes: validated again, never inherited
    xa, xb = a["data/obs/xyz"][:], b["data/obs/xyz"][:]
    assert xa.shape == xb.shape
    assert np.abs(np.sort(xa, axis=1) - np.sort(xb, axis=1)).max() <= 0.0005 + 1e-6

    from ms2core.data.demo_dataset import open_demo_store

    assert open_demo_store(out).num_rows == open_demo_store(store).num_rows
    with pytest.raises(SystemExit, match="not empty"):
        ship.pack([store], tmp_path / "ship", part_mb=1, quantum=0.001, level=3)
