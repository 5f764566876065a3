"""Evaluation with the policy in the evaluating process (policy_in parent): the workers step envs only.

What the GPU host does: a CUDA learner's Python runs the policy, simulator workers in a runtime
without torch. Checked on the fake env: the same episodes as with the policy in the workers, the
workers never import torch, and auto picks the parent where the workers run another interpreter.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ms2core.evaluation import evaluate, policy_in_parent
from storage_schemas.training import EvalConfig
from tests.test_eval import make_checkpoint


def _episodes(result):
    return [(e.seed, e.length, e.episode_return, e.success_once, e.success_at_end) for e in result.episodes]


def _assert_same_episodes(a_result, b_result):
    a_eps, b_eps = _episodes(a_result), _episodes(b_result)
    assert len(a_eps) == len(b_eps)
    for a, b in zip(a_eps, b_eps):
        assert a[:2] == b[:2] and a[3:] == b[3:]
        assert a[2] == pytest.approx(b[2], rel=1e-5)  # a batched forward pass may differ in the last bits


def _no_torch_python(tmp_path: Path) -> str:
    """An interpreter (this one) whose ``import torch`` fails: a stand-in for a simulator runtime."""
    blocker = tmp_path / "notorch" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is not installed in this interpreter')\n")
    wrapper = tmp_path / "python-notorch"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="$PYTHONPATH:{blocker.parent}"\nexport PYTHONPATH\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.mark.parametrize("sample_mode", ["mean", "sample"])
def test_policy_in_parent_gives_the_episodes_of_policy_in_workers(tmp_path, sample_mode):
    ckpt = make_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt", head="gaussian")
    base = dict(checkpoint=str(ckpt), num_episodes=5, num_procs=2, seed=3, sample_mode=sample_mode, save_traj=True)
    here = evaluate(EvalConfig(**base, policy_in="parent", output_dir=str(tmp_path / "here")), progress=False)
    there = evaluate(EvalConfig(**base, policy_in="worker", output_dir=str(tmp_path / "there")), progress=False)
    assert [e.seed for e in here.episodes] == [3, 4, 5, 6, 7]
    assert len({e.episode_return for e in here.episodes}) > 1  # the episodes differ (a test that can fail)
    _assert_same_episodes(here, there)
    assert here.trajectory_path and Path(here.trajectory_path).exists()


def test_workers_without_torch_evaluate_when_the_policy_runs_here(tmp_path, monkeypatch):
    monkeypatch.delenv("MS2FLOW_SIM_PYTHON", raising=False)
    python = _no_torch_python(tmp_path)
    ckpt = make_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")
    cfg = EvalConfig(checkpoint=str(ckpt), num_episodes=3, num_procs=2, sim_python=python,
                     output_dir=str(tmp_path / "e"))
    assert policy_in_parent(cfg)  # auto: another interpreter runs the workers
    result = evaluate(cfg, progress=False)
    reference = evaluate(cfg.model_copy(update={"sim_python": None, "output_dir": str(tmp_path / "r")}),
                         progress=False)
    _assert_same_episodes(result, reference)
    # the same interpreter with the policy in its workers needs torch there, and says so
    from ms2core.errors import ConfigError

    with pytest.raises(ConfigError, match="torch"):
        evaluate(cfg.model_copy(update={"policy_in": "worker", "output_dir": str(tmp_path / "w")}), progress=False)


def test_auto_keeps_the_policy_in_the_workers_without_another_interpreter(monkeypatch):
    monkeypatch.delenv("MS2FLOW_SIM_PYTHON", raising=False)
    assert not policy_in_parent(EvalConfig(checkpoint="x.pt"))
    monkeypatch.setenv("MS2FLOW_SIM_PYTHON", os.path.abspath(sys.executable))  # this one: not another
    assert not policy_in_parent(EvalConfig(checkpoint="x.pt"))
    assert policy_in_parent(EvalConfig(checkpoint="x.pt", policy_in="parent"))
