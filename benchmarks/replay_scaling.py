"""Episodes/s of ``pipelines.replay`` (pd_joint_pos -> pd_ee_delta_pose, PickCube-v0) with 1 and 2 processes.

The same demo pair is converted with 1 and 2 worker processes, alternating the
order over rounds (ABBA) so drift in machine load hits both alike. Wall time
includes starting the workers and their envs, as a user sees it; the rate after
the first result excludes that start-up. Reports the
median episodes/s of each and their ratio (ideal: 2.0 on 2 idle cores).
Where the kernel's sched_autogroup is on, all processes of one session share
one fair CPU slice with other sessions, so on a busy shared machine the ratio
stays near 1 whatever the code does; the result file records that setting.
Writes results/replay_scaling.json.

    python -m benchmarks.replay_scaling [--episodes 8] [--rounds 2] [--demos PAIR.h5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import write_result
from pipelines import demos, replay
from storage_schemas.demos import GenerateDemosConfig, ReplayConfig

ENV_ID = "PickCube-v0"
TARGET_MODE = "pd_ee_delta_pose"


def sched_autogroup_enabled() -> bool | None:
    try:
        return open("/proc/sys/kernel/sched_autogroup_enabled").read().strip() == "1"
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8, help="episodes to generate and convert")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--demos", type=str, default=None, help="an existing pd_joint_pos pair to convert instead")
    parser.add_argument("--verify-open-loop", action="store_true", help="include the open-loop check in the timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="replay_scaling_") as tmp:
        tmp = Path(tmp)
        source = args.demos or demos.run(GenerateDemosConfig(
            env_id=ENV_ID, num_episodes=args.episodes, output=str(tmp / "src"), num_workers=2)).h5_path
        rates: dict[int, list[float]] = {1: [], 2: []}
        steady: dict[int, list[float]] = {1: [], 2: []}
        converted = {}
        for r in range(args.rounds):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                # A fresh output name each time: the stage is idempotent and would otherwise skip the work.
                result = replay.run(ReplayConfig(
                    input=str(source), target_control_mode=TARGET_MODE, num_workers=workers,
                    max_episodes=args.episodes, verify_open_loop=args.verify_open_loop,
                    output=str(tmp / f"out.r{r}.w{workers}"), progress=False))
                rates[workers].append(result.report.episodes_per_s)
                steady[workers].append(result.report.steady_episodes_per_s or 0.0)
                converted[workers] = result.report.num_converted
                print(f"round {r} workers {workers}: {result.report.episodes_per_s:.3f} episodes/s "
                      f"({result.report.num_converted}/{result.report.num_episodes} converted, "
                      f"{result.report.wall_s:.1f} s, {result.report.startup_s:.1f} s to the first; "
                      f"after it {result.report.steady_episodes_per_s:.3f} episodes/s)", flush=True)
    one, two = float(np.median(rates[1])), float(np.median(rates[2]))
    s_one, s_two = float(np.median(steady[1])), float(np.median(steady[2]))
    print(f"1 process   {one:.3f} episodes/s (start-up excluded: {s_one:.3f})\n"
          f"2 processes {two:.3f} episodes/s (start-up excluded: {s_two:.3f})\n"
          f"ratio {two / one:.2f}, start-up excluded {s_two / s_one:.2f} (ideal 2.0)")
    path = write_result("replay_scaling", dict(
        env_id=ENV_ID, target_control_mode=TARGET_MODE, episodes=args.episodes, rounds=args.rounds,
        verify_open_loop=args.verify_open_loop, episodes_per_s_1_process=one, episodes_per_s_2_processes=two,
        ratio=two / one, steady_episodes_per_s_1_process=s_one, steady_episodes_per_s_2_processes=s_two,
        steady_ratio=s_two / s_one, sched_autogroup=sched_autogroup_enabled(), load_avg_1min=os.getloadavg()[0], runs=rates, steady_runs=steady, converted=converted,
    ))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
