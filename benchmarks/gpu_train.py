"""Long RL training on the GPU host through the product's train stage, one bounded command at a time.

``pipelines.train.run`` (what ``ms2 train <algo>`` calls; the CLI's typer/rich and MLflow are not on the
GPU host) with a committed config, the learner in this process (host Python, CUDA), simulator workers
in the runtime (``--sim-python``), ``run.stop_after_s`` so the command ends cleanly with its checkpoint
before the device's 10-minute limit, and ``--resume-from`` to continue the same curve (env step counter,
optimiser, normalisers, RNG states) in the next command or on the next lending of the machine. The run
directory (checkpoint.pt, metrics.jsonl, train_result.json) is written under ``--out`` and comes back.

    python -m benchmarks.gpu_train --algo ppo --config configs/ppo/pickcube_state_gpu.yaml \\
        --sim-python /opt/ms2rt/bin/python --out $OUT/ppo_state --stop-after-s 420 [--resume-from CKPT]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import _gpu_host


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", default="ppo", choices=["ppo", "dapg"])
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], help="dotted override, repeatable")
    p.add_argument("--sim-python", required=True)
    p.add_argument("--resume-from", default=None)
    p.add_argument("--stop-after-s", type=float, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    _gpu_host.forbid_simulator_imports()
    import torch

    from ms2core.algos.table import algorithm
    from ms2core.config import load_config
    from pipelines import train

    out = Path(args.out)
    overrides = [f"rollout.sim_python={args.sim_python}", f"run.run_dir={out / 'run'}",
                 f"run.stop_after_s={args.stop_after_s}", "run.eval_episodes=0",
                 f"run.device={'cuda' if torch.cuda.is_available() else 'cpu'}", *args.set]
    cfg = load_config(algorithm(args.algo).config_model, args.config, overrides)
    start = time.perf_counter()
    result = train.run(cfg, args.algo, resume_from=args.resume_from, progress=False, evaluate=False)
    _gpu_host.write_json(out / "gpu_train.json", dict(
        algo=args.algo, config=args.config, overrides=overrides, resumed_from=args.resume_from,
        start_env_step=result.start_env_step, env_steps=result.env_steps, updates=result.updates,
        wall_s=round(time.perf_counter() - start, 1), env_steps_per_s=result.env_steps_per_s,
        checkpoint=result.final_checkpoint, eval_curve=result.eval_curve, host=_gpu_host.host_info()))
    print(f"{args.algo}: env steps {result.start_env_step}..{result.env_steps} in "
          f"{time.perf_counter() - start:.0f} s; checkpoint {result.final_checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
