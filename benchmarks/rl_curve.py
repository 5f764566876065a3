"""One learning curve from the run directories of successive commands of one RL run (issue 20).

A long run is several bounded commands (``run.stop_after_s``), each resuming the previous one's checkpoint,
possibly on different machines (the GPU host, then this CPU). This joins their ``train_result.json`` and
``metrics.jsonl`` in order, refuses a gap (each command must start at the env step and update the previous
one ended at: the resume feature continuing the same curve), and writes ``benchmarks/results/<name>.json``
with the periodic deterministic evaluations (Wilson 95% intervals), the training curve and, where the last
command ran one, the final evaluation; plus ``<name>.png`` (success rate vs env steps).

    python -m benchmarks.rl_curve --name ppo_pickcube_state_gpu_h50 \\
        --config configs/ppo/pickcube_state_gpu_h50.yaml RUN_DIR1=H200 RUN_DIR2=H200 RUN_DIR3="this CPU"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks._common import write_result


def read_command(run_dir: Path) -> dict:
    result = json.loads((run_dir / "train_result.json").read_text())
    config = json.loads((run_dir / "resolved_config.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"result": result, "config": config, "rows": rows}


def interval(rate: float, n: int) -> tuple[float, float]:
    from ms2core.evaluation import rate_ci95

    successes = round(rate * n)
    stat = rate_ci95([1.0] * successes + [0.0] * (n - successes))
    return stat.ci95_low, stat.ci95_high


def join(commands: list[tuple[Path, str]]) -> dict:
    evals, curve, parts, ends, final = [], [], [], [], None
    previous = None
    for index, (run_dir, where) in enumerate(commands, start=1):
        c = read_command(run_dir)
        r, run_cfg = c["result"], c["config"]["run"]
        if previous is not None and (r["start_env_step"], r["start_update"]) != (previous["env_steps"],
                                                                                  previous["updates"]):
            raise SystemExit(f"{run_dir}: starts at env step {r['start_env_step']} / update {r['start_update']}, "
                             f"but the command before it ended at {previous['env_steps']} / {previous['updates']}: "
                             "not one curve (was it resumed from that command's checkpoint?)")
        previous = r
        n_eval = int(run_cfg["eval_every_episodes"])
        parts.append({"command": index, "where": where, "run_dir": str(run_dir),
                      "start_env_step": r["start_env_step"], "env_steps": r["env_steps"],
                      "updates": r["updates"], "env_steps_per_s": round(r["env_steps_per_s"], 1),
                      "device": run_cfg["device"], "num_envs": c["config"]["rollout"]["num_envs"],
                      "num_procs": c["config"]["rollout"]["num_procs"]})
        for row in c["rows"]:
            m, step = row["metrics"], int(row["step"])
            if "periodic_eval/success_rate" in m:
                low, high = interval(m["periodic_eval/success_rate"], n_eval)
                evals.append({"env_steps": step, "success_rate": m["periodic_eval/success_rate"],
                              "ci95": [round(low, 4), round(high, 4)], "episodes": n_eval,
                              "mean_return": m["periodic_eval/mean_return"], "command": index})
            if "mean_return" in m:
                curve.append({"env_steps": step, "train_mean_return": round(m["mean_return"], 3),
                              "train_success_rate": round(m["success_rate"], 4),
                              "env_steps_per_s": round(m["env_steps_per_s"], 1), "command": index,
                              **{k: round(v, 4) for k, v in m.items() if k.startswith("time/")}})
            if "eval_success_rate" in m:
                n = int(run_cfg["eval_episodes"])
                low, high = interval(m["eval_success_rate"], n)
                final = {"env_steps": step, "success_rate": m["eval_success_rate"], "episodes": n,
                         "ci95": [round(low, 4), round(high, 4)], "mean_return": m["eval_mean_return"],
                         "by": "the command's final evaluation"}
                ends.append(final)
    return {"commands": parts, "periodic_eval": evals, "curve": curve, "final_evaluation": final,
            "checkpoint_evaluations": ends}


def evaluation_point(ev: dict) -> dict:
    """An ``ms2 evaluate`` result.json as one point of a curve."""
    rate = ev["success_once"]
    return {"env_steps": ev["checkpoint_step"], "success_rate": rate["mean"], "episodes": ev["num_episodes"],
            "ci95": [round(rate["ci95_low"], 4), round(rate["ci95_high"], 4)],
            "mean_return": ev["episode_return"]["mean"], "seed": ev["seed"], "by": "ms2 evaluate"}


def point(ax, e: dict, **style) -> None:
    """One evaluation ({success_rate, ci95}) at its env step, with its 95% interval."""
    ax.errorbar([e["env_steps"] / 1e6], [e["success_rate"]], yerr=[[e["success_rate"] - e["ci95"][0]],
                [e["ci95"][1] - e["success_rate"]]], **style)


def finish(fig, ax, path: Path, title: str, xlabel: str, ylim=(0, 1), **legend) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("success rate")
    ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.legend(**legend)
    fig.tight_layout()
    fig.savefig(path)


def plot(payload: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ev = payload["periodic_eval"]
    x = [e["env_steps"] / 1e6 for e in ev]
    ax.fill_between(x, [e["ci95"][0] for e in ev], [e["ci95"][1] for e in ev], alpha=0.2, label="95% interval")
    ax.plot(x, [e["success_rate"] for e in ev], marker="o", ms=3, label=f"periodic eval ({ev[0]['episodes']} episodes)")
    for part in payload["commands"][1:]:
        ax.axvline(part["start_env_step"] / 1e6, color="grey", lw=0.6, ls=":")
    for i, e in enumerate(payload.get("checkpoint_evaluations", [])[:-1]):
        point(ax, e, fmt="s", color="grey", ms=4, label=f"a checkpoint ({e['episodes']} episodes)" if i == 0 else None)
    if payload["final_evaluation"]:
        f = payload["final_evaluation"]
        point(ax, f, fmt="s", color="k", label=f"final ({f['episodes']} episodes)")
    finish(fig, ax, path, title, "env steps (millions); dotted: a resumed command", fontsize=7, loc="upper left")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--config", required=True, help="the committed config the run used")
    p.add_argument("--what", default="")
    p.add_argument("--evaluation", action="append", default=[],
                   help="an `ms2 evaluate` result.json of a command's last checkpoint (repeatable): the 100-episode "
                        "evaluations along the curve; the one of the last command's checkpoint is the final "
                        "evaluation where that command ran none (stopped by a signal or run.stop_after_s)")
    p.add_argument("runs", nargs="+", help="RUN_DIR=WHERE, in command order")
    args = p.parse_args(argv)
    commands = []
    for item in args.runs:
        run_dir, _, where = item.partition("=")
        if not (Path(run_dir) / "train_result.json").is_file():
            print(f"{run_dir}: no train_result.json (not a finished command's run directory)", file=sys.stderr)
            return 2
        commands.append((Path(run_dir), where or "?"))
    payload = {"benchmark": args.name, "config": args.config, "what": args.what, **join(commands)}
    ends = {part["env_steps"] for part in payload["commands"]}
    for path in args.evaluation:
        ev = json.loads(Path(path).read_text())
        if ev["checkpoint_step"] not in ends:
            print(f"{path} evaluated the checkpoint of env step {ev['checkpoint_step']}, which no command ended at "
                  f"({sorted(ends)})", file=sys.stderr)
            return 2
        payload["checkpoint_evaluations"].append(evaluation_point(ev))
    payload["checkpoint_evaluations"].sort(key=lambda e: e["env_steps"])
    last = payload["commands"][-1]["env_steps"]
    if payload["checkpoint_evaluations"] and payload["checkpoint_evaluations"][-1]["env_steps"] == last:
        payload["final_evaluation"] = payload["checkpoint_evaluations"][-1]
    out = write_result(args.name, payload)
    png = out.with_suffix(".png")
    plot(payload, png, f"{args.name} ({args.config})")
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
