"""DAPG: weight schedule by hand, demo NLL, the Zarr demo reader and its errors."""

import math

import numpy as np
import pytest
import torch

from ms2core.algos._demos import check_demo_shapes, load_demo_transitions, write_demo_zarr
from ms2core.nn.actors import GaussianActor, MLPBackbone
from ms2core.algos.dapg import dapg_weight, demo_nll
from ms2core.errors import DatasetError


def test_dapg_weight_schedule_by_hand():
    assert dapg_weight(0.1, 0.995, 0) == pytest.approx(0.1)
    assert dapg_weight(0.1, 0.995, 2) == pytest.approx(0.0990025)
    assert dapg_weight(2.0, 0.5, 3) == pytest.approx(0.25)


def test_demo_nll_is_gaussian_nll():
    actor = GaussianActor(MLPBackbone({"state": 2}, [4]), action_dim=1, init_log_std=0.0)
    with torch.no_grad():
        actor.mean_head.weight.zero_(), actor.mean_head.bias.fill_(0.5)
    nll = demo_nll(actor, {"state": torch.zeros(3, 2)}, torch.full((3, 1), 1.5))
    assert nll.item() == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi))  # (1.5 - 0.5)^2 / 2 + log sqrt(2 pi)


def test_demo_nll_can_leave_the_std_to_ppo():
    """dapg.demo_term_trains_std=false: the same loss value, no gradient on log_std, the same gradient on the mean."""
    grads = {}
    for trains_std in (True, False):
        torch.manual_seed(0)
        actor = GaussianActor(MLPBackbone({"state": 2}, [4]), action_dim=2, init_log_std=-1.0)
        nll = demo_nll(actor, {"state": torch.randn(8, 2)}, torch.rand(8, 2) * 2 - 1, trains_std)
        nll.backward()
        grads[trains_std] = (nll.item(), actor.log_std.grad, actor.mean_head.weight.grad.clone())
    assert grads[True][0] == pytest.approx(grads[False][0])
    assert grads[True][1].abs().sum() > 0 and (grads[False][1] is None or grads[False][1].abs().sum() == 0)
    torch.testing.assert_close(grads[True][2], grads[False][2])


def _episodes(n=3, length=4, state_dim=5, action_dim=2):
    rng = np.random.default_rng(0)
    return [{"obs/state": rng.normal(size=(length, state_dim)).astype(np.float32),
             "actions": rng.uniform(-1, 1, (length, action_dim)).astype(np.float32),
             "rewards": np.zeros(length, np.float32), "success": np.zeros(length, bool)} for _ in range(n)]


def test_reader_reads_committed_episodes(tmp_path):
    eps = _episodes()
    path = write_demo_zarr(tmp_path / "demos.zarr", eps)
    demos = load_demo_transitions(path, ["state"])
    assert len(demos) == 12 and demos.episode_ends.tolist() == [4, 8, 12]
    np.testing.assert_array_equal(demos.actions[4:8], eps[1]["actions"])
    assert len(load_demo_transitions(path, ["state"], max_episodes=2)) == 8
    assert demos.obs["state"].shape == (12, 5) and demos.actions.shape == (12, 2)


def test_reader_only_sees_committed_rows(tmp_path):
    from ms2core.data.store import DatasetStore, DatasetWriter

    path = write_demo_zarr(tmp_path / "demos.zarr", _episodes())
    manifest = DatasetStore.open(path).manifest.model_copy(update={"n_committed_episodes": 2, "n_committed_rows": 8})
    DatasetWriter(str(path)).commit(manifest, np.array([4, 8, 12]))  # episode 3 uncommitted (rows still on disk)
    assert len(load_demo_transitions(path, ["state"])) == 8


def test_reader_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_demo_transitions(tmp_path / "missing.zarr", ["state"])
    path = write_demo_zarr(tmp_path / "demos.zarr", _episodes())
    with pytest.raises(DatasetError, match="data/obs/xyz"):
        load_demo_transitions(path, ["xyz"])
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    root["meta/episode_ends"] = np.array([4, 4, 12], np.int64)  # behind the writer: the inventory catches it
    with pytest.raises(DatasetError, match="chunk c/0 of meta/episode_ends"):
        load_demo_transitions(path, ["state"])
    from ms2core.data.store import DatasetStore, DatasetWriter

    path = write_demo_zarr(tmp_path / "demos2.zarr", _episodes())
    manifest = DatasetStore.open(path).manifest
    DatasetWriter(str(path)).commit(manifest, np.array([4, 8, 40]))  # a writer that committed past its rows
    with pytest.raises(DatasetError, match="data/actions has 12 rows but 40 are committed"):
        load_demo_transitions(path, ["state"])
    DatasetWriter(str(path)).commit(manifest.model_copy(update={"n_committed_episodes": 0}), np.zeros(0, np.int64))
    with pytest.raises(DatasetError, match="no committed episodes"):
        load_demo_transitions(path, ["state"])


def test_demo_shape_checks(tmp_path):
    demos = load_demo_transitions(write_demo_zarr(tmp_path / "d.zarr", _episodes()), ["state"])
    check_demo_shapes(demos, {"state": (5,)}, ["state"], 2, "d")
    with pytest.raises(DatasetError, match="control mode"):
        check_demo_shapes(demos, {"state": (5,)}, ["state"], 7, "d")
    with pytest.raises(DatasetError, match="shape"):
        check_demo_shapes(demos, {"state": (51,)}, ["state"], 2, "d")
    with pytest.raises(DatasetError, match="lack"):
        check_demo_shapes(demos, {"xyz": (5,)}, ["state"], 2, "d")
