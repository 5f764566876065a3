"""A small but real ms2flow data directory for dashboard tests and screenshots.

    <root>/
      datasets/PickCube-v0/demo.pd_ee_delta_pose.pointcloud.zarr   3 episodes, 6000 points, rgb + seg
      datasets/PickCube-v0/demo.pd_ee_delta_pose.pointcloud.validation.json   2 findings
      datasets/PickCube-v0/demo.pd_ee_delta_pose.rgbd.zarr         2 episodes, 2 cameras 64x64,
                                                                    report in attrs["ms2flow_validation"]
      mlflow.db, mlartifacts/     experiment PickCube-v0: runs bc-seed0, ppo-seed0 with metric histories;
                                  ppo-seed0 has eval/results.json + eval/videos/episode_0.mp4;
                                  ms2-PickCube-v0-ppo v1 (success 0.85, champion), v2 (0.60, candidate)

Arrays are random but shaped and ranged like real observations (a table plane,
a cube and a gripper in the point cloud; a cube on a table in the images).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

POINTCLOUD_NAME = "demo.pd_ee_delta_pose.pointcloud"
RGBD_NAME = "demo.pd_ee_delta_pose.rgbd"
TASK = "PickCube-v0"
PPO_SUCCESS_RATE = 0.85
PPO_V2_SUCCESS_RATE = 0.60
NUM_POINTS = 6000


@dataclass
class SampleData:
    root: Path
    pointcloud_store: Path
    rgbd_store: Path
    tracking_uri: str
    ppo_run_id: str
    bc_run_id: str
    model_name: str


def _write_store(path: Path, arrays: dict[str, np.ndarray], episode_ends: np.ndarray, attrs: dict) -> None:
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    for key, value in arrays.items():
        chunks = (min(len(value), 16),) + value.shape[1:]
        arr = root.create_array(key, shape=value.shape, dtype=value.dtype, chunks=chunks)
        arr[...] = value
    ends = root.create_array("meta/episode_ends", shape=episode_ends.shape, dtype=np.int64)
    ends[...] = episode_ends
    root.attrs.update(attrs)


def _pointcloud_step(rng: np.random.Generator, t: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_table, n_cube, n_grip = 4000, 1200, NUM_POINTS - 5200
    table = np.c_[rng.uniform(-0.4, 0.4, n_table), rng.uniform(-0.4, 0.4, n_table), rng.normal(0, 0.002, n_table)]
    lift = 0.1 * max(0, t - length // 2) / length
    cube = rng.uniform(-0.02, 0.02, (n_cube, 3)) + [0.05, -0.05, 0.02 + lift]
    grip = rng.uniform([-0.01, -0.04, 0], [0.01, 0.04, 0.08], (n_grip, 3)) + [0.05 - 0.05 * (1 - t / length), -0.05, 0.05 + lift]
    xyz = np.concatenate([table, cube, grip]).astype(np.float32)
    rgb = np.concatenate([
        np.tile([150, 120, 90], (n_table, 1)) + rng.integers(-15, 15, (n_table, 3)),
        np.tile([200, 30, 30], (n_cube, 1)) + rng.integers(-20, 20, (n_cube, 3)),
        np.tile([60, 60, 70], (n_grip, 1)) + rng.integers(-10, 10, (n_grip, 3)),
    ]).clip(0, 255).astype(np.uint8)
    seg = np.zeros((NUM_POINTS, 3), dtype=bool)
    seg[n_table : n_table + n_cube, 0] = True  # the cube
    seg[n_table + n_cube :, 1] = True  # the gripper
    return xyz, rgb, seg


def _episode_scalars(rng: np.random.Generator, length: int, success: bool) -> dict[str, np.ndarray]:
    t = np.arange(length)
    actions = (np.sin(t[:, None] / 3.0 + np.arange(7)[None]) * 0.5 + rng.normal(0, 0.05, (length, 7))).astype(np.float32)
    rewards = np.clip(t / length + rng.normal(0, 0.02, length), 0, 1).astype(np.float32)
    succ = np.zeros(length, dtype=bool)
    if success:
        succ[-2:] = True
    terminated = succ.copy()  # ManiSkill2: the env terminates at success
    truncated = (t == length - 1) & ~terminated
    return {"data/actions": actions, "data/rewards": rewards, "data/success": succ, "data/terminated": terminated,
            "data/truncated": truncated}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _manifest(obs_mode: str, control_mode: str, num_episodes: int, **extra) -> dict:
    return {
        "env_id": TASK, "obs_mode": obs_mode, "control_mode": control_mode,
        "render_options": {"n_points": NUM_POINTS, "camera_resolution": [64, 64]} | extra,
        "num_episodes": num_episodes,
        "versions": {"mani_skill2": "0.5.3", "sapien": "2.2.2", "ms2flow": "0.1.0"},
        "source_digest": "sha256:3f1c0ffee",
    }


def build_datasets(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    env_dir = root / "datasets" / TASK
    env_dir.mkdir(parents=True, exist_ok=True)

    lengths, successes = [12, 9, 15], [True, False, True]
    parts = []
    for length, success in zip(lengths, successes):
        steps = [_pointcloud_step(rng, t, length) for t in range(length)]
        part = _episode_scalars(rng, length, success)
        part["data/obs/xyz"] = np.stack([s[0] for s in steps])
        part["data/obs/rgb"] = np.stack([s[1] for s in steps])
        part["data/obs/seg"] = np.stack([s[2] for s in steps])
        part["data/obs/state"] = rng.normal(0, 1, (length, 32)).astype(np.float32)
        parts.append(part)
    pc_store = env_dir / f"{POINTCLOUD_NAME}.zarr"
    _write_store(pc_store, _concat(parts), np.cumsum(lengths).astype(np.int64),
                 {"ms2flow": _manifest("pointcloud", "pd_ee_delta_pose", len(lengths))})
    (env_dir / f"{POINTCLOUD_NAME}.validation.json").write_text(json.dumps({
        "ok": False, "checked_at": "2026-11-26T12:00:00Z",
        "findings": [
            {"code": "action_out_of_bounds", "severity": "error", "episode": 1, "key": "actions", "message": "2 actions outside [-1, 1]"},
            {"code": "constant_rgb", "severity": "warning", "episode": 2, "key": "obs/rgb", "message": "rgb is constant in 1 step"},
        ],
    }))

    lengths, successes = [10, 8], [True, True]
    parts = []
    for length, success in zip(lengths, successes):
        part = _episode_scalars(rng, length, success)
        h = w = 64
        rgb = np.zeros((length, h, w, 6), dtype=np.uint8)
        rgb[..., :] = [170, 150, 120, 120, 140, 170]
        depth = np.zeros((length, h, w, 2), dtype=np.float32)
        depth[..., 0] = np.linspace(0.2, 0.6, h)[:, None]
        depth[..., 1] = np.linspace(0.5, 1.5, h)[:, None]
        for t in range(length):
            x = 20 + t * 2
            rgb[t, 30:42, x : x + 12, 0:3] = [210, 30, 30]
            rgb[t, 24:34, x : x + 10, 3:6] = [210, 30, 30]
            depth[t, 24:34, x : x + 10, 1] = 0.9
        part["data/obs/rgb"] = rgb
        part["data/obs/depth"] = depth
        part["data/obs/state"] = rng.normal(0, 1, (length, 32)).astype(np.float32)
        parts.append(part)
    rgbd_store = env_dir / f"{RGBD_NAME}.zarr"
    _write_store(rgbd_store, _concat(parts), np.cumsum(lengths).astype(np.int64), {
        "ms2flow": _manifest("rgbd", "pd_ee_delta_pose", len(lengths)),
        "ms2flow_validation": {"ok": True, "findings": []},
    })
    return pc_store, rgbd_store


def _write_video(path: Path) -> None:
    import imageio.v2 as imageio

    frames = np.zeros((20, 64, 64, 3), dtype=np.uint8)
    for i in range(20):
        frames[i, :, :] = [240, 240, 240]
        frames[i, 28:40, 5 + 2 * i : 17 + 2 * i] = [200, 30, 30]
    imageio.mimwrite(str(path), frames, fps=10)


def build_mlflow(root: Path) -> tuple[str, str, str, str]:
    """Two tracked runs, eval artifacts, a registered model with two versions; returns (uri, ppo, bc, model)."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from flows.registry import register_policy

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    experiment_id = client.create_experiment(TASK, artifact_location=(root / "mlartifacts").as_uri())

    class ConstantPolicy(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return np.zeros((len(model_input), 7), dtype=np.float32)

    run_ids = {}
    for algo, final_success, lr in (("bc", 0.40, 1e-3), ("ppo", PPO_SUCCESS_RATE, 3e-4)):
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{algo}-seed0") as run:
            mlflow.set_tag("algo", algo)
            mlflow.log_params({"algo": algo, "lr": lr, "seed": 0, "batch_size": 256 if algo == "bc" else 2048, "env_id": TASK})
            for i, step in enumerate(range(0, 50_001, 5_000)):
                frac = i / 10
                decay = 3.0 if algo == "bc" else 1.5
                mlflow.log_metric("train/loss", float(np.exp(-decay * frac) + 0.05), step=step)
                mlflow.log_metric("rollout/return", float(frac * (30 if algo == "ppo" else 18)), step=step)
                mlflow.log_metric("eval/success_rate", float(round(final_success * frac, 3)), step=step)
            run_ids[algo] = run.info.run_id
            if algo == "ppo":
                tmp = root / ".tmp-eval"
                (tmp / "videos").mkdir(parents=True, exist_ok=True)
                (tmp / "results.json").write_text(json.dumps({
                    "success_rate": PPO_SUCCESS_RATE, "success_once_rate": 0.9, "success_at_end_rate": PPO_SUCCESS_RATE,
                    "mean_return": 27.4, "episode_lengths": [50, 62, 48, 70], "num_episodes": 20,
                }))
                _write_video(tmp / "videos" / "episode_0.mp4")
                mlflow.log_artifacts(str(tmp), artifact_path="eval")
                for f in sorted(tmp.rglob("*"), reverse=True):
                    f.unlink() if f.is_file() else f.rmdir()
                tmp.rmdir()
                info = mlflow.pyfunc.log_model(name="policy", python_model=ConstantPolicy())
                register_policy(info.model_uri, TASK, "ppo", PPO_SUCCESS_RATE, client=client)
                register_policy(info.model_uri, TASK, "ppo", PPO_V2_SUCCESS_RATE, client=client)
    return uri, run_ids["ppo"], run_ids["bc"], f"ms2-{TASK}-ppo"


def build_sample_data_dir(root: Path) -> SampleData:
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    pc, rgbd = build_datasets(root)
    uri, ppo, bc, model = build_mlflow(root)
    return SampleData(root, pc, rgbd, uri, ppo, bc, model)


def build_in_subprocess(root: Path) -> SampleData:
    """Build in a child process: MLflow's tracking URI is process-global state tests must not inherit."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run([sys.executable, "-m", "tests.dashboards.sample_data", str(root)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building the sample data failed:\n{done.stdout}\n{done.stderr}")
    fields = json.loads(done.stdout.strip().splitlines()[-1])
    return SampleData(**{k: Path(v) if k in ("root", "pointcloud_store", "rgbd_store") else v for k, v in fields.items()})


if __name__ == "__main__":
    import dataclasses
    import sys

    built = build_sample_data_dir(Path(sys.argv[1]).absolute())
    print(json.dumps({k: str(v) for k, v in dataclasses.asdict(built).items()}))
