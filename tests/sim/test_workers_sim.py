"""The simulator worker pool on the real simulator: rollouts in another interpreter equal in-process ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from ms2core.rollout import EnvFactory, VectorEnv
from storage_schemas.env import EnvConfig

pytestmark = pytest.mark.sim


def _trace(num_procs: int, sim_python: str | None) -> list:
    env_cfg = EnvConfig(env_id="PickCube-v0", obs_mode="state", control_mode="pd_ee_delta_pose", max_episode_steps=10)
    rng, out = np.random.default_rng(1), []
    with VectorEnv(EnvFactory(env_cfg), num_envs=2, num_procs=num_procs, seed=3, sim_python=sim_python) as vec:
        out.append(vec.reset()["state"])
        for _ in range(15):
            batch = vec.step(rng.uniform(-1, 1, (2, vec.action_dim)))
            out += [batch.obs["state"], batch.next_obs["state"], batch.rewards, batch.terminated, batch.truncated,
                    np.array([(e.env_index, e.episode_return, e.length, bool(e.success)) for e in batch.episodes])]
    return out


def test_real_pickcube_rollouts_in_another_interpreter_are_bit_identical():
    here = Path(sys.executable)
    other = next((str(here.with_name(n)) for n in ("python3", "python3.11", "python")
                  if here.with_name(n).exists() and os.path.abspath(here.with_name(n)) != os.path.abspath(here)), None)
    if other is None:
        pytest.skip("no second path to this interpreter")
    inline, foreign = _trace(0, None), _trace(0, other)
    assert len(inline) == len(foreign)
    for a, b in zip(inline, foreign):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
