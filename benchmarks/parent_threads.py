"""A CPU policy on one torch thread while simulator workers step vs torch's default threads, same run.

Two product paths, real PickCube-v0 state envs in 2 worker processes, torch at its default thread count
in this process (the cores of the machine), each variant run twice, alternating:

- ``evaluate``: ``ms2 evaluate`` with ``policy_in=parent``, ``policy_device=cpu`` (the policy batches the
  workers' observations here every lock-step round) of ``--checkpoint`` (a state policy);
- ``rollout``: PPO's ``collect_rollout`` (a fresh actor-critic, 8 envs, ``--rollout-steps`` per env).

The baseline is the same code with ``ms2core.algos._common.one_thread_while_simulating`` replaced by a
no-op for the call. Prints seconds and the ratio baseline / one thread; writes
benchmarks/results/parent_threads.json.

    .venv/bin/python -m benchmarks.parent_threads [--checkpoint .gpu_inputs/ppo_h50/ckpt8.pt]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import write_result
from ms2core.algos import _common as common

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(env_id="PickCube-v0", obs_mode="state", control_mode="pd_ee_delta_pose", reward_mode="normalized_dense")


@contextlib.contextmanager
def _no_op(device, simulator_workers):
    yield


@contextlib.contextmanager
def variant(name: str):
    original = common.one_thread_while_simulating
    if name == "default_threads":
        common.one_thread_while_simulating = _no_op
    try:
        yield
    finally:
        common.one_thread_while_simulating = original


def evaluate_s(checkpoint: str, episodes: int, out: Path) -> float:
    from ms2core.evaluation import evaluate
    from storage_schemas.training import EvalConfig

    cfg = EvalConfig(checkpoint=checkpoint, num_episodes=episodes, num_procs=2, policy_in="parent",
                     policy_device="cpu", seed=0, output_dir=str(out))
    start = time.perf_counter()
    evaluate(cfg, progress=False)
    return time.perf_counter() - start


def rollout_s(steps: int) -> float:
    from ms2core.algos.ppo import build_actor_critic, collect_rollout
    from ms2core.rollout import vector_env_from_config
    from storage_schemas.rl import NetConfig, RolloutConfig

    torch.manual_seed(0)
    cfg = RolloutConfig.model_validate(dict(env=ENV, num_envs=8, num_procs=2, train_episode_steps=50))
    with vector_env_from_config(cfg, 0) as vec:
        obs = vec.reset()
        actor, critic = build_actor_critic({k: v.shape[1:] for k, v in obs.items()}, vec.action_dim,
                                           NetConfig(hidden_sizes=[256, 256]))
        collect_rollout(vec, obs, actor, critic, 5, torch.device("cpu"), None, [])  # warm-up
        start = time.perf_counter()
        collect_rollout(vec, obs, actor, critic, steps, torch.device("cpu"), None, [])
        return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / ".gpu_inputs/ppo_h50/ckpt8.pt"))
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--rollout-steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    if not Path(args.checkpoint).exists():
        p.error(f"--checkpoint {args.checkpoint} does not exist (any PPO/BC state checkpoint of PickCube-v0)")
    threads = torch.get_num_threads()
    times: dict[str, dict[str, list[float]]] = {"evaluate": {}, "rollout": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name in (("default_threads", "one_thread") if r % 2 == 0 else ("one_thread", "default_threads")):
                with variant(name):
                    times["evaluate"].setdefault(name, []).append(
                        evaluate_s(args.checkpoint, args.episodes, Path(tmp) / f"{name}{r}"))
                    times["rollout"].setdefault(name, []).append(rollout_s(args.rollout_steps))
                print(f"repeat {r} {name}: evaluate {times['evaluate'][name][-1]:.1f} s, "
                      f"rollout {times['rollout'][name][-1]:.1f} s", flush=True)
    rows = {}
    for path, t in times.items():
        base, fix = min(t["default_threads"]), min(t["one_thread"])
        rows[path] = dict(default_threads_s=[round(x, 2) for x in t["default_threads"]],
                          one_thread_s=[round(x, 2) for x in t["one_thread"]], speedup=round(base / fix, 2))
        print(f"{path}: default threads ({threads}) {base:.1f} s, one thread {fix:.1f} s: {base / fix:.2f}x")
    write_result("parent_threads", dict(what=__doc__.splitlines()[0], torch_default_threads=threads,
                                        episodes=args.episodes, rollout_steps_per_env=args.rollout_steps,
                                        checkpoint=Path(args.checkpoint).name, paths=rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
