"""Aggregate control steps/s of PickCube-v0 with N simulator processes: ms2flow vs raw mani_skill2.

Each phase starts N fresh processes under one interpreter (``--python``; on the GPU host the
simulator runtime's ``bin/python``); each builds one env, steps it with random actions for
``--seconds`` (resets included) and reports its own steps/s; the phase's number is their sum.

- ``ours``: ``ms2core.envs.make_env`` and every observation through ``ObservationProcessor``
  (the processing rollout/eval/render workers apply: point clouds filtered and downsampled
  to 1200 points, state flattened).
- ``raw``: mani_skill2's own ``gym.make`` and ``env.step``, nothing else.

For each obs mode and N, the two variants run one after the other (their order alternates).
All processes of a phase build their env, then wait (at most ``--ready-timeout-s``) for a
go-file, so stepping overlaps; every wait has a timeout and dead workers end the phase.

    python -m benchmarks.gpu_sim_scaling --procs 1,8,16 --obs-modes state,pointcloud --seconds 8
    python -m benchmarks.gpu_sim_scaling --procs 1 --obs-modes state --seconds 2   # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV_ID = "PickCube-v0"
CONTROL_MODE = "pd_ee_delta_pose"
ROOT = Path(__file__).resolve().parents[1]


# -- worker side ----------------------------------------------------------------------------------

def _build(variant: str, obs_mode: str):
    from ms2core.envs import import_mani_skill2, make_env

    if variant == "ours":
        from ms2core.obs import ObservationProcessor
        from storage_schemas.dataset import ObsProcessConfig

        return make_env(ENV_ID, obs_mode, CONTROL_MODE), ObservationProcessor(ObsProcessConfig(obs_mode=obs_mode))
    import_mani_skill2()  # the same Vulkan device selection and torch placeholder as ours
    import gymnasium as gym

    return gym.make(ENV_ID, obs_mode=obs_mode, control_mode=CONTROL_MODE), None


def _wait_for(path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return False


def worker(args) -> int:
    import numpy as np

    sync = Path(args.sync_dir)
    t0 = time.perf_counter()
    env, process = _build(args.variant, args.obs_mode)
    rng = np.random.default_rng(args.rank)
    low, high = env.action_space.low, env.action_space.high
    env.reset(seed=args.rank)
    for _ in range(3):  # warm-up: shader compile, first picture
        env.step(rng.uniform(low, high).astype(np.float32))
    setup_s = time.perf_counter() - t0
    (sync / f"ready.{args.rank}").write_text("1")
    if not _wait_for(sync / "go", args.ready_timeout_s):
        print(json.dumps(dict(rank=args.rank, error="no go-file in time")))
        return 3
    steps, resets, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        obs, _, terminated, truncated, _ = env.step(rng.uniform(low, high).astype(np.float32))
        if process is not None:
            process(obs)
        steps += 1
        if terminated or truncated:
            obs, _ = env.reset()
            resets += 1
    elapsed = time.perf_counter() - start
    env.close()
    print(json.dumps(dict(rank=args.rank, steps=steps, resets=resets, seconds=elapsed, setup_s=setup_s)))
    return 0


# -- driver side ----------------------------------------------------------------------------------

def _kill_all(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _tail(path: Path, n: int = 600) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def phase(python: str, variant: str, obs_mode: str, n: int, args) -> dict:
    """N processes of one variant; aggregate steps/s, or the first failure's stderr tail."""
    sync = Path(tempfile.mkdtemp(prefix=f"simscale-{variant}-{obs_mode}-{n}-"))
    cmd = [python, "-m", "benchmarks.gpu_sim_scaling", "--worker", "--variant", variant, "--obs-mode", obs_mode,
           "--seconds", str(args.seconds), "--sync-dir", str(sync), "--ready-timeout-s", str(args.ready_timeout_s)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    procs, t0 = [], time.perf_counter()
    for rank in range(n):
        with open(sync / f"out.{rank}", "w") as out, open(sync / f"err.{rank}", "w") as err:
            procs.append(subprocess.Popen([*cmd, "--rank", str(rank)], cwd=ROOT, env=env, stdout=out, stderr=err))
    row = dict(variant=variant, obs_mode=obs_mode, procs=n)
    deadline = time.monotonic() + args.ready_timeout_s
    while time.monotonic() < deadline:
        dead = [i for i, p in enumerate(procs) if p.poll() is not None]
        if dead:
            _kill_all(procs)
            return dict(row, error=f"worker {dead[0]} exited {procs[dead[0]].returncode} before ready: "
                                   + _tail(sync / f"err.{dead[0]}"))
        if all((sync / f"ready.{i}").exists() for i in range(n)):
            break
        time.sleep(0.05)
    else:
        _kill_all(procs)
        return dict(row, error=f"not all {n} workers ready within {args.ready_timeout_s} s")
    row["ready_s"] = round(time.perf_counter() - t0, 2)
    (sync / "go").write_text("1")
    results = []
    for i, p in enumerate(procs):
        try:
            p.wait(timeout=args.seconds + 60)
        except subprocess.TimeoutExpired:
            _kill_all(procs)
            return dict(row, error=f"worker {i} did not finish within {args.seconds + 60} s")
        lines = (sync / f"out.{i}").read_text().strip().splitlines()
        res = json.loads(lines[-1]) if lines else {}
        if p.returncode != 0 or "steps" not in res:
            _kill_all(procs)
            return dict(row, error=f"worker {i} exited {p.returncode}: {res} " + _tail(sync / f"err.{i}"))
        results.append(res)
    per_proc = [r["steps"] / r["seconds"] for r in results]
    return dict(row, steps_per_s=round(sum(per_proc), 1), per_proc_min=round(min(per_proc), 1),
                per_proc_max=round(max(per_proc), 1), steps=sum(r["steps"] for r in results),
                resets=sum(r["resets"] for r in results),
                setup_s_max=round(max(r["setup_s"] for r in results), 2))


def _renderer(python: str) -> dict | None:
    code = "import json; from ms2core.envs.rendering import render_device_info as r; print(json.dumps(r()))"
    try:
        out = subprocess.run([python, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                             capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as exc:  # informative only
        return dict(error=repr(exc))


def _write(args, rows: list, renderer: dict | None) -> None:
    payload = dict(env_id=ENV_ID, control_mode=CONTROL_MODE, seconds_per_phase=args.seconds, python=args.python,
                   cpu_count=os.cpu_count(), renderer=renderer, rows=rows)
    if args.out:
        import platform

        payload = dict(benchmark="gpu_sim_scaling", when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       machine=f"{platform.node()} {platform.machine()}", **payload)
        Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    else:
        from benchmarks._common import write_result

        write_result("gpu_sim_scaling", payload)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", default="1,8,16")
    parser.add_argument("--obs-modes", default="state,pointcloud")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--python", default=sys.executable, help="interpreter the workers run under")
    parser.add_argument("--ready-timeout-s", type=float, default=90.0)
    parser.add_argument("--out", help="result file (default: benchmarks/results/gpu_sim_scaling.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=("ours", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--obs-mode", help=argparse.SUPPRESS)
    parser.add_argument("--sync-dir", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    rows, k, renderer = [], 0, _renderer(args.python)
    for obs_mode in args.obs_modes.split(","):
        for n in (int(x) for x in args.procs.split(",")):
            pair = {}
            for variant in ("ours", "raw") if k % 2 == 0 else ("raw", "ours"):
                pair[variant] = phase(args.python, variant, obs_mode, n, args)
                print(json.dumps(pair[variant]), flush=True)
            k += 1
            ours, raw = pair["ours"].get("steps_per_s"), pair["raw"].get("steps_per_s")
            rows.append(dict(obs_mode=obs_mode, procs=n, ours_steps_per_s=ours, raw_steps_per_s=raw,
                             ratio=round(ours / raw, 3) if ours and raw else None, ours=pair["ours"], raw=pair["raw"]))
            _write(args, rows, renderer)  # after every pair: a run cut short still leaves its numbers
    for r in rows:
        print(f"{r['obs_mode']:11s} {r['procs']:3d} procs  ms2flow {r['ours_steps_per_s']}  raw {r['raw_steps_per_s']}"
              f"  ratio {r['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
