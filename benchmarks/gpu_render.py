"""``ms2 render``'s pipeline on the GPU host (Dask LocalCluster inside the simulator runtime) vs raw mani_skill2,
and the CPU-vs-GPU render agreement of issue 19 item 3.

Run with the runtime's interpreter (``/opt/ms2rt/bin/python``, PYTHONPATH = this checkout):

    python -m benchmarks.gpu_render bench --demos PAIR.h5 --workers 1,8,16 [--episodes 100] --out DIR
    python -m benchmarks.gpu_render store --demos PAIR.h5 --episodes 4 --seed 0 --out STORE.zarr
    python -m benchmarks.gpu_render compare --reference CPU0.zarr --other GPU0.zarr --resampled CPU1.zarr --out F
    python -m benchmarks.gpu_render dataset --demos PAIR.h5 --render-config configs/render/pointcloud.yaml \
        --workers-n 16 --store STORE.zarr --out DIR

``dataset``: a training dataset as ``ms2 render --config`` + ``ms2 validate`` make it (the render stage with the
committed render config, then the validation stage, whose report the trainers require), without the CLI's
Prefect-side imports, which the simulator runtime does not carry; ``DIR/gpu_dataset.json`` says what it made.

``bench``, for each worker count N: ``pipelines.render.run`` of the first ``--episodes`` demos into a
fresh store with N Dask workers, timed as a user runs it (cluster start-up, env creation and shader
compilation included; frames/s = committed rows / elapsed); then the raw loop at the same process
count: N fresh processes, each ``gym.make(env_id, obs_mode, control_mode)``, and for its share of the
episodes ``reset(seed=demo seed)`` and ``env.step(recorded action)`` (one point-cloud observation per
step, nothing processed or stored), timed from the first process's launch to the last one's exit.
ratio = ours / raw. Every wait has a deadline; a dead process ends the phase with its stderr tail.

``--keep-store PATH`` keeps the last store rendered (a complete dataset of the ``--episodes`` demos;
gpu_campaign.sh's ``eval`` step trains its point-cloud BC checkpoint on it).

``compare`` (item 3): both stores of the same demos and render options (``store``: 4 demos, seed 0).
Exact: dataset version, keys, shapes, dtypes, episode ends, and bit-identical ``actions``,
``rewards``, ``success``, ``terminated``, ``truncated``, ``obs/state`` (physics runs on the CPU on both
hosts); a key that differs is reported with how many elements differ and by how much (absolute, and in
ulps of the reference's dtype). Statistical, per frame, for ``obs/xyz`` (and ``obs/rgb``): the symmetric Chamfer distance
(mean nearest-neighbour distance, both ways) between the two hosts' clouds, against the same
distance between the reference and ``--resampled`` (the reference's demos rendered on the same CPU
with downsampling seed 1: what random point selection alone changes). Passes when the median
cross-host Chamfer <= 1.25 x the median resampling Chamfer + 1 mm, and per-frame centroids agree
within 5 mm (median) / 2 cm (max), rgb means within 4/255 (median).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXACT_KEYS = ("actions", "rewards", "success", "terminated", "truncated", "obs/state")


# -- the raw mani_skill2 loop (worker processes) ------------------------------------------------------
def raw_worker(demos: str, episodes: list[int], obs_mode: str) -> dict:
    import gymnasium as gym

    from ms2core.envs import import_mani_skill2
    from ms2core.trajectory import DemoPair

    t0 = time.perf_counter()
    import_mani_skill2()  # the Vulkan device selection ms2flow's envs get (NVIDIA there, lavapipe here)
    with DemoPair(demos, check_episodes=False) as pair:
        info = pair.env_info
        eps = [pair.read_episode(i) for i in episodes]
    env = gym.make(info.env_id, obs_mode=obs_mode, control_mode=eps[0].meta.control_mode)
    setup_s, frames, start = time.perf_counter() - t0, 0, time.perf_counter()
    for ep in eps:
        env.reset(seed=ep.meta.seed)
        for action in ep.actions:
            env.step(action)
            frames += 1
    env.close()
    return dict(frames=frames, stepping_s=time.perf_counter() - start, setup_s=setup_s)


def raw_phase(demos: str, n_episodes: int, procs: int, obs_mode: str, timeout_s: float) -> dict:
    """``procs`` raw processes over the first ``n_episodes`` episodes (round-robin); aggregate frames/s."""
    work = Path(tempfile.mkdtemp(prefix=f"gpu-render-raw-{procs}-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    t0, children = time.perf_counter(), []
    try:
        for rank in range(procs):
            share = list(range(rank, n_episodes, procs))
            if not share:
                continue
            cmd = [sys.executable, "-m", "benchmarks.gpu_render", "raw-worker", "--demos", demos, "--obs-mode",
                   obs_mode, "--episode-list", ",".join(map(str, share))]
            with open(work / f"out.{rank}", "w") as out, open(work / f"err.{rank}", "w") as err:
                children.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err))
        deadline = time.monotonic() + timeout_s
        while any(c.poll() is None for c in children):
            failed = [i for i, c in enumerate(children) if c.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                why = (f"raw process {failed[0]} exited {children[failed[0]].returncode}: "
                       + (work / f"err.{failed[0]}").read_text()[-600:]) if failed else f"not done in {timeout_s} s"
                return dict(procs=procs, error=why)
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        rows = []
        for i, c in enumerate(children):
            lines = (work / f"out.{i}").read_text().strip().splitlines()
            if c.returncode != 0 or not lines:
                return dict(procs=procs, error=f"raw process {i} exited {c.returncode}: "
                                               + (work / f"err.{i}").read_text()[-600:])
            rows.append(json.loads(lines[-1]))
        frames = sum(r["frames"] for r in rows)
        return dict(procs=procs, frames=frames, wall_s=round(wall, 2), frames_per_s=round(frames / wall, 1),
                    stepping_frames_per_s=round(sum(r["frames"] / r["stepping_s"] for r in rows), 1),
                    setup_s_max=round(max(r["setup_s"] for r in rows), 2))
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait(timeout=5)
        shutil.rmtree(work, ignore_errors=True)


# -- ms2flow's render ---------------------------------------------------------------------------------
def render_config(demos: str, store: str, workers: int, episodes: int, obs_mode: str, seed: int = 0,
                  backend: str = "sapien"):
    from storage_schemas.dataset import RenderConfig

    return RenderConfig.model_validate(dict(source=demos, store=store, workers=workers, progress=False,
                                            options=dict(obs=dict(obs_mode=obs_mode), max_episodes=episodes,
                                                         seed=seed, backend=backend)))


def ours_phase(demos: str, n_episodes: int, workers: int, obs_mode: str, work: Path, keep: str | None) -> dict:
    """One timed render into a fresh store; the store is deleted, or moved to ``keep`` (the last one wins)."""
    from pipelines import render

    store = work / f"w{workers}.zarr"
    result = render.run(render_config(demos, str(store), workers, n_episodes, obs_mode))
    if keep:
        shutil.rmtree(keep, ignore_errors=True)
        shutil.move(str(store), keep)
    shutil.rmtree(store, ignore_errors=True)
    return dict(workers=workers, frames=result.n_rows, episodes=result.n_episodes, wall_s=round(result.elapsed_s, 2),
                frames_per_s=round(result.n_rows / result.elapsed_s, 1),
                worker_frames_per_s=round(result.n_rows / result.worker_render_s * workers, 1)
                if result.worker_render_s else None)


def bench(args) -> int:
    from ms2core.envs.rendering import render_device_info

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-render-", dir=args.work_dir))
    rows, deadline = [], time.monotonic() + args.budget_s
    payload = dict(benchmark="gpu_render", demos=args.demos, episodes=args.episodes, obs_mode=args.obs_mode,
                   python=sys.executable, cpu_count=os.cpu_count(), renderer=render_device_info(), rows=rows)
    try:
        for n in (int(x) for x in args.workers.split(",")):
            if time.monotonic() > deadline:
                rows.append(dict(workers=n, skipped=f"time budget of {args.budget_s} s spent"))
                continue
            ours = ours_phase(args.demos, args.episodes, n, args.obs_mode, work, args.keep_store)
            raw = raw_phase(args.demos, args.episodes, n, args.obs_mode, args.phase_timeout_s)
            ratio = round(ours["frames_per_s"] / raw["frames_per_s"], 3) if "frames_per_s" in raw else None
            rows.append(dict(workers=n, ours_frames_per_s=ours["frames_per_s"],
                             raw_frames_per_s=raw.get("frames_per_s"), ratio=ratio, ours=ours, raw=raw))
            print(json.dumps(rows[-1]), flush=True)
            _write(out / "gpu_render.json", payload)  # after every row: a run cut short keeps its numbers
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _write(out / "gpu_render.json", payload)
    return 0


def make_store(args) -> int:
    from pipelines import render

    result = render.run(render_config(args.demos, args.out, args.workers_n, args.episodes, args.obs_mode, args.seed,
                                      args.backend))
    print(json.dumps(dict(store=result.store, rows=result.n_rows, version=result.dataset_version,
                          elapsed_s=round(result.elapsed_s, 1))))
    return 0


def make_dataset(args) -> int:
    from ms2core.config import load_config
    from pipelines import render, validate
    from storage_schemas.dataset import RenderConfig
    from storage_schemas.validation import ValidationConfig

    overrides = [f"workers={args.workers_n}", "progress=false"] + [f"options.{o}" for o in args.set or []]
    if args.episodes:
        overrides.append(f"options.max_episodes={args.episodes}")
    if args.backend != "sapien":
        overrides.append(f"options.backend={args.backend}")
    cfg = load_config(RenderConfig, args.render_config, overrides, values={"source": args.demos, "store": args.store})
    rendered = render.run(cfg)
    checked = validate.run(ValidationConfig(path=rendered.store, success_only=not args.any_outcome, progress=False))
    report = checked.report
    payload = dict(benchmark="gpu_dataset", demos=args.demos, render_config=args.render_config, store=rendered.store,
                   version=rendered.dataset_version, episodes=rendered.n_episodes, rows=rendered.n_rows,
                   elapsed_s=round(rendered.elapsed_s, 1), frames_per_s=round(rendered.n_rows / rendered.elapsed_s, 1),
                   obs=cfg.options.obs.model_dump(mode="json"), validation=dict(
                       status=report.status, errors=report.n_errors, warnings=report.n_warnings,
                       success_only=not args.any_outcome, report=checked.report_path))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "gpu_dataset.json", payload)
    print(json.dumps({k: payload[k] for k in ("store", "episodes", "rows", "frames_per_s", "validation")}))
    return 0 if report.status == "passed" else 1


# -- CPU vs GPU agreement -----------------------------------------------------------------------------
def _chamfer(a, b) -> float:
    from scipy.spatial import cKDTree

    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def exact_difference(a, b) -> dict | None:
    """None when ``a`` and ``b`` are bit-identical; else how many elements differ and by how much (absolute, and
    for floats in ulps of ``a``'s dtype), so one ulp of BLAS rounding is told apart from a real disagreement."""
    import numpy as np

    if a.shape != b.shape:
        return dict(shapes=[list(a.shape), list(b.shape)])
    if np.array_equal(a, b):
        return None
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    out = dict(elements=int(np.count_nonzero(diff)), of=int(diff.size), max_abs=float(diff.max()))
    if a.dtype.kind == "f":
        out["max_ulps"] = float((diff / np.spacing(np.abs(a)).astype(np.float64)).max())
    return out


def float_fingerprint() -> dict:
    """Digests of the float math ManiSkill2's rewards use (PickCube: ``np.linalg.norm`` of 3-vectors, ``np.tanh``)
    on fixed inputs, with numpy's SIMD dispatch and OpenBLAS kernel: two hosts whose digests differ round those
    functions differently, which is where bit-identity of rewards (with bit-identical states) can end."""
    import ctypes
    import glob
    import hashlib

    import numpy as np

    digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]  # noqa: E731
    rng = np.random.default_rng(0)
    out = {"numpy": np.__version__}
    for dtype in (np.float32, np.float64):
        x = np.linspace(0.0, 3.0, 100_001, dtype=dtype)
        vectors = rng.normal(size=(2000, 3)).astype(dtype)
        name = np.dtype(dtype).name
        out[f"tanh_{name}_array"] = digest(np.tanh(dtype(5) * x))
        out[f"tanh_{name}_scalars"] = digest(np.array([np.tanh(dtype(5) * v) for v in x[::97]]))
        out[f"exp_{name}"] = digest(np.exp(-x))
        out[f"norm3_{name}"] = digest(np.array([np.linalg.norm(v) for v in vectors]))
    try:
        from numpy.core import _multiarray_umath as umath

        out["cpu_dispatch"] = list(umath.__cpu_dispatch__)
        out["cpu_baseline"] = list(umath.__cpu_baseline__)
        out["cpu_features"] = sorted(k for k, v in umath.__cpu_features__.items() if v)
    except (ImportError, AttributeError):
        pass
    for lib in glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*")):
        for symbol in ("openblas_get_corename64_", "scipy_openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(ctypes.CDLL(lib), symbol, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                out["openblas_core"] = fn().decode()
                break
    out["cpu_model"] = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                             if line.startswith("model name")), None) if os.path.exists("/proc/cpuinfo") else None
    return out


