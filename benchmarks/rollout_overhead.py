"""What the simulator worker pool costs a lock-step rollout, with a simulator-free env (so the pool is all there is).

``VectorEnv`` of the fake PickCube-shaped env (state observations, the real spaces) stepped in lock-step:
envs in this process (the baseline, measured in the same run) vs the same envs in worker processes. Per
layout: milliseconds per lock-step round and env steps/s. The pool's cost per round is what a real
simulator's step (~3 ms on the GPU host) pays on top, serially, in every round.

    .venv/bin/python -m benchmarks.rollout_overhead [--rounds 300]

Then the wire alone: one call per worker (2 workers) whose reply is an array of a point-cloud env step's
size (~18 KB), an RGB-D one's (~200 KB: two 128x128 cameras, rgb + depth) and eight of those (1.6 MB):
ms per round and MB/s, to tell whether shared memory for observations would pay (a GPU-host point-cloud
round is 50-80 ms).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import write_result
from ms2core.rollout import EnvFactory, VectorEnv
from storage_schemas.env import EnvConfig

LAYOUTS = [(2, 2), (8, 2), (32, 2), (64, 2)]  # (envs, worker processes)


def ms_per_round(num_envs: int, num_procs: int, rounds: int) -> float:
    factory = EnvFactory(EnvConfig(env_id="PickCube-v0", obs_mode="state", max_episode_steps=50, backend="fake"))
    with VectorEnv(factory, num_envs, num_procs, seed=0) as vec:
        vec.reset()
        actions = np.zeros((num_envs, vec.action_dim), np.float32)
        for _ in range(20):
            vec.step(actions)
        start = time.perf_counter()
        for _ in range(rounds):
            vec.step(actions)
        return (time.perf_counter() - start) / rounds * 1e3


WIRE_BYTES = (0, 18_000, 200_000, 1_600_000)
_PAYLOADS: dict[int, np.ndarray] = {}


def _payload(n: int) -> np.ndarray:
    """Worker side: a reply of ``n`` bytes (made once per worker)."""
    if n not in _PAYLOADS:
        _PAYLOADS[n] = np.random.default_rng(n).integers(0, 255, n, dtype=np.uint8)
    return _PAYLOADS[n]


def wire_rows(rounds: int) -> list[dict]:
    from ms2core.workers import SimPool

    rows = []
    with SimPool(2) as pool:
        for n in WIRE_BYTES:
            pool.call_each("benchmarks.rollout_overhead:_payload", [(n,), (n,)])
            start = time.perf_counter()
            for _ in range(rounds):
                pool.call_each("benchmarks.rollout_overhead:_payload", [(n,), (n,)])
            ms = (time.perf_counter() - start) / rounds * 1e3
            rows.append(dict(bytes_per_worker=n, ms_per_round=round(ms, 3),
                             mb_per_s=round(2 * n / ms / 1e3) if n else None))
            print(f"wire: {n / 1e3:6.0f} KB per worker, 2 workers: {ms:.3f} ms/round", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=300)
    args = p.parse_args(argv)
    rows = []
    for num_envs, num_procs in LAYOUTS:
        inline = ms_per_round(num_envs, 0, args.rounds)
        pooled = ms_per_round(num_envs, num_procs, args.rounds)
        rows.append(dict(num_envs=num_envs, num_procs=num_procs, in_process_ms=round(inline, 3),
                         pool_ms=round(pooled, 3), pool_cost_ms=round(pooled - inline, 3),
                         pool_env_steps_per_s=round(num_envs / pooled * 1e3),
                         in_process_env_steps_per_s=round(num_envs / inline * 1e3)))
        print(f"{num_envs:3d} envs / {num_procs} procs: in-process {inline:.2f} ms/round, pool {pooled:.2f} ms/round "
              f"({num_envs / pooled * 1e3:.0f} env steps/s)")
    write_result("rollout_overhead", {"what": __doc__.splitlines()[0], "rounds": args.rounds, "layouts": rows,
                                      "wire": wire_rows(args.rounds)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
