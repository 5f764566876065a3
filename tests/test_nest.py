"""ms2core.nest: nested obs dicts through optree (numpy<->torch, device, dtype, slicing, stacking, concatenation)."""

import numpy as np
import pytest
import torch

from ms2core import nest


def sample(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"xyz": rng.normal(size=(n, 5, 3)).astype(np.float32), "rgb": rng.integers(0, 255, (n, 5, 3), dtype=np.uint8),
            "state": rng.normal(size=(n, 7))}


def test_numpy_torch_round_trip_keeps_values_and_dtypes():
    obs = sample()
    t = nest.to_torch(obs)
    assert t["xyz"].dtype == torch.float32 and t["rgb"].dtype == torch.uint8 and t["state"].dtype == torch.float64
    back = nest.to_numpy(t)
    for k in obs:
        np.testing.assert_array_equal(back[k], obs[k])
        assert back[k].dtype == obs[k].dtype


def test_to_torch_casts_only_floats_and_moves_device():
    t = nest.to_torch(sample(), device="cpu", float_dtype=torch.float16)
    assert t["xyz"].dtype == torch.float16 and t["state"].dtype == torch.float16 and t["rgb"].dtype == torch.uint8
    assert nest.to_device(t, "cpu")["xyz"].device.type == "cpu"


def test_cast_floats_numpy_and_torch():
    cast = nest.cast_floats(sample(), np.float32)
    assert cast["state"].dtype == np.float32 and cast["rgb"].dtype == np.uint8
    cast_t = nest.cast_floats(nest.to_torch(sample()), torch.bfloat16)
    assert cast_t["state"].dtype == torch.bfloat16 and cast_t["rgb"].dtype == torch.uint8


def test_bfloat16_to_numpy_becomes_float32():
    out = nest.to_numpy({"a": torch.ones(2, dtype=torch.bfloat16)})
    assert out["a"].dtype == np.float32


def test_slice_stack_concatenate():
    a, b = sample(4, 0), sample(3, 1)
    sl = nest.slice_nest(a, np.array([3, 1]))
    np.testing.assert_array_equal(sl["state"], a["state"][[3, 1]])
    cat = nest.concatenate([a, b])
    assert nest.batch_size(cat) == 7
    np.testing.assert_array_equal(cat["rgb"][4:], b["rgb"])
    st = nest.stack([nest.slice_nest(a, 0), nest.slice_nest(a, 1)])
    np.testing.assert_array_equal(st["xyz"], a["xyz"][:2])
    tcat = nest.concatenate([nest.to_torch(a), nest.to_torch(b)])
    assert tcat["xyz"].shape == (7, 5, 3)


def test_mismatched_structures_and_sizes_are_errors():
    a = sample()
    with pytest.raises(ValueError, match="structure"):
        nest.concatenate([a, {"xyz": a["xyz"]}])
    with pytest.raises(ValueError, match="empty"):
        nest.stack([])
    with pytest.raises(ValueError, match="batch size"):
        nest.batch_size({"a": np.zeros(2), "b": np.zeros(3)})


def test_nbytes_counts_numpy_and_torch():
    obs = sample(2)
    expected = sum(v.nbytes for v in obs.values())
    assert nest.nbytes(obs) == expected == nest.nbytes(nest.to_torch(obs))
