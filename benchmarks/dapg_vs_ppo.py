"""DAPG against PPO from scratch on one task (issue 20 item 2): success rate vs env steps, one plot.

PPO's curve is a committed ``benchmarks.rl_curve`` result (``--ppo``). Each DAPG run (``--run``, repeatable,
one per seed) is the ``gpu_train.json`` of its last command, or for a run elsewhere its run directory's
``train_result.json`` (either's ``eval_curve`` holds the periodic evaluations of every command, carried in
the checkpoint), plus the ``ms2 evaluate`` result.json of its last
checkpoint (``--evaluation NAME=result.json``) and, for the actor before any RL update, one of the
pre-trained policy (``--pretrained result.json``). The JSON names the env step at which each run first
reached PPO's final success rate (periodic evaluations), against half of PPO's env steps (the target).

    python -m benchmarks.dapg_vs_ppo --name dapg_vs_ppo_pickcube_state_fast_demos \\
        --ppo benchmarks/results/ppo_pickcube_state_gpu_h50.json --config configs/dapg/X.yaml \\
        --run seed0=RUN0/gpu_train.json --run seed1=RUN1/gpu_train.json \\
        --evaluation seed0=EVAL0/result.json --evaluation seed1=EVAL1/result.json --pretrained EVAL/result.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import write_result
from benchmarks.rl_curve import evaluation_point, finish, interval, point


def _pairs(items: list[str], what: str) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--{what} {item!r}: expected NAME=PATH of an existing file")
        out[name] = Path(path)
    return out


def _evaluation(path: Path) -> dict:
    ev = json.loads(path.read_text())
    return dict(evaluation_point(ev), mean_episode_length=round(ev["episode_length"]["mean"], 2))


def _run(path: Path) -> dict:
    """gpu_train.json (GPU host), or a run directory's train_result.json (``ms2 train`` anywhere)."""
    run = json.loads(path.read_text())
    if "overrides" not in run:  # train_result.json: the run's overrides are not kept, its resolved config is
        run = dict(run, overrides=[f"(resolved config: {path.parent / 'resolved_config.json'})"])
    return run


def compare(ppo: dict, runs: dict[str, dict], evaluations: dict[str, dict], episodes_per_eval: int) -> dict:
    ppo_final = ppo["final_evaluation"]
    target_steps = ppo_final["env_steps"] / 2
    out = {}
    for name, run in runs.items():
        curve = [{"env_steps": int(e["env_steps"]), "success_rate": round(e["success_rate"], 4),
                  "ci95": list(interval(e["success_rate"], episodes_per_eval)), "episodes": episodes_per_eval}
                 for e in run["eval_curve"]]
        reached = next((e["env_steps"] for e in curve if e["success_rate"] >= ppo_final["success_rate"]), None)
        final = evaluations.get(name)
        if final and final["env_steps"] != run["env_steps"]:
            raise SystemExit(f"{name}: the evaluation is of env step {final['env_steps']}, the run ended at "
                             f"{run['env_steps']}")
        out[name] = {"overrides": [o for o in run["overrides"] if not o.startswith(("rollout.sim_python",
                                                                                    "run.run_dir", "run.stop"))],
                     "env_steps": run["env_steps"], "updates": run["updates"],
                     "env_steps_per_s_last_command": round(run["env_steps_per_s"], 1), "periodic_eval": curve,
                     "first_periodic_eval_at_or_above_ppo_final": reached,
                     "final_evaluation": final,
                     "final_at_or_above_ppo_final_within_half_its_steps": bool(
                         final and final["success_rate"] >= ppo_final["success_rate"]
                         and final["env_steps"] <= target_steps)}
    return {"ppo_final": ppo_final, "target_env_steps": target_steps, "runs": out}


def plot(payload: dict, ppo: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ev = ppo["periodic_eval"]
    ax.plot([e["env_steps"] / 1e6 for e in ev], [e["success_rate"] for e in ev], marker=".", ms=3, color="grey",
            label=f"PPO from scratch (periodic, {ev[0]['episodes']} episodes)")
    point(ax, payload["ppo_final"], fmt="s", color="grey", label="PPO final (100 episodes)")
    ax.axvline(payload["target_env_steps"] / 1e6, color="k", lw=0.7, ls="--", label="half of PPO's env steps")
    for i, (name, run) in enumerate(payload["runs"].items()):
        color = f"C{i}"
        ax.plot([e["env_steps"] / 1e6 for e in run["periodic_eval"]], [e["success_rate"] for e in run["periodic_eval"]],
                marker="o", ms=3, color=color, label=f"DAPG {name} (periodic)")
        if run["final_evaluation"]:
            point(ax, run["final_evaluation"], fmt="s", color=color, label=f"DAPG {name} final (100 episodes)")
    if payload.get("pretrained_evaluation"):
        point(ax, payload["pretrained_evaluation"], fmt="D", color="k", ms=4, label="pre-trained actor (100 episodes)")
    finish(fig, ax, path, title, "env steps (millions)", ylim=(0, 1.02), fontsize=6, loc="center right")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--config", required=True, help="the committed DAPG config")
    p.add_argument("--ppo", required=True, help="benchmarks.rl_curve result of PPO from scratch")
    p.add_argument("--run", action="append", required=True,
                   help="NAME=gpu_train.json (or run dir's train_result.json) of a run's last command")
    p.add_argument("--evaluation", action="append", default=[], help="NAME=result.json of its last checkpoint")
    p.add_argument("--pretrained", default=None, help="result.json of the pre-trained actor")
    p.add_argument("--episodes-per-eval", type=int, default=32, help="the runs' run.eval_every_episodes")
    p.add_argument("--what", default="")
    p.add_argument("--extra", default=None, help="a JSON file of further facts to keep with the result")
    args = p.parse_args(argv)
    ppo = json.loads(Path(args.ppo).read_text())
    runs = {n: _run(path) for n, path in _pairs(args.run, "run").items()}
    evaluations = {n: _evaluation(path) for n, path in _pairs(args.evaluation, "evaluation").items()}
    payload = {"config": args.config, "what": args.what, "ppo": args.ppo,
               **compare(ppo, runs, evaluations, args.episodes_per_eval)}
    if args.pretrained:
        payload["pretrained_evaluation"] = _evaluation(Path(args.pretrained))
    if args.extra:
        payload["extra"] = json.loads(Path(args.extra).read_text())
    out = write_result(args.name, payload)
    png = out.with_suffix(".png")
    plot(payload, ppo, png, f"{args.name} ({args.config})")
    print(f"wrote {out} and {png}")
    for name, run in payload["runs"].items():
        print(f"{name}: first periodic >= PPO's final {payload['ppo_final']['success_rate']:.0%} at "
              f"{run['first_periodic_eval_at_or_above_ppo_final']}; final {run['final_evaluation']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
