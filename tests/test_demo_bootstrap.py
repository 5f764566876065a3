"""Demo buffers bootstrap through truncated steps and stop at terminated ones (hand-computed n-step targets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ms2core.algos._demos import demo_replay_transitions, load_demo_transitions, write_demo_zarr
from ms2core.algos.sac import sac_critic_target
from ms2core.errors import DatasetError
from ms2core.replay_buffer import ReplayBuffer


def _episode(rewards, terminated, truncated, first_obs):
    n = len(rewards)
    return {"obs/state": (first_obs + np.arange(n, dtype=np.float32))[:, None],
            "actions": np.zeros((n, 1), np.float32), "rewards": np.asarray(rewards, np.float32),
            "success": np.asarray(terminated, bool), "terminated": np.asarray(terminated, bool),
            "truncated": np.asarray(truncated, bool)}


@pytest.fixture
def demos(tmp_path):
    eps = [
        _episode([1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 1], 0),    # cut by the time limit at step 3
        _episode([1, 2, 3], [0, 0, 1], [0, 0, 0], 10),             # terminated at its last step
        _episode([1, 2, 3], [0, 1, 0], [0, 0, 1], 20),             # terminated mid-demo, then goes on and is cut
    ]
    return load_demo_transitions(write_demo_zarr(tmp_path / "d.zarr", eps), ["state"], with_returns=True)


def test_n_step_windows_bootstrap_through_truncation_and_stop_at_termination(demos):
    t = demo_replay_transitions(demos, n_step=2, gamma=0.5)
    got = [(float(o), float(r), float(nx), bool(term), float(d)) for o, r, nx, term, d in
           zip(t.obs["state"][:, 0], t.rewards, t.next_obs["state"][:, 0], t.terminated, t.discounts)]
    assert got == [
        # episode 0 (cut): step 3 has no stored s_4, so it is left out; windows bootstrap from s_3
        (0, 1 + 0.5 * 2, 2, False, 0.25), (1, 2 + 0.5 * 3, 3, False, 0.25), (2, 3, 3, False, 0.5),
        # episode 1 (terminated at step 2): the windows through it stop there, no bootstrap (next obs unused)
        (10, 1 + 0.5 * 2, 12, False, 0.25), (11, 2 + 0.5 * 3, 12, True, 0.25), (12, 3, 12, True, 0.5),
        # episode 2: terminated at step 1 (mid-demo); step 2 is cut, so left out
        (20, 1 + 0.5 * 2, 22, True, 0.25), (21, 2, 22, True, 0.5),
    ]


def test_sac_targets_from_a_demo_buffer_use_terminated_not_the_episode_end(demos):
    t = demo_replay_transitions(demos, n_step=1, gamma=0.9)
    buffer = ReplayBuffer(capacity=64, num_envs=1, gamma=0.9)
    buffer.storage.add(t)
    batch = buffer.storage.get(np.arange(len(t)))
    next_q = torch.full((len(t),), 10.0)
    target = sac_critic_target(torch.as_tensor(batch.rewards), torch.as_tensor(batch.discounts),
                               torch.as_tensor(batch.terminated.astype(np.float32)), next_q, next_q,
                               torch.zeros(len(t)), 0.0)
    by_obs = dict(zip(batch.obs["state"][:, 0].tolist(), target.tolist()))
    assert by_obs[2.0] == pytest.approx(3 + 0.9 * 10)  # last kept step of the cut episode: bootstraps
    assert by_obs[12.0] == pytest.approx(3)            # terminated last step: no bootstrap
    assert by_obs[21.0] == pytest.approx(2)            # terminated mid-demo: no bootstrap
    assert 3.0 not in by_obs and 22.0 not in by_obs    # cut last steps: s_T is not stored


def test_bootstrapping_needs_the_episode_end_flags(tmp_path):
    path = write_demo_zarr(tmp_path / "d.zarr", [_episode([1, 2], [0, 0], [0, 1], 0)])
    demos = load_demo_transitions(path, ["state"])
    with pytest.raises(DatasetError, match="with_returns=True"):
        demo_replay_transitions(demos, 1, 0.9)
