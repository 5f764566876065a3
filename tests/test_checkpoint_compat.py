"""Checkpoints written by an older ms2flow (tests/data/checkpoints_v1, made by its make_checkpoints.py before the
single checkpoint format) still load, act as they did, and evaluate, for every algorithm."""

import json
from pathlib import Path

import pytest
import torch

from ms2core.algos.policies import load_policy
from storage_schemas.training import EvalConfig

V1 = Path(__file__).parent / "data" / "checkpoints_v1"
EXPECTED = json.loads((V1 / "expected_actions.json").read_text())


def probe_obs() -> dict[str, torch.Tensor]:
    return {"state": torch.linspace(-2.0, 2.0, 3 * 51).reshape(3, 51)}  # as make_checkpoints.probe_obs


@pytest.mark.parametrize("algo", ["bc", "ppo", "dapg", "sac", "gail"])
def test_v1_checkpoint_loads_and_acts_as_before(algo):
    policy, view = load_policy(V1 / f"{algo}.pt")
    torch.testing.assert_close(policy.act(probe_obs()), torch.tensor(EXPECTED[algo]))
    assert view["extra"]["algo"] == algo and view["config"]["env"]["backend"] == "fake"
    assert view["step"] == (4 if algo == "bc" else 20)


@pytest.mark.parametrize("algo", ["bc", "ppo", "dapg", "sac", "gail"])
def test_v1_checkpoint_evaluates(tmp_path, algo):
    from ms2core.evaluation import evaluate

    result = evaluate(EvalConfig(checkpoint=str(V1 / f"{algo}.pt"), num_episodes=2, output_dir=str(tmp_path)),
                      progress=False)
    assert result.num_episodes == 2 and result.checkpoint_step == (4 if algo == "bc" else 20)
    assert result.env_id == "PickCube-v0" and result.episode_length.mean > 0
