"""GAE / returns / reward normalisation against numbers computed by hand."""

import numpy as np
import pytest

from ms2core.algos.returns import ReturnNormalizer, RunningMeanStd, compute_gae, discounted_returns


def test_gae_with_termination_and_truncation_by_hand():
    # 4 steps of one env, gamma = lambda = 0.5. Step 1 terminates (no bootstrap: its next value 7.0 must be
    # ignored), step 3 is truncated by the time limit (bootstrap from V(final obs) = 10).
    rewards = np.array([1.0, 2.0, 3.0, 4.0])
    values = np.array([0.5, 1.0, 1.5, 2.0])
    next_values = np.array([1.0, 7.0, 2.0, 10.0])
    terminated = np.array([0, 1, 0, 0], bool)
    dones = np.array([0, 1, 0, 1], bool)
    adv, ret = compute_gae(rewards, values, next_values, terminated, dones, gamma=0.5, gae_lambda=0.5)
    # deltas: 1+0.5*1-0.5=1.0 | 2+0-1=1.0 | 3+0.5*2-1.5=2.5 | 4+0.5*10-2=7.0
    # A3=7, A2=2.5+0.25*7=4.25, A1=1.0 (episode ended: no leak from A2), A0=1+0.25*1=1.25
    np.testing.assert_allclose(adv, [1.25, 1.0, 4.25, 7.0], rtol=1e-6)
    np.testing.assert_allclose(ret, [1.75, 2.0, 5.75, 9.0], rtol=1e-6)


def test_gae_truncation_differs_from_termination():
    r, v, nv = np.array([0.0]), np.array([0.0]), np.array([4.0])
    adv_trunc, _ = compute_gae(r, v, nv, np.array([False]), np.array([True]), 0.9, 0.95)
    adv_term, _ = compute_gae(r, v, nv, np.array([True]), np.array([True]), 0.9, 0.95)
    assert adv_trunc[0] == pytest.approx(3.6) and adv_term[0] == 0.0


def test_gae_lambda_one_equals_monte_carlo_minus_value():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    dones = np.zeros((6, 3), bool)
    dones[2, 1] = True
    nv = np.concatenate([v[1:], np.zeros((1, 3))])
    nv[2, 1] = 0.0
    adv, _ = compute_gae(r, v, nv, dones, dones, gamma=0.9, gae_lambda=1.0)
    np.testing.assert_allclose(adv, discounted_returns(r, dones, 0.9) - v, rtol=1e-5, atol=1e-6)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        compute_gae(np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(3), 0.9, 0.9)


def test_discounted_returns_by_hand():
    out = discounted_returns(np.array([1.0, 1.0, 1.0]), np.array([0, 1, 0]), 0.5, bootstrap=4.0)
    np.testing.assert_allclose(out, [1.5, 1.0, 3.0])


def test_running_mean_std_matches_numpy():
    rms, data = RunningMeanStd(), np.random.default_rng(1).normal(3.0, 2.0, size=1000)
    for chunk in np.split(data, 10):
        rms.update(chunk)
    assert rms.mean == pytest.approx(data.mean(), rel=1e-4) and rms.var == pytest.approx(data.var(), rel=1e-3)


def test_return_normalizer_scales_by_return_std_and_resets_at_done():
    norm = ReturnNormalizer(num_envs=1, gamma=0.5)
    out1 = norm(np.array([2.0]), np.array([False]))
    assert norm.returns[0] == 2.0
    out2 = norm(np.array([2.0]), np.array([True]))  # return 2*0.5+2 = 3, then reset
    assert norm.returns[0] == 0.0
    assert out2[0] == pytest.approx(2.0 / np.sqrt(norm.stats.var + 1e-8))
    assert out1[0] != out2[0]
