"""GAIL: the reward's sign and value by hand, the discriminator loss, and a discriminator that learns."""

import math

import pytest
import torch

from ms2core.nn.actors import Discriminator
from ms2core.algos.gail import discriminator_loss, gail_reward, gradient_penalty


def test_gail_reward_by_hand_and_sign():
    r = gail_reward(torch.tensor([0.0, 2.0, -2.0]))
    # -log(1 - sigmoid(x)): x=0 -> log 2; x=2 -> -log(1 - 0.8807971) = 2.1269280
    assert r[0].item() == pytest.approx(math.log(2))
    assert r[1].item() == pytest.approx(2.1269280, rel=1e-6)
    assert r[2].item() == pytest.approx(0.1269280, rel=1e-5)
    assert (r > 0).all() and r[1] > r[0] > r[2]  # demo-like (D -> 1) pairs earn more


def test_discriminator_loss_by_hand():
    loss = discriminator_loss(torch.tensor([0.0]), torch.tensor([0.0]))
    assert loss.item() == pytest.approx(2 * math.log(2))
    good = discriminator_loss(torch.tensor([5.0]), torch.tensor([-5.0]))
    assert good.item() == pytest.approx(2 * math.log1p(math.exp(-5.0)), rel=1e-5)


def test_trained_discriminator_rewards_demo_pairs_more():
    torch.manual_seed(0)
    disc = Discriminator({"state": 2}, 1, [32, 32])
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    demo_obs, agent_obs = {"state": torch.randn(256, 2)}, {"state": torch.randn(256, 2)}
    demo_act = demo_obs["state"][:, :1].clamp(-1, 1)  # the expert acts a = s_0; the agent acts at random
    agent_act = torch.rand(256, 1) * 2 - 1
    for _ in range(300):
        loss = discriminator_loss(disc(demo_obs, demo_act), disc(agent_obs, agent_act))
        opt.zero_grad(), loss.backward(), opt.step()
    test_obs = {"state": torch.randn(128, 2)}
    r_demo = gail_reward(disc(test_obs, test_obs["state"][:, :1].clamp(-1, 1))).mean()
    r_agent = gail_reward(disc(test_obs, torch.rand(128, 1) * 2 - 1)).mean()
    assert r_demo > r_agent + 0.3


def test_gradient_penalty_is_zero_for_constant_discriminator():
    disc = Discriminator({"state": 2}, 1, [4])
    with torch.no_grad():
        for p in disc.parameters():
            p.zero_()
    gp = gradient_penalty(disc, {"state": torch.randn(3, 2)}, torch.randn(3, 1))
    assert gp.item() == 0.0
