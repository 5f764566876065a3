"""DAPG with demos vs plain PPO on PickCube-v0 (state observations, pd_ee_delta_pose), same env-step budget, same seeds.

    python -m benchmarks.pickcube_dapg_vs_ppo \\
        --dataset ms2data/datasets/PickCube-v0/<...>.pd_ee_delta_pose.state.<version>.zarr \\
        --env-steps 80000 --seeds 0 1 2 --eval-every 20000 --eval-episodes 20 --rollout-steps 4000 \\
        --set net.init_log_std=-1.5

(the DAPG config explores with init_log_std -1.5; the networks of both must match or the script refuses).

SLOW: hours on a small CPU machine (PickCube state steps at a few hundred env
steps/s per process); not part of CI. Issue 8's bar: DAPG with the generated
demos beats plain PPO at the same env-step budget.

Both algorithms start from the repository's configs (configs/ppo/pickcube_state.yaml,
configs/dapg/pickcube_state.yaml: ManiSkill2-Learn's PPO settings, gamma = lambda
= 0.95, 2 epochs, KL early stop, critic warm-up; DAPG adds lambda_k = dapg_lambda * 0.995^k
on the demo log-likelihood) with identical rollout, network and budget overrides,
so the only difference is the demos: DAPG's decaying demo term and, with the
config's ``dapg.bc_pretrain_steps``, a behaviour-cloning fit of the actor's mean before
the first env step (no env steps spent; ``--set dapg.bc_pretrain_steps=0`` for
ManiSkill2-Learn's DAPG without it). ``--set`` overrides under ``dapg.``/``demos.``
apply to DAPG only. PPO is the baseline measured in the same
run. Every ``--eval-every`` env steps (and at step 0) the policy is evaluated
deterministically (mean action) for ``--eval-episodes`` episodes; the curves
(env steps, success rate, mean return per seed) and a final table (success at
the end of training, mean +- std over seeds) go to
benchmarks/results/pickcube_dapg_vs_ppo.json, rewritten after every finished run
with ``"complete": false`` until all runs are done.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import write_result
from ms2core.config import load_config
from storage_schemas.rl import DAPGConfig, PPOConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"ppo": (PPOConfig, ROOT / "configs/ppo/pickcube_state.yaml"),
           "dapg": (DAPGConfig, ROOT / "configs/dapg/pickcube_state.yaml")}
NAME = "pickcube_dapg_vs_ppo"


class ProgressSink:
    """One line per log interval: the numbers worth watching during a long run."""

    def __init__(self, label: str):
        self.label, self.t0 = label, time.perf_counter()

    def log(self, metrics: dict, step: int) -> None:
        keys = ("periodic_eval/success_rate", "success_rate", "mean_return", "env_steps_per_s", "dapg_weight",
                "demo_nll")
        shown = " ".join(f"{k}={metrics[k]:.3g}" for k in keys if k in metrics and metrics[k] == metrics[k])
        print(f"[{self.label} {time.perf_counter() - self.t0:7.0f}s] steps={step} {shown}", flush=True)

    def close(self) -> None:
        pass


def run_config(algo: str, seed: int, args, run_dir: Path):
    model, path = CONFIGS[algo]
    overrides = [
        f"run.seed={seed}", f"run.total_env_steps={args.env_steps}", f"run.eval_every_steps={args.eval_every}",
        f"run.eval_every_episodes={args.eval_episodes}", "run.eval_episodes=0", "run.checkpoint_every_steps=0",
        f"run.log_every_steps={args.log_every or args.eval_every}", f"run.run_dir={run_dir}",
        f"run.torch_threads={args.torch_threads}",
        f"rollout.num_envs={args.num_envs}", f"rollout.num_procs={args.num_procs}",
    ]
    if args.rollout_steps:
        overrides.append(f"ppo.rollout_steps={args.rollout_steps}")
    if algo == "dapg":
        overrides.append(f"demos.path={args.dataset}")
    # --set dapg.* / demos.* reach DAPG only (PPO's config has no such sections)
    extra = [o for o in args.set or [] if algo == "dapg" or not o.startswith(("dapg.", "demos."))]
    return load_config(model, path, overrides + extra)


def train(algo: str, cfg, seed: int) -> dict:
    from ms2core.algos.dapg import train_dapg
    from ms2core.algos.ppo import train_ppo

    start = time.perf_counter()
    result = (train_dapg if algo == "dapg" else train_ppo)(cfg, ProgressSink(f"{algo} seed {seed}"))
    wall_s = time.perf_counter() - start
    return {
        "algo": algo, "seed": seed, "env_steps": result.env_steps, "updates": result.updates, "wall_s": wall_s,
        "env_steps_per_s_overall": result.env_steps / wall_s,  # rollouts + learner + periodic evaluation
        "curve": [{"env_steps": int(p["env_steps"]), "success_rate": p["success_rate"],
                   "mean_return": p["mean_return"]} for p in result.eval_curve],
        "train_curve": result.curve,
        "final_success_rate": result.eval_curve[-1]["success_rate"] if result.eval_curve else None,
    }


def _mean_over_steps(curve: list[dict]) -> float:
    """Trapezoid area under success rate vs env steps, divided by the steps covered."""
    x = np.array([p["env_steps"] for p in curve], float)
    y = np.array([p["success_rate"] for p in curve], float)
    return float(((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2).sum() / max(x[-1] - x[0], 1.0))


def summarise(runs: list[dict]) -> dict:
    table = {}
    for algo in CONFIGS:
        finals = [r["final_success_rate"] for r in runs if r["algo"] == algo and r["final_success_rate"] is not None]
        # area under the success curve / budget: who learns sooner, not only who ends higher
        areas = [_mean_over_steps(r["curve"]) for r in runs if r["algo"] == algo and len(r["curve"]) > 1]
        if finals:
            table[algo] = {"seeds": len(finals), "final_success_mean": float(np.mean(finals)),
                           "final_success_std": float(np.std(finals)),
                           "mean_success_over_training": float(np.mean(areas)) if areas else None,
                           "env_steps_per_s_overall": float(np.mean([r["env_steps_per_s_overall"] for r in runs
                                                                     if r["algo"] == algo]))}
    if "ppo" in table and "dapg" in table:
        table["dapg_minus_ppo_final_success"] = table["dapg"]["final_success_mean"] - table["ppo"]["final_success_mean"]
    return table


def print_table(table: dict) -> None:
    print(f"{'algo':<6} {'seeds':>5} {'final success (mean +- std)':>28} {'mean success over training':>27}")
    for algo in CONFIGS:
        if algo in table:
            row = table[algo]
            area = row["mean_success_over_training"]
            print(f"{algo:<6} {row['seeds']:>5} {row['final_success_mean']:>20.3f} +- {row['final_success_std']:.3f}"
                  f" {area if area is not None else float('nan'):>27.3f}")
    if "dapg_minus_ppo_final_success" in table:
        print(f"DAPG - PPO final success: {table['dapg_minus_ppo_final_success']:+.3f}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="state Zarr dataset of PickCube-v0 demos (pd_ee_delta_pose)")
    p.add_argument("--env-steps", type=int, default=1_000_000, help="env-step budget per run (both algorithms)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--algos", nargs="+", choices=sorted(CONFIGS), default=["ppo", "dapg"])
    p.add_argument("--eval-every", type=int, default=50_000, help="env steps between deterministic evaluations")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--log-every", type=int, default=None, help="env steps between progress lines (default: eval)")
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--num-procs", type=int, default=2)
    p.add_argument("--rollout-steps", type=int, default=None, help="override ppo.rollout_steps (config: 20000)")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--set", action="append", help="extra config override for both algorithms, e.g. ppo.lr=1e-4")
    p.add_argument("--out-name", default=NAME, help="results file name under benchmarks/results/")
    args = p.parse_args(argv)
    if not Path(args.dataset).exists():
        p.error(f"--dataset {args.dataset} does not exist")
    torch.set_num_threads(args.torch_threads)
    if {"ppo", "dapg"} <= set(args.algos):  # a fair comparison: the same network, exploration noise included
        nets = {algo: run_config(algo, 0, args, Path(".")).net.model_dump() for algo in ("ppo", "dapg")}
        differ = {k: (nets["ppo"][k], nets["dapg"][k]) for k in nets["ppo"] if nets["ppo"][k] != nets["dapg"][k]}
        if differ:
            p.error("the PPO and DAPG configs use different networks: " + ", ".join(
                f"net.{k} = {a!r} (ppo) vs {b!r} (dapg)" for k, (a, b) in differ.items())
                + "; pass --set net.<key>=<value> so both use the same")

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dapg_vs_ppo_") as tmp:
        for seed in args.seeds:
            for algo in args.algos:  # same seed back to back: both see the same env seeds and network init seed
                cfg = run_config(algo, seed, args, Path(tmp) / f"{algo}_seed{seed}")
                runs.append(train(algo, cfg, seed))
                complete = len(runs) == len(args.seeds) * len(args.algos)
                payload = {"args": vars(args), "complete": complete, "baseline": "ppo", "summary": summarise(runs),
                           "runs": runs}
                path = write_result(args.out_name, payload)
    table = summarise(runs)
    print_table(table)
    print("wrote", path)
    return json.loads(path.read_text())


if __name__ == "__main__":
    main()