def compare_stores(reference: str, other: str, resampled: str | None) -> dict:
    import numpy as np

    from ms2core.data.store import DatasetStore

    ref, oth = DatasetStore.open(reference), DatasetStore.open(other)
    res = DatasetStore.open(resampled) if resampled else None
    layout = {k: (a.shape, str(a.dtype)) for k, a in ref.arrays.items()}
    out = dict(reference=reference, other=other, resampled=resampled,
               renderers=[ref.manifest.renderer, oth.manifest.renderer],
               same_version=ref.manifest.dataset_version == oth.manifest.dataset_version,
               same_layout=layout == {k: (a.shape, str(a.dtype)) for k, a in oth.arrays.items()},
               same_episode_ends=bool(np.array_equal(ref.episode_ends, oth.episode_ends)))
    if not (out["same_layout"] and out["same_episode_ends"]):
        out.update(checks=dict(exact=False), agree=False)  # other episodes, keys or shapes: nothing to compare
        return out
    out["bit_identical"], out["differences"] = {}, {}
    for k in (k for k in EXACT_KEYS if k in ref.arrays):
        difference = exact_difference(ref.read(k), oth.read(k))
        out["bit_identical"][k] = difference is None
        if difference is not None:
            out["differences"][k] = difference
    xyz_r, xyz_o = ref.read("obs/xyz"), oth.read("obs/xyz")
    cross = np.array([_chamfer(a, b) for a, b in zip(xyz_r, xyz_o)])
    centroid = np.linalg.norm(xyz_r.mean(1) - xyz_o.mean(1), axis=1)
    stats = dict(cross_chamfer_m=_quantiles(cross), centroid_diff_m=_quantiles(centroid))
    if "obs/rgb" in ref.arrays:
        rgb = np.abs(ref.read("obs/rgb").reshape(len(cross), -1).astype(np.float64).mean(1)
                     - oth.read("obs/rgb").reshape(len(cross), -1).astype(np.float64).mean(1))
        stats["rgb_mean_diff"] = _quantiles(rgb)
    resampling = None
    if res is not None:
        resampling = np.array([_chamfer(a, b) for a, b in zip(xyz_r, res.read("obs/xyz"))])
        stats["resampling_chamfer_m"] = _quantiles(resampling)
    checks = dict(exact=out["same_version"] and out["same_layout"] and out["same_episode_ends"]
                  and all(out["bit_identical"].values()),
                  centroid=stats["centroid_diff_m"]["median"] <= 0.005 and stats["centroid_diff_m"]["max"] <= 0.02,
                  rgb=stats.get("rgb_mean_diff", {"median": 0})["median"] <= 4.0)
    if resampling is not None:
        checks["chamfer"] = float(np.median(cross)) <= 1.25 * float(np.median(resampling)) + 0.001
    out.update(stats=stats, checks=checks, agree=all(checks.values()))
    return out


