"""Replay buffer: ring storage, n-step writing across terminations and truncations, sampling."""

import numpy as np
import pytest

from ms2core.errors import ConfigError
from ms2core.replay_buffer import NStepWriter, ReplayBuffer, ReplayStorage, Transitions


def _obs(x):
    return {"state": np.array([[x]], np.float32)}


def _push(w, t, r, term=False, trunc=False):
    return w.push(_obs(t), np.array([[t]], np.float32), np.array([r]), _obs(t + 1), np.array([term]), np.array([term or trunc]))


def test_nstep_writer_by_hand():
    w = NStepWriter(num_envs=1, n_step=3, gamma=0.5)
    assert _push(w, 0, 1.0) is None and _push(w, 1, 2.0) is None
    out = _push(w, 2, 4.0)  # R = 1 + 0.5*2 + 0.25*4 = 3, bootstrap from s3 with 0.125
    assert out.rewards.tolist() == [3.0] and out.discounts.tolist() == [0.125]
    assert out.obs["state"][0, 0] == 0 and out.next_obs["state"][0, 0] == 3 and not out.terminated[0]
    out = _push(w, 3, 8.0, term=True)  # flush s1, s2, s3 toward the terminal s4
    assert out.rewards.tolist() == [2 + 0.5 * 4 + 0.25 * 8, 4 + 0.5 * 8, 8.0]
    assert out.discounts.tolist() == [0.125, 0.25, 0.5]
    assert out.terminated.all() and (out.next_obs["state"][:, 0] == 4).all()
    assert len(w.queues[0]) == 0


def test_nstep_truncation_keeps_bootstrap():
    w = NStepWriter(num_envs=1, n_step=2, gamma=0.9)
    _push(w, 0, 1.0)
    out = _push(w, 1, 1.0, trunc=True)
    assert not out.terminated.any() and out.discounts.tolist() == pytest.approx([0.81, 0.9])


def test_storage_ring_overwrites_oldest_and_round_trips_state():
    s = ReplayStorage(capacity=3)
    for i in range(5):
        s.add(Transitions(_obs(i), np.array([[i]], np.float32), np.array([i], np.float32), _obs(i + 1),
                          np.array([False]), np.array([0.9], np.float32)))
    assert s.size == 3 and sorted(s.arrays["rewards"].tolist()) == [2.0, 3.0, 4.0]
    s2 = ReplayStorage(capacity=1)
    s2.load_state_dict(s.state_dict())
    assert s2.size == 3 and s2.cursor == s.cursor and sorted(s2.get(np.arange(3)).rewards.tolist()) == [2.0, 3.0, 4.0]


def test_buffer_sample_and_errors():
    b = ReplayBuffer(capacity=10, num_envs=2, gamma=0.9, seed=0)
    with pytest.raises(ValueError, match="empty"):
        b.sample(4)
    obs = {"state": np.zeros((2, 3), np.float32)}
    b.add_step(obs, np.ones((2, 1), np.float32), np.array([1.0, 2.0]), obs, np.array([False, True]), np.array([False, True]))
    batch = b.sample(8)
    assert batch.obs["state"].shape == (8, 3) and set(batch.terminated.tolist()) <= {0.0, 1.0}
    with pytest.raises(ConfigError):
        ReplayStorage(0)
    with pytest.raises(ConfigError):
        NStepWriter(1, 0, 0.9)
