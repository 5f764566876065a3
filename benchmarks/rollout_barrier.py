"""Where a lock-step rollout's time goes with the real simulator: env stepping, stragglers, the pool, the policy.

PickCube-v0 state (pd_ee_delta_pose, normalized dense reward, 50-step auto-reset episodes: the PPO
config ``configs/ppo/pickcube_state_gpu_h50.yaml``'s envs), ``VectorEnv`` over N worker processes, for
each layout ``ENVSxWORKERS``:

- ``free``: every worker steps its own envs ``--rounds`` times inside one call (no barrier, no wire):
  the rate the simulator gives this many processes on this machine (the raw baseline, same run);
- ``lockstep``: ``--rounds`` pool rounds, one call per worker per round, random actions (as
  ``VectorEnv.step`` does, through the same wire); each worker also reports the time its envs took,
  so a round splits into ``busy_mean`` (the average worker's stepping), ``straggler`` (the slowest
  worker's stepping minus the average) and ``pool`` (round wall minus the slowest worker: wire,
  wake-ups, the parent's own work);
- with ``--policy-weights`` (an ``--export-actor`` .npz of a PPO state checkpoint), both phases step with
  that actor's mean actions instead of random ones (numpy, parent side for lock-step, in each worker for
  the free run): a learned policy grasps and holds the cube, and those steps cost the simulator more;
- with ``--policy-device``, a 256x256 MLP forward per round on that device in this process (torch
  must import here; the learner's cost per round in a PPO rollout), timed separately, with
  ``--parent-threads`` torch threads (1 = ``run.torch_threads``' default; 0 = torch's own, which on
  a 2-core machine here doubled the round: idle OpenMP threads spin on the workers' cores).

Run under the simulator runtime's ``bin/python`` (no torch needed), or the learner's Python with
``--sim-python`` and ``--policy-device cuda``; writes OUT/rollout_barrier.json.

    python -m benchmarks.rollout_barrier --layouts 64x16,64x15,64x8,128x16 --rounds 150 --out DIR
    .venv/bin/python -m benchmarks.rollout_barrier --layouts 4x2 --rounds 20 --out /tmp/rb  # CPU smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODULE = "benchmarks.rollout_barrier"  # workers import the work functions by this name (not __main__)


# -- worker side ----------------------------------------------------------------------------------

def _timed_step(actions):
    """One lock-step round of this worker's envs, and how long the envs took here."""
    from ms2core.rollout import _step_slots

    start = time.perf_counter()
    group = _step_slots(actions)
    return group, time.perf_counter() - start


def _mlp_actions(weights: dict, obs: np.ndarray) -> np.ndarray:
    """The PPO actor's mean action (policy space, [-1, 1] after clipping) in numpy: the runtime has no torch."""
    h = np.maximum(obs @ weights["w0"].T + weights["b0"], 0.0)
    h = np.maximum(h @ weights["w1"].T + weights["b1"], 0.0)
    return np.clip(h @ weights["w2"].T + weights["b2"], -1.0, 1.0).astype(np.float32)


def _free_run(rounds: int, seed: int, weights: dict | None = None) -> dict:
    """This worker's envs stepped ``rounds`` times, no barrier: the seconds it took. Random actions, or with
    ``weights`` the actor's mean actions from each env's own observation (episodes restart here first)."""
    from ms2core.envs.cache import env_cache
    from ms2core.rollout import _SLOTS_KEY

    slots = env_cache().peek(_SLOTS_KEY).slots
    space = slots[0].env.action_space
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    rng = np.random.default_rng(seed)
    obs = [_flat({k: v[None] for k, v in s.reset().items()}) for s in slots] if weights else None
    start = time.perf_counter()
    for _ in range(rounds):
        for j, s in enumerate(slots):
            if weights is None:
                s.step(rng.uniform(low, high).astype(np.float32))
                continue
            a = _mlp_actions(weights, obs[j])[0]
            obs[j] = _flat({k: v[None] for k, v in s.step(low + (a + 1.0) * 0.5 * (high - low)).obs.items()})
    return {"seconds": time.perf_counter() - start, "envs": len(slots), "rounds": rounds}


