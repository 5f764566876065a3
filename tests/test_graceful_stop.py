"""SIGTERM / Ctrl-C during an online run (``ms2 train ppo|sac|...``): the run ends after its current update
with its checkpoint and result, exit 0, and ``--resume-from`` continues the same curve."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ms2core.algos._common import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
FAKE_ENV = dict(env=dict(env_id="PickCube-v0", backend="fake", control_mode="pd_ee_delta_pos", max_episode_steps=20),
                num_envs=2, num_procs=0)
CONFIGS = {
    "ppo": dict(algo="ppo", rollout=FAKE_ENV, net=dict(hidden_sizes=[16]),
                ppo=dict(rollout_steps=40, minibatch_size=20, num_epochs=2, critic_warmup_epochs=1),
                run=dict(total_env_steps=10_000_000, log_every_steps=40, eval_episodes=2)),
    "sac": dict(algo="sac", rollout=FAKE_ENV, net=dict(hidden_sizes=[16]),
                sac=dict(learning_starts=20, batch_size=8, buffer_capacity=500, updates_per_env_step=0.5),
                run=dict(total_env_steps=10_000_000, log_every_steps=20, checkpoint_every_steps=0, eval_episodes=2)),
}


def ms2(*args, env):
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("algo,sig", [("ppo", "SIGTERM"), ("ppo", "SIGINT"), ("sac", "SIGTERM")])
def test_a_signal_ends_the_run_after_its_update_with_a_checkpoint_and_resume_continues(tmp_path, algo, sig):
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CONFIGS[algo]))
    env = {**os.environ, "PYTHONPATH": str(REPO), "MS2FLOW_DATA_DIR": str(tmp_path / "data")}
    run_dir = tmp_path / "run"
    proc = ms2("train", algo, "--config", str(tmp_path / "cfg.yaml"), "--set", f"run.run_dir={run_dir}", env=env)
    try:
        deadline = time.monotonic() + 120
        metrics = run_dir / "metrics.jsonl"  # wait for the loop: a logged update
        while time.monotonic() < deadline and not (metrics.is_file() and '"updates"' in metrics.read_text()):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"{sig} received: stopping after this update" in err and "Traceback" not in err + out
    state = load_checkpoint(run_dir / "checkpoint.pt", algo)
    assert 0 < state["env_steps"] < 10_000_000
    result = json.loads((run_dir / "train_result.json").read_text())
    assert result["env_steps"] == state["env_steps"]
    assert result["eval_success_rate"] is None  # asked to stop: no final evaluation

    target = state["env_steps"] + 40
    again = ms2("train", algo, "--config", str(tmp_path / "cfg.yaml"), "--set", f"run.run_dir={tmp_path / 'b'}",
                "--set", f"run.total_env_steps={target}", "--resume-from", str(run_dir / "checkpoint.pt"), env=env)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    resumed = json.loads((tmp_path / "b" / "train_result.json").read_text())
    assert resumed["start_env_step"] == state["env_steps"] and resumed["env_steps"] == target
    assert resumed["eval_success_rate"] is not None  # a run that ends normally still evaluates