def _quantiles(x) -> dict:
    import numpy as np

    return dict(median=round(float(np.median(x)), 6), p95=round(float(np.quantile(x, 0.95)), 6),
                max=round(float(np.max(x)), 6), frames=int(len(x)))


def _write(path: Path, payload: dict) -> None:
    payload = dict(payload, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--demos", required=True)
    b.add_argument("--workers", default="1,8,16")
    b.add_argument("--episodes", type=int, default=100)
    b.add_argument("--obs-mode", default="pointcloud")
    b.add_argument("--out", required=True, help="folder for gpu_render.json")
    b.add_argument("--work-dir", default=None, help="where the stores are rendered (default: the temp dir)")
    b.add_argument("--phase-timeout-s", type=float, default=240.0)
    b.add_argument("--budget-s", type=float, default=420.0, help="no new worker count is started after this")
    b.add_argument("--keep-store", help="keep the last rendered store here (gpu_campaign.sh's eval trains BC on it)")
    s = sub.add_parser("store")
    s.add_argument("--demos", required=True)
    s.add_argument("--episodes", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers-n", type=int, default=1)
    s.add_argument("--obs-mode", default="pointcloud")
    s.add_argument("--backend", default="sapien", choices=("sapien", "fake"), help="fake: tests")
    s.add_argument("--out", required=True)
    d = sub.add_parser("dataset")
    d.add_argument("--demos", required=True)
    d.add_argument("--render-config", default=str(Path(__file__).resolve().parents[1] / "configs/render/pointcloud.yaml"))
    d.add_argument("--set", action="append", help="override under options, e.g. obs.n_points=1024")
    d.add_argument("--episodes", type=int, default=0, help="the first N demos (0: all)")
    d.add_argument("--workers-n", type=int, default=16)
    d.add_argument("--any-outcome", action="store_true", help="validate without requiring success at every end")
    d.add_argument("--backend", default="sapien", choices=("sapien", "fake"), help="fake: tests")
    d.add_argument("--store", required=True)
    d.add_argument("--out", required=True, help="folder for gpu_dataset.json")
    c = sub.add_parser("compare")
    c.add_argument("--reference", required=True)
    c.add_argument("--other", required=True)
    c.add_argument("--resampled")
    c.add_argument("--out", required=True)
    f = sub.add_parser("fingerprint", help="digests of numpy's float math here (see float_fingerprint)")
    f.add_argument("--out", required=True)
    w = sub.add_parser("raw-worker")
    w.add_argument("--demos", required=True)
    w.add_argument("--episode-list", required=True)
    w.add_argument("--obs-mode", default="pointcloud")
    args = parser.parse_args(argv)
    if args.cmd == "raw-worker":
        print(json.dumps(raw_worker(args.demos, [int(x) for x in args.episode_list.split(",")], args.obs_mode)))
        return 0
    if args.cmd == "bench":
        return bench(args)
    if args.cmd == "store":
        return make_store(args)
    if args.cmd == "dataset":
        return make_dataset(args)
    if args.cmd == "fingerprint":
        _write(Path(args.out), float_fingerprint())
        return 0
    result = compare_stores(args.reference, args.other, args.resampled)
    _write(Path(args.out), result)
    print(json.dumps(dict(agree=result["agree"], checks=result["checks"], stats=result.get("stats"))))
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