def export_actor(checkpoint: str, out: str) -> None:
    """The MLP actor of a PPO/DAPG state checkpoint as an .npz of w0, b0, w1, b1, w2, b2 (needs torch)."""
    from ms2core.algos.policies import load_policy

    policy, _ = load_policy(checkpoint)
    linears = [m for m in policy.actor.modules() if m.__class__.__name__ == "Linear"]
    if len(linears) != 3:
        raise SystemExit(f"{checkpoint}: expected an MLP actor of 3 linear layers, found {len(linears)}")
    arrays = {}
    for i, m in enumerate(linears):
        arrays[f"w{i}"] = m.weight.detach().numpy().astype(np.float32)
        arrays[f"b{i}"] = m.bias.detach().numpy().astype(np.float32)
    np.savez(out, **arrays)


# -- parent side ----------------------------------------------------------------------------------

def _factory(episode_steps: int):
    from ms2core.rollout import EnvFactory
    from storage_schemas.env import EnvConfig

    env = EnvConfig(env_id="PickCube-v0", obs_mode="state", control_mode="pd_ee_delta_pose",
                    reward_mode="normalized_dense", max_episode_steps=episode_steps)
    return EnvFactory(env, continue_after_success=True)


def _policy(device: str | None, obs_dim: int, act_dim: int, threads: int):
    if not device:
        return None
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(obs_dim, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                              torch.nn.ReLU(), torch.nn.Linear(256, act_dim), torch.nn.Tanh()).to(device)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(obs, device=device)).cpu().numpy()

    return act


def _flat(obs: dict) -> np.ndarray:
    return np.concatenate([v.reshape(len(v), -1).astype(np.float32) for v in obs.values()], axis=1)


