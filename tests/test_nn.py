"""Networks and heads: shapes per obs mode, key selection, PointNet architecture, hand-checked log-probs."""

import math

import pytest
import torch

from ms2core.errors import ConfigError
from ms2core.nn import build_policy
from ms2core.nn.encoders import CNNEncoder, PointNetEncoder, StateEncoder
from ms2core.nn.heads import ActionDist, gaussian_log_prob, tanh_gaussian_log_prob
from storage_schemas.training import NetConfig


def pc_obs(b=2, n=16, s=9):
    return {"xyz": torch.randn(b, n, 3), "rgb": torch.randint(0, 256, (b, n, 3), dtype=torch.uint8),
            "state": torch.randn(b, s)}


def test_auto_kind_picks_encoder_per_obs_mode():
    cfg = NetConfig()
    assert isinstance(build_policy(cfg, "state", {"state": (9,)}, 7).encoder, StateEncoder)
    pn = build_policy(cfg, "pointcloud", {"xyz": (16, 3), "rgb": (16, 3), "state": (9,)}, 7)
    assert isinstance(pn.encoder, PointNetEncoder)
    cnn = build_policy(cfg, "rgbd", {"rgb": (64, 64, 6), "depth": (64, 64, 2), "state": (9,)}, 7)
    assert isinstance(cnn.encoder, CNNEncoder)


def test_pointnet_has_maniskill2_learn_layer_widths_and_output():
    policy = build_policy(NetConfig(), "pointcloud", {"xyz": (16, 3), "rgb": (16, 3), "state": (9,)}, 7)
    linears = [m for m in policy.encoder.point_mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 64), (64, 128), (128, 512)]
    head_in = [m for m in policy.encoder.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in head_in] == [(512 + 9, 256), (256, 256)]
    assert policy(pc_obs()).shape == (2, 7)


def test_pointnet_is_permutation_invariant_and_uses_colour():
    policy = build_policy(NetConfig(), "pointcloud", {"xyz": (16, 3), "rgb": (16, 3), "state": (9,)}, 7)
    obs = pc_obs()
    perm = torch.randperm(16)
    shuffled = {**obs, "xyz": obs["xyz"][:, perm], "rgb": obs["rgb"][:, perm]}
    torch.testing.assert_close(policy(obs), policy(shuffled))
    recoloured = {**obs, "rgb": 255 - obs["rgb"]}
    assert not torch.allclose(policy(obs), policy(recoloured))


@pytest.mark.parametrize("kind", ["nature", "impala"])
def test_cnn_fuses_cameras(kind):
    cfg = NetConfig(cnn_kind=kind)
    policy = build_policy(cfg, "rgbd", {"rgb": (64, 64, 6), "depth": (64, 64, 2), "state": (9,)}, 4)
    obs = {"rgb": torch.randint(0, 256, (3, 64, 64, 6), dtype=torch.uint8), "depth": torch.rand(3, 64, 64, 2),
           "state": torch.randn(3, 9)}
    out = policy(obs)
    assert out.shape == (3, 4)
    second_camera_changed = {**obs, "depth": obs["depth"].clone()}
    second_camera_changed["depth"][..., 1] += 0.5
    assert not torch.allclose(out, policy(second_camera_changed))


def test_missing_obs_keys_name_the_keys():
    with pytest.raises(ConfigError, match="xyz"):
        build_policy(NetConfig(backbone="pointnet"), "state", {"state": (9,)}, 7)


def test_state_normalizer_uses_dataset_stats():
    policy = build_policy(NetConfig(), "state", {"state": (2,)}, 1)
    policy.set_state_stats([1.0, 2.0], [2.0, 0.0])  # std floored at 1e-2
    norm = policy.encoder.normalizer(torch.tensor([[3.0, 2.0]]))
    torch.testing.assert_close(norm, torch.tensor([[1.0, 0.0]]))


def test_gaussian_log_prob_matches_hand_computation():
    # N(0.5; 0, 1) + N(-1; 1, e^-1... ) computed by hand
    x, mean, log_std = torch.tensor([0.5, -1.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.0, math.log(2.0)])
    expected = (-0.5 * 0.25 - 0.5 * math.log(2 * math.pi)) + (-0.5 * 1.0 - math.log(2.0) - 0.5 * math.log(2 * math.pi))
    assert gaussian_log_prob(x, mean, log_std).item() == pytest.approx(expected, abs=1e-6)


def test_tanh_gaussian_log_prob_matches_hand_computation():
    u = torch.tensor([0.3, -1.2])
    mean, log_std = torch.tensor([0.1, -1.0]), torch.tensor([-0.5, 0.2])
    gauss = sum(-0.5 * ((ui - mi) / math.exp(si)) ** 2 - si - 0.5 * math.log(2 * math.pi)
                for ui, mi, si in zip(u.tolist(), mean.tolist(), log_std.tolist()))
    jac = sum(math.log(1 - math.tanh(ui) ** 2) for ui in u.tolist())
    assert tanh_gaussian_log_prob(u, mean, log_std).item() == pytest.approx(gauss - jac, abs=1e-5)


def test_heads_deterministic_gaussian_tanh():
    obs = {"state": torch.randn(5, 9)}
    det = build_policy(NetConfig(head="deterministic"), "state", {"state": (9,)}, 3)
    assert det.deterministic and torch.equal(det.act(obs, "mean"), det.act(obs, "sample"))
    gauss = build_policy(NetConfig(head="gaussian"), "state", {"state": (9,)}, 3)
    dist = gauss(obs)
    assert isinstance(dist, ActionDist) and not dist.squashed
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(gauss.act(obs, "sample", g), gauss.act(obs, "mean"))
    tanh = build_policy(NetConfig(head="tanh_gaussian"), "state", {"state": (9,)}, 3)
    sample = tanh.act(obs, "sample", torch.Generator().manual_seed(1))
    assert sample.abs().max() < 1
    action, logp = tanh(obs).rsample_with_log_prob()
    assert action.shape == (5, 3) and logp.shape == (5,)
    torch.testing.assert_close(tanh(obs).log_prob(action), logp, atol=1e-3, rtol=1e-3)


def test_bad_network_config_values_are_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="hidden_sizes"):
        NetConfig(hidden_sizes=[256, 0])
    with pytest.raises(ValidationError):
        NetConfig(backbone="transformer")


def test_images_too_small_for_the_nature_cnn_are_a_config_error():
    with pytest.raises(ConfigError, match="impala"):
        build_policy(NetConfig(cnn_kind="nature"), "rgbd", {"rgb": (24, 24, 3), "depth": (24, 24, 1), "state": (3,)}, 2)
    assert build_policy(NetConfig(cnn_kind="impala"), "rgbd", {"rgb": (24, 24, 3), "depth": (24, 24, 1), "state": (3,)}, 2)
