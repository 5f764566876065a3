"""Render throughput through an external Dask scheduler (the scaled-out topology): 1 vs 2 workers.

Starts ``dask scheduler`` and ``dask worker`` processes on loopback (tests/services/topology.py,
the same commands docker-compose.yml runs), and for the object-store target a moto S3 server;
renders the same real-simulator PickCube-v0 episodes with ``MS2FLOW_DASK_SCHEDULER``-style
``scheduler=tcp://...`` into a local store and into ``s3://``, first with one worker, then with a
second worker added. Workers are warm (env built, first picture taken) before the clock starts.
The ratio is against the one-worker run of the same target in the same run.

    python -m benchmarks.services_render [--episodes 16] [--steps 12] [--mode pointcloud] [--targets local s3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks._common import write_result
from benchmarks.render_scaling import ENV_ID, _warm_worker, make_demo
from pipelines import render
from storage_schemas.dataset import RenderConfig
from tests.services.topology import BUCKET, Topology


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="steps per episode")
    parser.add_argument("--mode", default="pointcloud", choices=["state", "pointcloud", "rgbd"])
    parser.add_argument("--targets", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument("--episodes-per-range", type=int, default=2)
    args = parser.parse_args()

    from distributed import Client

    work = Path(tempfile.mkdtemp(prefix="ms2-services-render-"))
    topo = Topology(work / "services")
    rows: dict[str, dict] = {target: {} for target in args.targets}
    try:
        demo = make_demo(work / "demos" / "pick.h5", args.episodes, args.steps)
        if "s3" in args.targets:
            topo.start_s3()
        topo.start_dask(n_workers=0)
        base = RenderConfig.model_validate(dict(
            source=str(demo), options=dict(obs=dict(obs_mode=args.mode)), progress=False,
            episodes_per_range=args.episodes_per_range, scheduler=topo.scheduler_address))
        plan = render.plan_render(base.model_copy(update={"output_dir": str(work / "plan")}))
        for n in (1, 2):
            topo.start_dask_worker(f"dask-worker-{n}")
            topo.wait_for_dask_workers(n)
            with Client(topo.scheduler_address, timeout="30s") as client:
                client.run(_warm_worker, plan.env, base.options.obs)  # env built, shaders compiled
            for target in args.targets:
                if target == "s3":
                    cfg = base.model_copy(update={"store": f"s3://{BUCKET}/bench/{args.mode}-w{n}.zarr",
                                                  "storage_options": topo.storage_options()})
                else:
                    cfg = base.model_copy(update={"store": str(work / "zarr" / f"{args.mode}-w{n}.zarr")})
                result = render.run(cfg)
                fps = result.n_rows / result.elapsed_s
                row = rows[target]
                row[f"workers_{n}_frames_per_s"] = fps
                row[f"workers_{n}_ratio"] = fps / row["workers_1_frames_per_s"]
                print(f"{args.mode} -> {target:5s} through the scheduler, {n} worker(s): {fps:6.2f} frames/s "
                      f"({result.n_rows} frames in {result.elapsed_s:.1f} s) = {row[f'workers_{n}_ratio']:.2f}x "
                      f"1 worker", flush=True)
    finally:
        topo.stop()
        left = topo.leftovers()
        shutil.rmtree(work, ignore_errors=True)
    assert not left, f"benchmark left processes running: {left}"
    path = write_result("services_render", dict(
        env_id=ENV_ID, obs_mode=args.mode, episodes=args.episodes, steps_per_episode=args.steps,
        episodes_per_range=args.episodes_per_range, cpu_cores=os.cpu_count(),
        topology="dask scheduler + N `dask worker --nthreads 1` processes on loopback; s3 = moto server",
        results=rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
