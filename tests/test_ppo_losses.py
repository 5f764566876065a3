"""PPO clipped surrogate, approximate KL and Gaussian log-probs against hand-computed numbers."""

import math

import pytest
import torch

from ms2core.nn.heads import gaussian_log_prob
from ms2core.algos.ppo import normalize, ppo_policy_loss, value_loss


def test_clipped_surrogate_and_kl_by_hand():
    ratios = torch.tensor([1.5, 0.5, 1.1])
    new_lp, old_lp = torch.log(ratios), torch.zeros(3)
    adv = torch.tensor([2.0, -1.0, 3.0])
    out = ppo_policy_loss(new_lp, old_lp, adv, clip_ratio=0.2)
    # min(1.5*2, 1.2*2)=2.4 ; min(0.5*-1, 0.8*-1)=-0.8 ; min(1.1*3, 1.1*3)=3.3 -> loss = -(4.9/3)
    assert out.loss.item() == pytest.approx(-4.9 / 3, rel=1e-6)
    kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5)) + (0.1 - math.log(1.1))) / 3  # = 0.0974573
    assert out.approx_kl.item() == pytest.approx(kl, rel=1e-5)
    assert out.approx_kl.item() == pytest.approx(0.0974573, rel=1e-5)
    assert out.clip_fraction.item() == pytest.approx(2 / 3)


def test_clipped_ratio_passes_no_gradient():
    new_lp = torch.log(torch.tensor([1.5])).requires_grad_()
    ppo_policy_loss(new_lp, torch.zeros(1), torch.tensor([2.0]), 0.2).loss.backward()
    assert new_lp.grad.item() == 0.0  # r > 1+eps with A > 0: the clipped branch is the min


def test_unclipped_gradient_is_minus_ratio_times_advantage():
    new_lp = torch.log(torch.tensor([1.1])).requires_grad_()
    ppo_policy_loss(new_lp, torch.zeros(1), torch.tensor([3.0]), 0.2).loss.backward()
    assert new_lp.grad.item() == pytest.approx(-3.3, rel=1e-5)  # d(-r A)/d log r = -r A


def test_value_loss_plain_and_clipped():
    v, R, old = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.0])
    assert value_loss(v, R).item() == pytest.approx(2.0)  # 0.5 * 2^2
    # clipped prediction 0.5 has error 0.25; max with the unclipped 4.0 keeps 4.0
    assert value_loss(v, R, old, value_clip=0.5).item() == pytest.approx(2.0)
    v2, R2 = torch.tensor([2.0]), torch.tensor([3.0])  # unclipped err 1, clipped 0.5 -> err 6.25
    assert value_loss(v2, R2, old, value_clip=0.5).item() == pytest.approx(0.5 * 6.25)


def test_gaussian_log_prob_by_hand():
    # x=1, mean=0, std=e^0.5: -0.5*(1/e) - 0.5 - 0.5*log(2 pi)
    lp = gaussian_log_prob(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[0.5]]))
    assert lp.item() == pytest.approx(-0.5 / math.e - 0.5 - 0.5 * math.log(2 * math.pi), rel=1e-6)
    # sums over action dims
    lp2 = gaussian_log_prob(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2))
    assert lp2.item() == pytest.approx(-math.log(2 * math.pi), rel=1e-6)


def test_advantage_normalisation():
    out = normalize(torch.tensor([1.0, 2.0, 3.0]))
    assert out.mean().item() == pytest.approx(0.0, abs=1e-6) and out.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)