def run_layout(num_envs: int, workers: int, args) -> dict:
    from ms2core.rollout import VectorEnv

    made = time.perf_counter()
    with VectorEnv(_factory(args.episode_steps), num_envs, workers, seed=0, sim_python=args.sim_python) as vec:
        start_s = time.perf_counter() - made
        obs = _flat(vec.reset())
        act = _policy(args.policy_device, obs.shape[1], vec.action_dim, args.parent_threads)
        weights = dict(np.load(args.policy_weights)) if args.policy_weights else None
        rng = np.random.default_rng(0)
        bounds = np.cumsum([0] + [len(g) for g in np.array_split(np.arange(num_envs), vec.num_procs)])
        rounds, busy_mean, busy_max, policy_ms = [], [], [], []
        for i in range(args.warmup + args.rounds):
            t0 = time.perf_counter()
            if act:
                actions = act(obs)
            elif weights is not None:
                actions = _mlp_actions(weights, obs)
            else:
                actions = rng.uniform(-1, 1, (num_envs, vec.action_dim)).astype(np.float32)
            t1 = time.perf_counter()
            env_actions = vec.to_env_action(actions)
            replies = vec.pool.call_each(f"{MODULE}:_timed_step", [(env_actions[a:b],) for a, b in zip(bounds[:-1], bounds[1:])])
            obs = _flat({k: np.concatenate([g.obs[k] for g, _ in replies]) for k in replies[0][0].obs})
            t2 = time.perf_counter()
            if i >= args.warmup:
                busy = np.array([b for _, b in replies])
                rounds.append(t2 - t1)
                busy_mean.append(busy.mean())
                busy_max.append(busy.max())
                policy_ms.append(t1 - t0)
        free = vec.pool.call_each(f"{MODULE}:_free_run", [(args.rounds, 1000 + w, weights)
                                                          for w in range(vec.num_procs)])
    ms = lambda xs: round(float(np.mean(xs)) * 1e3, 3)  # noqa: E731
    round_ms, mean_ms, max_ms = ms(rounds), ms(busy_mean), ms(busy_max)
    free_rate = sum(f["envs"] * f["rounds"] / f["seconds"] for f in free)
    lock_rate = num_envs / (np.mean(rounds) + (np.mean(policy_ms) if act or weights else 0.0))
    row = dict(num_envs=num_envs, workers=vec.num_procs, envs_per_worker=num_envs / vec.num_procs,
               start_s=round(start_s, 1),
               lockstep=dict(round_ms=round_ms, round_ms_p50=round(float(np.median(rounds)) * 1e3, 3),
                             round_ms_p90=round(float(np.percentile(rounds, 90)) * 1e3, 3),
                             busy_mean_ms=mean_ms, straggler_ms=round(max_ms - mean_ms, 3),
                             pool_ms=round(round_ms - max_ms, 3),
                             policy_ms=ms(policy_ms) if act or weights else None,
                             env_steps_per_s=round(lock_rate)),
               free=dict(ms_per_round=round(float(np.mean([f["seconds"] / f["rounds"] for f in free])) * 1e3, 3),
                         env_steps_per_s=round(free_rate)),
               lockstep_to_free=round(lock_rate / free_rate, 3))
    print(f"{num_envs}x{vec.num_procs}: lock-step {round_ms:.1f} ms/round (busy {mean_ms:.1f}, straggler "
          f"{max_ms - mean_ms:.1f}, pool {round_ms - max_ms:.1f}) {lock_rate:.0f} env steps/s; free "
          f"{row['free']['ms_per_round']:.1f} ms/round {free_rate:.0f} env steps/s", flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layouts", default="64x16,64x15,64x8,128x16", help="ENVSxWORKERS, comma-separated")
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--episode-steps", type=int, default=50)
    p.add_argument("--sim-python", default=None, help="the workers' interpreter (default: this one)")
    p.add_argument("--policy-device", default=None, help="e.g. cuda: an MLP forward per round here")
    p.add_argument("--parent-threads", type=int, default=1,
                   help="torch intra-op threads here (run.torch_threads' default 1; 0 = torch's default)")
    p.add_argument("--policy-weights", default=None,
                   help="an .npz of --export-actor: the PPO actor's mean actions instead of random ones (in the "
                        "parent for lock-step, in each worker for the free run): a learned policy's workload")
    p.add_argument("--export-actor", nargs=2, metavar=("CHECKPOINT", "NPZ"),
                   help="write a PPO state checkpoint's actor as .npz for --policy-weights, then exit")
    p.add_argument("--budget-s", type=float, default=400.0, help="no new layout starts after this")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.export_actor:
        export_actor(*args.export_actor)
        return 0
    if args.out is None:
        p.error("--out is required")
    if args.policy_weights and args.policy_device:
        p.error("--policy-weights and --policy-device are two policies: pick one")
    layouts = []
    for item in args.layouts.split(","):
        envs, _, workers = item.partition("x")
        try:
            layouts.append((int(envs), int(workers)))
        except ValueError:
            p.error(f"--layouts: {item!r} is not ENVSxWORKERS (e.g. 64x16)")
        if not 1 <= layouts[-1][1] <= layouts[-1][0]:
            p.error(f"--layouts: {item!r} needs 1 <= WORKERS <= ENVS (the free run steps each worker's own envs)")
    from benchmarks._gpu_host import write_json

    started = time.monotonic()
    payload = dict(benchmark="rollout_barrier", what=__doc__.splitlines()[0], python=platform.python_version(),
                   cpu_count=os.cpu_count(), sim_python=args.sim_python or sys.executable,
                   sim_threads=os.environ.get("MS2FLOW_SIM_THREADS"), policy_device=args.policy_device, policy_weights=args.policy_weights,
                   parent_threads=args.parent_threads,
                   rounds=args.rounds, episode_steps=args.episode_steps, layouts=[], skipped=[])
    for envs, workers in layouts:
        if time.monotonic() - started > args.budget_s:
            payload["skipped"].append(f"{envs}x{workers}")
            continue
        payload["layouts"].append(run_layout(envs, workers, args))
        write_json(args.out / "rollout_barrier.json", payload)
    write_json(args.out / "rollout_barrier.json", payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
