"""Why PPO did not learn PickCube: a success that ends the episode is worth less than hovering next to it.

ManiSkill2 0.5 terminates an episode at success, and PickCube's dense reward pays 5 at success but up to
~2.9 a step while the grasped cube sits near the goal; with gamma = 0.95 hovering is worth ~2.9 / 0.05 = 58
against 5 for succeeding. ManiSkill2-Learn therefore trains with ``env_cfg.ignore_dones=True`` (episodes run to
the time limit) and evaluates with terminations. This benchmark trains ms2flow's PPO (``ms2 train ppo``'s
code path, ``train_ppo``) on the fake PickCube-shaped env (same reward structure: up to 1 a step near the
goal, +5 at success, terminated at success) with ``rollout.continue_after_success`` true and false, same
seeds and budget, and prints the deterministic evaluation's success (episodes end at success in both).

    python -m benchmarks.ppo_success_termination [--env-steps 60000] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks._common import write_result
from ms2core.algos.ppo import train_ppo
from storage_schemas.rl import PPOConfig


def config(continue_after_success: bool, seed: int, env_steps: int, run_dir: Path) -> PPOConfig:
    return PPOConfig.model_validate(dict(
        rollout=dict(env=dict(env_id="PickCube-v0", backend="fake", control_mode="pd_ee_delta_pos",
                              max_episode_steps=50), num_envs=8, num_procs=0,
                     continue_after_success=continue_after_success),
        net=dict(hidden_sizes=[256, 256], activation="relu"),
        ppo=dict(rollout_steps=4000, minibatch_size=400, num_epochs=4),
        run=dict(total_env_steps=env_steps, log_every_steps=4000, eval_episodes=50, seed=seed,
                 run_dir=str(run_dir))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-steps", type=int, default=60_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for cas in (True, False):
                res = train_ppo(config(cas, seed, args.env_steps, Path(tmp) / f"{cas}-{seed}"))
                rows.append(dict(continue_after_success=cas, seed=seed, eval_success_rate=res.eval_success_rate,
                                 eval_mean_return=res.eval_mean_return,
                                 train_success_curve=[round(c["success_rate"], 3) for c in res.curve]))
                print(f"continue_after_success={cas!s:5} seed {seed}: eval success {res.eval_success_rate:.2f}",
                      flush=True)
    path = write_result("ppo_success_termination", dict(
        env="fake PickCube-v0 (ms2core/envs/fake.py), pd_ee_delta_pos, 50-step episodes", env_steps=args.env_steps,
        eval_episodes=50, rows=rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
