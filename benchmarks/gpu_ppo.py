"""PPO env steps/s with N simulator workers in the runtime and the learner here (CUDA), learner updates included.

Run with the learner's Python (the GPU host's 3.12 + CUDA torch), through the product's
``ms2core.algos.ppo.train_ppo`` and ``configs/ppo/pickcube_state.yaml`` with overrides:
``rollout.num_procs`` workers started with ``rollout.sim_python``, ``rollout.num_envs`` envs,
``run.device``; state (MLP) and point clouds (``net.backbone=pointnet``); no evaluation, one
checkpoint at the end. sapien / mani_skill2 imports are refused in this process.

    python -m benchmarks.gpu_ppo --obs-modes state,pointcloud --workers 16 --num-envs 16 \\
        --sim-python /opt/ms2rt/bin/python --out DIR

Per obs mode: ``env_steps_per_s`` = TrainResult's (env steps / wall time from the first reset to the
end, every rollout and update included, worker start-up not), and ``wall_s`` (start-up included).
Targets (issue 19): state >= 3000, point clouds >= 250. Writes DIR/gpu_ppo.json after every mode.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks._gpu_host import forbid_simulator_imports, host_info, write_json

ROOT = Path(__file__).resolve().parents[1]
TARGET = {"state": 3000, "pointcloud": 250}
#: env steps and steps per rollout (all envs) for about a minute at the target speed
DEFAULT_STEPS = {"state": (192_000, 16_000), "pointcloud": (16_000, 4_000)}


class _Timeline:
    """A MetricsSink keeping (seconds since start, env steps, env_steps_per_s) of every log line."""

    def __init__(self):
        self.t0, self.rows = time.perf_counter(), []

    def log(self, metrics: dict, step: int) -> None:
        if "env_steps_per_s" in metrics:
            self.rows.append(dict(t_s=round(time.perf_counter() - self.t0, 2), env_steps=step,
                                  env_steps_per_s=round(metrics["env_steps_per_s"], 1)))

    def close(self) -> None:
        pass


def run_mode(obs_mode: str, args, out: Path) -> dict:
    from ms2core.algos.ppo import train_ppo
    from ms2core.config import load_config
    from storage_schemas.rl import PPOConfig

    total, rollout_steps = DEFAULT_STEPS[obs_mode]
    total = args.env_steps or total
    rollout_steps = min(args.rollout_steps or rollout_steps, total)
    overrides = [f"rollout.env.obs_mode={obs_mode}", f"rollout.num_envs={args.num_envs}",
                 f"rollout.num_procs={args.workers}", f"rollout.sim_python={args.sim_python}",
                 f"run.device={args.device}", f"run.total_env_steps={total}", f"ppo.rollout_steps={rollout_steps}",
                 f"ppo.minibatch_size={min(400, rollout_steps)}", "run.eval_episodes=0", "run.eval_every_steps=0",
                 f"run.log_every_steps={rollout_steps}", f"run.checkpoint_every_steps={total}",
                 f"run.run_dir={out / ('ppo_' + obs_mode)}", "run.overwrite=true"]
    if obs_mode == "pointcloud":
        overrides.append("net.backbone=pointnet")
    if args.max_episode_steps:
        overrides.append(f"rollout.env.max_episode_steps={args.max_episode_steps}")
    cfg = load_config(PPOConfig, ROOT / "configs/ppo/pickcube_state.yaml", overrides)
    timeline = _Timeline()
    start = time.perf_counter()
    result = train_ppo(cfg, sink=timeline)
    wall = time.perf_counter() - start
    return dict(obs_mode=obs_mode, env_steps=result.env_steps, updates=result.updates, wall_s=round(wall, 1),
                env_steps_per_s=round(result.env_steps_per_s or 0.0, 1), target=TARGET[obs_mode],
                meets_target=(result.env_steps_per_s or 0.0) >= TARGET[obs_mode], num_envs=args.num_envs,
                workers=args.workers, rollout_steps=rollout_steps, timeline=timeline.rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--obs-modes", default="state,pointcloud")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--sim-python", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--env-steps", type=int, default=None, help="per mode (default: about a minute at the target)")
    p.add_argument("--rollout-steps", type=int, default=None)
    p.add_argument("--max-episode-steps", type=int, default=None, help="override the step limit (smoke tests)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    forbid_simulator_imports()
    out = Path(args.out)
    payload = dict(benchmark="gpu_ppo", host=host_info(), rows=[])
    for obs_mode in args.obs_modes.split(","):
        try:
            row = run_mode(obs_mode, args, out)
        except Exception as exc:  # noqa: BLE001 - the other mode still runs; the error is the result
            row = dict(obs_mode=obs_mode, error=f"{type(exc).__name__}: {exc}"[-2000:])
        payload["rows"].append(row)
        payload["simulator_modules_in_learner"] = [m for m in ("sapien", "mani_skill2") if m in sys.modules]
        write_json(out / "gpu_ppo.json", payload)
        print({k: v for k, v in row.items() if k != "timeline"}, flush=True)
    return 0 if all("error" not in r for r in payload["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
