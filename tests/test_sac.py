"""SAC: tanh-Gaussian log-prob, soft target, actor and alpha losses by hand; n-step replay; a tiny training run."""

import math

import numpy as np
import pytest
import torch

from ms2core.nn.actors import MLPBackbone, TanhGaussianActor
from ms2core.nn.heads import LOG_STD_MAX, log_one_minus_tanh_sq, tanh_gaussian_log_prob
from ms2core.algos.sac import sac_actor_loss, sac_alpha_loss, sac_critic_target


def test_tanh_gaussian_log_prob_by_hand():
    # u = 0.5, N(0, 1): log N = -0.125 - 0.5 log(2 pi) = -1.0439385; log(1 - tanh(0.5)^2) = log(0.7864477) = -0.2402290
    lp = tanh_gaussian_log_prob(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.zeros(1, 1))
    assert lp.item() == pytest.approx(-1.0439385 + 0.2402290, abs=1e-6)
    assert lp.item() == pytest.approx(-0.8037095, abs=1e-6)


def test_change_of_variables_term_is_stable_where_tanh_saturates():
    u = torch.tensor([20.0, -20.0])
    naive = torch.log(1 - torch.tanh(u) ** 2)
    assert torch.isinf(naive).all()  # float32 tanh(20) == 1 exactly
    stable = log_one_minus_tanh_sq(u)
    expected = 2 * (math.log(2) - 20.0)  # log(4 e^{-40} / (1 + e^{-40})^2)
    np.testing.assert_allclose(stable.numpy(), [expected, expected], rtol=1e-6)


def test_tanh_gaussian_density_integrates_to_one():
    # integrate pi(a) over a in (-1, 1) by the trapezoid rule: the Jacobian term makes it a density
    a = torch.linspace(-0.999999, 0.999999, 200001, dtype=torch.float64)[:, None]
    u = torch.atanh(a)
    mean, log_std = torch.full_like(u, 0.3), torch.full_like(u, -0.2)
    dens = torch.exp(tanh_gaussian_log_prob(u, mean, log_std))
    assert torch.trapezoid(dens, a[:, 0]).item() == pytest.approx(1.0, abs=2e-3)


def test_actor_sample_matches_log_prob_and_bounds():
    torch.manual_seed(0)
    actor = TanhGaussianActor(MLPBackbone({"state": 3}, [8], "relu"), action_dim=2)
    obs = {"state": torch.randn(5, 3)}
    a, lp = actor.sample(obs)
    assert a.abs().max() <= 1 and lp.shape == (5,)
    mean, log_std = actor(obs)
    assert log_std.max() <= LOG_STD_MAX
    np.testing.assert_allclose(lp.detach(), tanh_gaussian_log_prob(torch.atanh(a.clamp(-1 + 1e-6, 1 - 1e-6)), mean, log_std).detach(), rtol=1e-3)


def test_soft_target_by_hand():
    # r=1, gamma=0.9, min(5, 4)=4, -alpha*logpi = -0.5*-2 = +1 -> 1 + 0.9 * 5 = 5.5; terminated -> 1
    args = dict(rewards=torch.tensor([1.0, 1.0]), discounts=torch.tensor([0.9, 0.9]), terminated=torch.tensor([0.0, 1.0]),
                next_q1=torch.tensor([5.0, 5.0]), next_q2=torch.tensor([4.0, 4.0]),
                next_log_prob=torch.tensor([-2.0, -2.0]), alpha=0.5)
    np.testing.assert_allclose(sac_critic_target(**args).numpy(), [5.5, 1.0])
    # an n-step transition carries discount gamma^k and its summed reward
    y = sac_critic_target(torch.tensor([1.9]), torch.tensor([0.81]), torch.tensor([0.0]), torch.tensor([2.0]),
                          torch.tensor([3.0]), torch.tensor([0.0]), 0.5)
    assert y.item() == pytest.approx(1.9 + 0.81 * 2.0)


def test_actor_and_alpha_losses_by_hand():
    loss = sac_actor_loss(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 0.5]), 0.2)
    assert loss.item() == pytest.approx(((0.2 * -1 - 2) + (0.2 * 0.5 - 1)) / 2)
    log_alpha = torch.tensor(0.0, requires_grad=True)
    # entropy 3 above target -2 ... log pi = -3, target entropy = -2: (log pi + target) = -5 -> loss = 5*log_alpha
    a_loss = sac_alpha_loss(log_alpha, torch.tensor([-3.0]), target_entropy=-2.0)
    a_loss.backward()
    assert log_alpha.grad.item() == pytest.approx(5.0)  # gradient descent lowers alpha when entropy is high
