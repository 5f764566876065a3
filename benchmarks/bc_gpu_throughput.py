"""PointNet BC updates/s on CUDA: Zarr-fed (GPU-resident, pinned-prefetch) vs synthetic tensors already on the GPU.

Baseline: the same PointNet (per-point MLP [64,128,512], max-pool, state, MLP
[256,256]) and optimizer updated on random batches created on the GPU up
front. Measured against it, in the same run: batches sampled from a Zarr store
(synthetic content, realistic size: ``--rows`` transitions of ``--points``
points) held in GPU memory (``gpu`` mode), and held in RAM with the pinned-memory
prefetch thread (``ram`` mode, the path when a dataset does not fit the GPU).
Target: Zarr-fed >= 0.8x synthetic. ``--train-steps N`` then runs
``ms2core.algos.bc.train`` for N steps on that store and reports its wall time.
Writes results/bc_gpu_throughput.json (and a copy to --out).

    python -m benchmarks.bc_gpu_throughput [--rows 80000] [--points 1250] [--updates 300] [--train-steps 50000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import write_result
from benchmarks.dataset_sampling import rss_mb, write_synthetic_pointcloud_dataset


def build(points: int, state_dim: int, action_dim: int, device):
    from ms2core.nn import build_policy
    from storage_schemas.training import NetConfig

    policy = build_policy(NetConfig(backbone="pointnet"), "pointcloud",
                          {"xyz": (points, 3), "rgb": (points, 3), "state": (state_dim,)}, action_dim).to(device)
    return policy, torch.optim.Adam(policy.parameters(), lr=3e-4)


def time_updates(update, next_batch, n: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        update(next_batch())
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        update(next_batch())
    torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=80000)
    parser.add_argument("--points", type=int, default=1250)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--train-steps", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="also copy the result JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs CUDA (run it on the GPU machine)")

    from ms2core.algos.bc import make_update_fn
    from ms2core.data import BatchStream, DemoBatch, DemoDataset

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    device = torch.device("cuda")
    tmp = tempfile.TemporaryDirectory() if args.data_dir is None else None
    path = Path(args.data_dir or tmp.name) / "pointcloud_bench.zarr"
    t0 = time.perf_counter()
    write_synthetic_pointcloud_dataset(path, args.rows, args.points)
    write_s = time.perf_counter() - t0
    print(f"wrote {args.rows} x {args.points} points in {write_s:.1f} s", flush=True)
    state_dim, action_dim, bs = 32, 7, args.batch_size

    synthetic = [DemoBatch({"xyz": torch.rand(bs, args.points, 3, device=device) - 0.5,
                            "rgb": torch.randint(0, 256, (bs, args.points, 3), dtype=torch.uint8, device=device),
                            "state": torch.randn(bs, state_dim, device=device)},
                           torch.rand(bs, action_dim, device=device) * 2 - 1) for _ in range(8)]
    t0 = time.perf_counter()
    gpu_ds = DemoDataset([path], mode="gpu", device=device)
    gpu_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ram_ds = DemoDataset([path], mode="ram", device=device)
    ram_load_s = time.perf_counter() - t0
    results = {}
    for precision in args.precisions.split(","):
        row = {}
        for label, make_source in (
            ("synthetic_on_gpu", lambda: (lambda it=iter(range(10**9)): synthetic[next(it) % len(synthetic)])),
            ("zarr_gpu_resident", lambda: BatchStream(gpu_ds, bs, seed=0, device=device).__next__),
            ("zarr_ram_pinned_prefetch", lambda: BatchStream(ram_ds, bs, seed=0, device=device, prefetch_batches=6).__next__),
        ):
            torch.manual_seed(0)
            policy, optimizer = build(args.points, state_dim, action_dim, device)
            update = make_update_fn(policy, optimizer, precision)
            source = make_source()
            row[label] = time_updates(update, source, args.updates)
            if hasattr(source, "__self__"):
                source.__self__.close()
        for label in ("zarr_gpu_resident", "zarr_ram_pinned_prefetch"):
            row[f"{label}_ratio"] = row[label] / row["synthetic_on_gpu"]
        results[precision] = row
        print(precision, json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)

    train = None
    if args.train_steps:
        from ms2core.algos.bc import train as bc_train
        from storage_schemas.training import BCConfig

        del gpu_ds, ram_ds
        torch.cuda.empty_cache()
        cfg = BCConfig.model_validate(dict(
            env=dict(obs_mode="pointcloud", backend="fake"), dataset=dict(paths=[str(path)], mode="auto"),
            net=dict(backbone="pointnet"),
            train=dict(num_steps=args.train_steps, batch_size=bs, log_every_steps=1000,
                       checkpoint_every_steps=10000, precision=args.precisions.split(",")[0]),
            run=dict(device="cuda", run_dir=str(Path(args.data_dir or tmp.name) / "run")),
        ))
        t0 = time.perf_counter()
        result = bc_train(cfg, progress=False)
        wall = time.perf_counter() - t0
        train = dict(steps=args.train_steps, wall_s=wall, wall_min=wall / 60, updates_per_s=result.updates_per_s,
                     final_loss=result.final_loss, precision=cfg.train.precision)
        print("train", json.dumps(train), flush=True)

    payload = dict(
        device=torch.cuda.get_device_name(0), torch=torch.__version__, rows=args.rows, points=args.points,
        batch_size=bs, dataset_mb=args.rows * (args.points * 15 + 4 * (state_dim + action_dim)) / 2**20,
        write_s=write_s, gpu_load_s=gpu_load_s, ram_load_s=ram_load_s, rss_mb=rss_mb(),
        updates_per_s=results, train=train,
    )
    out = write_result("bc_gpu_throughput", payload)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bc_gpu_throughput.json").write_text(out.read_text())
    print(f"results in {out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
