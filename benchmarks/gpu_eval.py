"""Evaluation of a point-cloud BC checkpoint with N simulator workers in the runtime, the policy here (CUDA).

Run with the learner's Python (the GPU host's 3.12 + CUDA torch); the workers are started with
``--sim-python`` (the simulator runtime's ``bin/python``) and step one env each; this process batches
their observations and runs the policy once per step (``EvalConfig.policy_in=parent``,
``policy_device``). sapien / mani_skill2 imports are refused in this process (benchmarks/_gpu_host.py).

    python -m benchmarks.gpu_eval --checkpoint CKPT.pt --episodes 100 --workers 16 \\
        --sim-python /opt/ms2rt/bin/python --out DIR
    # train the checkpoint first (BC, configs/bc/pickcube_pointcloud.yaml) from a carried point-cloud store:
    python -m benchmarks.gpu_eval --train-store STORE.zarr --train-steps 5000 --episodes 100 --workers 16 ...

Writes DIR/gpu_eval.json: wall time of the evaluation (workers' start-up included) and of the
episodes alone, episodes/s, env steps/s, success rate; where the policy ran and on which device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks._gpu_host import forbid_simulator_imports, host_info, write_json

ROOT = Path(__file__).resolve().parents[1]


def train_checkpoint(store: str, steps: int, device: str, data_dir: Path) -> tuple[str, dict]:
    """BC on ``store`` with the project's point-cloud config (the README's 38% recipe, fewer steps)."""
    import os

    os.environ["MS2FLOW_DATA_DIR"] = str(data_dir)
    from ms2core.algos.bc import train
    from ms2core.config import load_config
    from storage_schemas.training import BCConfig

    cfg = load_config(BCConfig, ROOT / "configs/bc/pickcube_pointcloud.yaml",
                      [f"dataset.paths=[{store}]", f"train.num_steps={steps}", "run.run_name=gpu_eval",
                       f"run.device={device}", f"train.checkpoint_every_steps={steps}", "train.log_every_steps=500"])
    start = time.perf_counter()
    result = train(cfg, progress=False)
    return result.final_checkpoint, dict(steps=steps, wall_s=round(time.perf_counter() - start, 1),
                                   updates_per_s=result.updates_per_s, final_loss=result.final_loss, store=store)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint")
    p.add_argument("--train-store", help="train a BC checkpoint on this point-cloud store first")
    p.add_argument("--train-steps", type=int, default=5000)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--sim-python", required=True)
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    p.add_argument("--max-episode-steps", type=int, default=None, help="override the step limit (smoke tests)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    forbid_simulator_imports()
    import torch

    from ms2core.evaluation import evaluate
    from storage_schemas.training import EvalConfig

    out = Path(args.out)
    payload = dict(benchmark="gpu_eval", host=host_info(), episodes=args.episodes, workers=args.workers)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    checkpoint = args.checkpoint
    if args.train_store:
        checkpoint, payload["trained"] = train_checkpoint(args.train_store, args.train_steps, device, out / "ms2data")
        write_json(out / "gpu_eval.json", payload)
    if not checkpoint:
        p.error("give --checkpoint or --train-store")
    cfg = EvalConfig(checkpoint=str(checkpoint), num_episodes=args.episodes, num_procs=args.workers,
                     sim_python=args.sim_python, policy_in="parent", policy_device=device, seed=0,
                     max_episode_steps=args.max_episode_steps, output_dir=str(out / "eval"))
    start = time.perf_counter()
    result = evaluate(cfg, progress=False)
    wall = time.perf_counter() - start
    steps = sum(e.length for e in result.episodes)
    payload.update(checkpoint=str(checkpoint), policy_device=device, policy_in="parent",
                   wall_s=round(wall, 1), episodes_wall_s=round(result.wall_time_s, 1),
                   episodes_per_s=round(args.episodes / result.wall_time_s, 2),
                   env_steps=steps, env_steps_per_s=round(steps / result.wall_time_s, 1),
                   success_once=result.success_once.mean, success_ci95=[result.success_once.ci95_low,
                                                                        result.success_once.ci95_high],
                   mean_episode_length=result.episode_length.mean,
                   simulator_modules_in_learner=[m for m in ("sapien", "mani_skill2") if m in sys.modules])
    write_json(out / "gpu_eval.json", payload)
    print({k: payload[k] for k in ("wall_s", "episodes_wall_s", "env_steps_per_s", "success_once", "policy_device")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
