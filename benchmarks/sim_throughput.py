"""Control steps/s of PickCube-v0 through ms2core.envs vs a raw ManiSkill2 gym.make loop.

Both loops run in this one process, interleaved in rounds so drift in machine
load hits both alike. Target: ours >= 0.95x raw. Writes results/sim_throughput.json.

    .venv/bin/python benchmarks/sim_throughput.py [--steps-state 500] [--steps-visual 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import write_result
from ms2core.envs import import_mani_skill2, make_env

ENV_ID = "PickCube-v0"
CONTROL_MODE = "pd_ee_delta_pose"


def steps_per_s(env, n_steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (n_steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return n_steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-state", type=int, default=500)
    parser.add_argument("--steps-visual", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    import_mani_skill2()  # the raw loop needs the same CPU-rendering set-up
    import gymnasium as gym

    rows = {}
    for obs_mode in ("state", "rgbd", "pointcloud"):
        n = args.steps_state if obs_mode == "state" else args.steps_visual
        raw_env = gym.make(ENV_ID, obs_mode=obs_mode, control_mode=CONTROL_MODE)
        our_env = make_env(ENV_ID, obs_mode, CONTROL_MODE)
        steps_per_s(raw_env, 5, 0), steps_per_s(our_env, 5, 0)  # warm-up: shader compile, first picture
        raw, ours = [], []
        for r in range(args.rounds):  # ABBA order: neither loop always runs second
            pair = [(raw, raw_env), (ours, our_env)]
            for results, env in pair if r % 2 == 0 else pair[::-1]:
                results.append(steps_per_s(env, n, r))
        raw_env.close(), our_env.close()
        rows[obs_mode] = dict(raw_steps_per_s=float(np.median(raw)), ours_steps_per_s=float(np.median(ours)),
                              ratio=float(np.median(ours) / np.median(raw)), steps=n, rounds=args.rounds)
        print(f"{obs_mode:11s} raw {rows[obs_mode]['raw_steps_per_s']:8.1f} steps/s   "
              f"ms2core.envs {rows[obs_mode]['ours_steps_per_s']:8.1f} steps/s   "
              f"ratio {rows[obs_mode]['ratio']:.3f} (target >= 0.95)")
    path = write_result("sim_throughput", dict(env_id=ENV_ID, control_mode=CONTROL_MODE, results=rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
