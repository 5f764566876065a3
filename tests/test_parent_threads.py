"""A CPU policy runs on one torch thread while simulator workers step (its idle OpenMP threads would spin on
the workers' cores: benchmarks/rollout_barrier.py --parent-threads), and gets its threads back afterwards.

Checked where a policy runs between lock-step rounds: PPO/DAPG rollout collection and evaluation with the
policy in the evaluating process; not where there are no workers or the policy is on another device.
"""

from __future__ import annotations

import pytest
import torch

from ms2core.algos import _common as common


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_one_thread_only_for_a_cpu_device_with_workers(two_threads):
    with common.one_thread_while_simulating("cpu", 2):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    for device, workers in (("cpu", 0), ("cuda", 2), ("cuda:1", 4)):
        with common.one_thread_while_simulating(device, workers):
            assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="inside"), common.one_thread_while_simulating("cpu", 2):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 2  # restored on an exception too


class _ThreadsSeen(torch.nn.Module):
    """Wraps a network and records torch's thread count at every forward pass."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, *args, **kwargs):
        self.seen.append(torch.get_num_threads())
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize("num_procs, expected", [(2, 1), (0, 2)])
def test_ppo_rollout_collection(two_threads, num_procs, expected):
    from ms2core.algos.ppo import build_actor_critic, collect_rollout
    from ms2core.rollout import vector_env_from_config
    from storage_schemas.rl import NetConfig, RolloutConfig

    actor, critic = build_actor_critic({"state": 51}, 7, NetConfig(hidden_sizes=[16]))
    actor = _ThreadsSeen(actor)
    cfg = RolloutConfig.model_validate(dict(env=dict(env_id="PickCube-v0", obs_mode="state", backend="fake",
                                                     max_episode_steps=5), num_envs=2, num_procs=num_procs))
    with vector_env_from_config(cfg, 0) as vec:
        collect_rollout(vec, vec.reset(), actor, critic, 6, torch.device("cpu"), None, [])
    assert actor.seen and set(actor.seen) == {expected}
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("num_procs, expected", [(2, 1), (1, 2)])
def test_evaluation_with_the_policy_here(two_threads, tmp_path, monkeypatch, num_procs, expected):
    from ms2core import evaluation
    from storage_schemas.training import EvalConfig
    from tests.test_eval import make_checkpoint

    seen = []
    act_batch = evaluation._act_batch

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return act_batch(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_act_batch", recording)
    ckpt = make_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")
    result = evaluation.evaluate(EvalConfig(checkpoint=str(ckpt), num_episodes=3, num_procs=num_procs,
                                            policy_in="parent", policy_device="cpu",
                                            output_dir=str(tmp_path / "e")), progress=False)
    assert len(result.episodes) == 3 and seen and set(seen) == {expected}
    assert torch.get_num_threads() == 2
