"""How much of a Gaussian policy's skill survives its own exploration noise (issue 20, DAPG on PickCube).

PPO (and so DAPG) learns only from the episodes its *sampled* actions produce. A policy pre-trained by
behaviour cloning can succeed with its mean action and never with sampled ones; then no rollout shows the
RL term the demonstrated skill. This evaluates one PPO/DAPG checkpoint with ``ms2 evaluate``'s evaluation
(same seeds for every row): the mean action, sampled actions with the actor's own ``log_std``, then sampled
actions with ``log_std`` set to each value given (every action dimension). From the saved trajectories it also
counts, per episode, whether the cube was ever lifted (above 4 cm) and ever placed (the task's
``is_obj_placed``), by restoring each recorded env state.

    python -m benchmarks.exploration_noise --checkpoint RUN/checkpoint.pt --log-stds -1.5 -2 -2.5 -3 \\
        --episodes 50 --procs 2 --out benchmarks/results/dapg_exploration_noise.json
"""

from __future__ import annotations

import ms2core  # noqa: F401  (first: pins the BLAS kernel before numpy loads)

import argparse
import json
import tempfile
from pathlib import Path

import h5py
import torch

from ms2core.envs import make_env
from ms2core.evaluation import evaluate
from storage_schemas.training import EvalConfig

LIFTED_Z = 0.04  # the cube's centre, half-size 2 cm, at least 2 cm off the table


def episode_milestones(traj_path: Path, env_id: str, control_mode: str, seed: int) -> dict[str, float]:
    """Fractions of episodes that ever lifted / placed the cube, from the recorded env states."""
    env = make_env(env_id, obs_mode="state", control_mode=control_mode).unwrapped
    lifted = placed = 0
    with h5py.File(traj_path, "r") as f:
        n = len(f)
        for i in range(n):
            env.reset(seed=seed + i)
            ever_lifted = ever_placed = False
            for state in f[f"traj_{i}"]["env_states"][:]:
                env.set_state(state)
                ever_lifted |= bool(env.obj.pose.p[2] > LIFTED_Z)
                ever_placed |= bool(env.evaluate()["is_obj_placed"])
            lifted += ever_lifted
            placed += ever_placed
    env.close()
    return {"lifted_once": lifted / n, "placed_once": placed / n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--log-stds", type=float, nargs="*", default=[-1.5, -2.0, -2.5, -3.0])
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--seed", type=int, default=10000)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    if "log_std" not in ckpt.get("actor", {}):
        raise SystemExit(f"{args.checkpoint}: not a Gaussian-policy (PPO/DAPG) checkpoint: no actor log_std")
    env_cfg = ckpt["config"]["rollout"]["env"]  # a PPO/DAPG checkpoint: its rollout env
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        own = [round(float(x), 3) for x in ckpt["actor"]["log_std"]]
        # (sample mode, log_std recorded in the row, log_std written into a copy of the checkpoint or None)
        settings = [("mean", None, None), ("sample", own, None)] + [("sample", s, s) for s in args.log_stds]
        for i, (mode, log_std, override) in enumerate(settings):
            path = Path(args.checkpoint)
            if override is not None:
                ckpt["actor"]["log_std"].fill_(override)
                path = Path(tmp) / f"log_std{override}.pt"
                torch.save(ckpt, path)
            out_dir = Path(tmp) / f"eval_{i}"
            result = evaluate(EvalConfig(checkpoint=str(path), num_episodes=args.episodes, num_procs=args.procs,
                                         seed=args.seed, sample_mode=mode, save_traj=True,
                                         output_dir=str(out_dir)), progress=False)
            row = dict(sample_mode=mode, log_std=log_std, success_once=result.success_once.mean,
                       success_ci95=[result.success_once.ci95_low, result.success_once.ci95_high],
                       mean_return=result.episode_return.mean,
                       **episode_milestones(out_dir / "trajectory.h5", env_cfg["env_id"], env_cfg["control_mode"],
                                            args.seed))
            rows.append(row)
            print(json.dumps(row))
    out = dict(checkpoint=args.checkpoint, env_steps=int(ckpt.get("env_steps", 0)), episodes=args.episodes,
               seed=args.seed, rows=rows)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
