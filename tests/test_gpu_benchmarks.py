"""The GPU-host benchmark scripts at tiny sizes on the fake env (the real runs: benchmarks/gpu_campaign.sh).

benchmarks/gpu_render.py's store comparison (issue 19 item 3) and benchmarks/gpu_eval.py's learner side:
the policy here, workers in another interpreter without torch, no simulator module in this process.
"""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import gpu_render
from tests.demo_fixtures import fake_demo_pair


@pytest.fixture(scope="module")
def fake_stores(tmp_path_factory):
    work = tmp_path_factory.mktemp("gpu_render")
    demos = fake_demo_pair(work / "demos" / "pick.h5", n_episodes=4)
    stores = {}
    for name, episodes, seed in (("a", 3, 0), ("b", 3, 0), ("resampled", 3, 1), ("fewer", 2, 0)):
        stores[name] = str(work / f"{name}.zarr")
        assert gpu_render.main(["store", "--demos", str(demos), "--episodes", str(episodes), "--seed", str(seed),
                                "--workers-n", "0", "--backend", "fake", "--out", stores[name]]) == 0
    return stores


def test_two_renders_of_the_same_demos_agree(fake_stores, tmp_path):
    out = tmp_path / "agree.json"
    rc = gpu_render.main(["compare", "--reference", fake_stores["a"], "--other", fake_stores["b"],
                          "--resampled", fake_stores["resampled"], "--out", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0 and report["agree"] and all(report["bit_identical"].values())
    assert set(report["bit_identical"]) >= {"actions", "rewards", "success", "terminated", "truncated", "obs/state"}
    assert report["stats"]["cross_chamfer_m"]["max"] == 0.0


def test_renders_of_other_options_or_points_do_not_agree(fake_stores, tmp_path):
    out = tmp_path / "fewer.json"
    assert gpu_render.main(["compare", "--reference", fake_stores["a"], "--other", fake_stores["fewer"],
                            "--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert not report["same_layout"] and not report["agree"] and "stats" not in report  # refused before statistics
    # other downsampling of the same frames: exact parts agree, the version (options) does not
    report = gpu_render.compare_stores(fake_stores["a"], fake_stores["resampled"], None)
    assert not report["agree"] and not report["same_version"]
    assert report["bit_identical"]["actions"] and report["bit_identical"]["rewards"]
    assert report["stats"]["cross_chamfer_m"]["median"] > 0


def test_dataset_renders_with_the_committed_render_config_and_validates(tmp_path):
    """The campaign's ``dataset`` step: the render stage with configs/render/pointcloud.yaml (obs_frame ee, 50 goal
    points: issue 20's point-cloud setting), then the validation stage, whose passing report the trainers need."""
    from ms2core.data.store import DatasetStore
    from ms2core.validation.store import require_validated

    demos = fake_demo_pair(tmp_path / "demos" / "pick.h5", n_episodes=3)  # episode 1 is cut before success
    store, out = tmp_path / "pc.zarr", tmp_path / "out"
    args = ["dataset", "--demos", str(demos), "--workers-n", "0", "--backend", "fake", "--set", "obs.n_points=64",
            "--store", str(store), "--out", str(out)]
    assert gpu_render.main(args) == 1  # a success-only dataset with an unsuccessful episode: refused
    refused = json.loads((out / "gpu_dataset.json").read_text())["validation"]
    assert refused["status"] == "failed" and refused["success_only"]
    with pytest.raises(Exception, match="failed validation"):
        require_validated(str(store))
    assert gpu_render.main(args + ["--any-outcome"]) == 0
    made = json.loads((out / "gpu_dataset.json").read_text())
    assert made["episodes"] == 3 and made["validation"]["status"] == "passed" and not made["validation"]["success_only"]
    assert made["obs"]["obs_frame"] == "ee" and made["obs"]["n_goal_points"] == 50 and made["obs"]["n_points"] == 64
    opened = DatasetStore.open(str(store))
    assert opened.manifest.n_committed_episodes == 3
    assert opened.arrays["obs/xyz"].shape[1] == 64 + 50  # the goal points are in the clouds
    assert require_validated(str(store)) is not None  # what ms2 train checks before it reads a row


def _forget_simulator_modules(monkeypatch):
    """The learner guard refuses a process that already imported the simulator: hide it (restored after)."""
    from benchmarks._gpu_host import SIMULATOR_MODULES

    for name in [m for m in sys.modules if m.split(".")[0] in SIMULATOR_MODULES]:
        monkeypatch.delitem(sys.modules, name)


def test_gpu_eval_runs_the_policy_here_with_workers_of_another_interpreter(tmp_path, monkeypatch):
    from benchmarks import gpu_eval
    from tests.test_eval import make_checkpoint
    from tests.test_eval_policy_here import _no_torch_python

    monkeypatch.delenv("MS2FLOW_SIM_PYTHON", raising=False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # the simulator-import guard goes with the test
    _forget_simulator_modules(monkeypatch)  # an earlier test of this session may have imported them
    ckpt = make_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")
    out = tmp_path / "out"
    assert gpu_eval.main(["--checkpoint", str(ckpt), "--episodes", "3", "--workers", "2", "--device", "cpu",
                          "--sim-python", _no_torch_python(tmp_path), "--out", str(out)]) == 0
    result = json.loads((out / "gpu_eval.json").read_text())
    assert result["policy_in"] == "parent" and result["env_steps"] == 3 * 8
    assert result["simulator_modules_in_learner"] == []


def test_the_learner_guard_refuses_simulator_imports(monkeypatch):
    from benchmarks._gpu_host import SimulatorImportError, forbid_simulator_imports

    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    _forget_simulator_modules(monkeypatch)
    forbid_simulator_imports()
    with pytest.raises(SimulatorImportError, match="mani_skill2 was imported in the learner's process"):
        import mani_skill2  # noqa: F401



def test_a_key_that_differs_is_reported_by_how_much():
    """A reward one float32 ulp off (as two CPUs' BLAS kernels can leave it) is not bit-identical, and the report
    says how many elements and by how many ulps, so rounding is told apart from a real disagreement."""
    import numpy as np

    rewards = np.linspace(0.1, 2.0, 40, dtype=np.float32)
    assert gpu_render.exact_difference(rewards, rewards.copy()) is None
    other = rewards.copy()
    other[5] = np.nextafter(other[5], np.float32(np.inf))
    diff = gpu_render.exact_difference(rewards, other)
    assert diff["elements"] == 1 and diff["of"] == 40 and diff["max_ulps"] == 1.0
    assert diff["max_abs"] == float(np.spacing(rewards[5]))
    other[7] += 0.5  # a real disagreement is millions of ulps
    assert gpu_render.exact_difference(rewards, other)["max_ulps"] > 1e5
    flags = np.array([True, False, True])
    assert gpu_render.exact_difference(flags, ~flags) == dict(elements=3, of=3, max_abs=1.0)
    assert gpu_render.exact_difference(flags, flags[:2]) == dict(shapes=[[3], [2]])


def _campaign(step: str, tmp_path, **env) -> int:
    """benchmarks/gpu_campaign.sh STEP as on the GPU host, with this interpreter for both sides (fake env)."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    runtime = tmp_path / "rt"
    (runtime / "bin").mkdir(parents=True, exist_ok=True)
    python = runtime / "bin" / "python"  # a runtime's interpreter: here this venv's, behind a wrapper
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    full = dict(os.environ, MS2RT=str(runtime), HOST_PYTHON=sys.executable, OUT=str(tmp_path / step),
                SWEEP_KEEP=str(tmp_path / "keep"), STEP_LIMIT_S="240", TRAIN_MARGIN_S="5", **env)
    return subprocess.run(["bash", str(root / "benchmarks" / "gpu_campaign.sh"), step], cwd=root, env=full,
                          timeout=300, capture_output=True).returncode


def test_continue_resumes_the_sweeps_run_with_its_config_and_keeps_it_when_a_command_fails(tmp_path):
    tiny = ("rollout.env.backend=fake rollout.num_envs=2 rollout.num_procs=1 rollout.train_episode_steps=8 "
            "ppo.rollout_steps=16 ppo.minibatch_size=8 ppo.num_epochs=1 net.hidden_sizes=[8] "
            "run.total_env_steps=32 run.eval_every_steps=0 run.checkpoint_every_steps=16 run.log_every_steps=16")
    config = "configs/ppo/pickcube_state.yaml"  # not the train step's default config
    assert _campaign("sweep", tmp_path, TRAIN_CONFIG=config, TRAIN_SET=tiny, SWEEP_VARIANTS="a:", SWEEP_PROCS="1") == 0
    back = [f for f in (tmp_path / "sweep").rglob("*") if f.is_file()]
    assert len(back) <= 8, back  # what a device command returns at most
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["variants"]["a"]["env_steps"] == 32
    kept = tmp_path / "keep" / "a" / "run" / "checkpoint.pt"
    first = kept.read_bytes()
    # a command that fails before writing a checkpoint (a typo in an override) leaves the kept run as it was
    assert _campaign("continue", tmp_path, CONTINUE_SET="run.no_such_key=1", CONTINUE_PROCS="1") != 0
    assert kept.read_bytes() == first
    # continuing without TRAIN_CONFIG in the environment resumes the sweep's config, not the default one
    assert _campaign("continue", tmp_path, CONTINUE_SET="run.total_env_steps=64", CONTINUE_PROCS="1") == 0
    result = json.loads((tmp_path / "continue" / "a" / "gpu_train.json").read_text())
    assert result["config"] == config and result["start_env_step"] == 32 and result["env_steps"] == 64
    assert kept.read_bytes() != first
