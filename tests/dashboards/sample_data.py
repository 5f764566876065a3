"""A small but real ms2flow data directory for dashboard tests and screenshots, made by the project's own
writers, so a change of any stored schema (manifest, validation report, MLflow params/metrics, evaluation
result, registry tags) breaks the dashboard tests instead of leaving the pages showing "?":

    <root>/
      demos/PickCube-v0/demo.h5 + .json     recorded on the fake env (tests/demo_fixtures), some episodes cut
      datasets/PickCube-v0/demo.pointcloud.<version>.zarr   pipelines.render, with robot segmentation;
                                            one action pushed out of bounds (tests/validate_fixtures.write_rows);
                                            its validation report lists that and the cut episodes
      datasets/PickCube-v0/demo.rgbd.<version>.zarr         2 cameras 64x48, validation passed (any outcome)
      datasets/PickCube-v0/demo.state.<version>.zarr        validation passed (any outcome); BC trains on it
      mlflow.db, mlartifacts/               the train-bc flow (metrics by update) and two train-ppo flows
                                            (metrics by env step) on a temporary Prefect server: BC's evaluation
                                            with videos, the registry's ms2-PickCube-v0-{bc,ppo} with aliases

Everything runs on the fake backend (ms2core/envs/fake.py), in a child process (build_in_subprocess).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

TASK = "PickCube-v0"
NUM_POINTS = 1500
CAMERA_SIZE = (64, 48)
N_EPISODES = 4
BAD_ACTION_ROW = 3  # global row of the out-of-bounds action in the point-cloud dataset (episode 0)
BC_UPDATES = 30
PPO_ENV_STEPS = 80


@dataclass
class SampleData:
    root: Path
    pointcloud_store: Path
    rgbd_store: Path
    state_store: Path
    tracking_uri: str
    ppo_run_id: str
    bc_run_id: str
    model_name: str

    @staticmethod
    def name_of(store: Path) -> str:
        return store.name[: -len(".zarr")]


def stored(store: Path):
    """What the writer stored, read without the dashboard: (DatasetManifest, committed episode ends)."""
    import zarr

    from storage_schemas.dataset import EPISODE_ENDS, MANIFEST_ATTR, DatasetManifest

    root = zarr.open_group(str(store), mode="r")
    manifest = DatasetManifest.model_validate(root.attrs[MANIFEST_ATTR])
    return manifest, root[EPISODE_ENDS][: manifest.n_committed_episodes]


def _render(source: str, obs: dict, **options) -> str:
    from pipelines import render
    from storage_schemas.dataset import ObsProcessConfig, RenderConfig, RenderOptions

    opts = RenderOptions(backend="fake", obs=ObsProcessConfig(**obs), **options)
    return render.run(RenderConfig(source=source, options=opts, workers=0, progress=False)).store


def build_datasets(root: Path) -> tuple[Path, Path, Path]:
    """A fake-env demo pair -> three rendered, validated datasets (pointcloud with defects, rgbd, state)."""
    from pipelines import validate
    from storage_schemas.validation import ValidationConfig
    from tests.demo_fixtures import fake_demo_pair
    from tests.validate_fixtures import write_rows

    # Episodes of 6-14 steps, some cut before success: in the point-cloud dataset they are error findings
    # (success_only), as is one action pushed out of bounds; rgbd and state are validated with --any-outcome.
    source = str(fake_demo_pair(root / "demos" / TASK / "demo.h5", n_episodes=N_EPISODES, steps=(6, 14), seed=3))
    pointcloud = _render(source, dict(obs_mode="pointcloud", n_points=NUM_POINTS, include_seg=True))
    write_rows(Path(pointcloud), "data/actions", BAD_ACTION_ROW, 5.0)
    rgbd = _render(source, dict(obs_mode="rgbd"), camera_size=CAMERA_SIZE)
    state = _render(source, dict(obs_mode="state"))
    validate.run(ValidationConfig(path=pointcloud, progress=False))
    for store in (rgbd, state):
        validate.run(ValidationConfig(path=store, success_only=False, progress=False))
    return Path(pointcloud), Path(rgbd), Path(state)


def _ppo_config(seed: int):
    from ms2core.config import load_config
    from storage_schemas.rl import PPOConfig
    from tests.conftest import REPO_ROOT

    return load_config(PPOConfig, REPO_ROOT / "configs/ppo/pickcube_state.yaml", [
        "rollout.env.backend=fake", "rollout.env.control_mode=pd_ee_delta_pos", "rollout.env.max_episode_steps=10",
        "rollout.num_envs=2", "rollout.num_procs=0", "net.hidden_sizes=[16]", "ppo.rollout_steps=40",
        "ppo.minibatch_size=20", "ppo.critic_warmup_epochs=0", f"run.total_env_steps={PPO_ENV_STEPS}",
        "run.log_every_steps=40", "run.eval_episodes=2", "run.checkpoint_every_steps=0", f"run.seed={seed}"])


def build_mlflow(state_store: Path) -> tuple[str, str]:
    """The real training flows on a temporary Prefect server; returns (ppo run id, bc run id)."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.train import train_bc, train_ppo
    from storage_schemas.training import BCConfig

    bc = BCConfig.model_validate({
        "env": {"backend": "fake"}, "dataset": {"paths": [str(state_store)], "mode": "ram"},
        "train": {"num_steps": BC_UPDATES, "batch_size": 8, "log_every_steps": 10}, "run": {"eval_episodes": 2}})
    with prefect_test_harness(server_startup_timeout=300):
        # eval_episodes unlike the config's: the flow evaluates again, with videos (flows.train)
        bc_run = train_bc(bc, eval_episodes=3)["run_id"]
        train_ppo(_ppo_config(0))
        ppo_run = train_ppo(_ppo_config(1))["run_id"]
    return ppo_run, bc_run


def build_sample_data_dir(root: Path) -> SampleData:
    """Build in this process; needs MS2FLOW_DATA_DIR=root and MLflow pointed into root (build_in_subprocess)."""
    root.mkdir(parents=True, exist_ok=True)
    pointcloud, rgbd, state = build_datasets(root)
    ppo, bc = build_mlflow(state)
    return SampleData(root, pointcloud, rgbd, state, os.environ["MLFLOW_TRACKING_URI"], ppo, bc, f"ms2-{TASK}-ppo")


def data_dir_environment(root: Path) -> dict[str, str]:
    """Every store of the run inside ``root``: the data directory, MLflow, Prefect's home."""
    return dict(MS2FLOW_DATA_DIR=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
                MS2FLOW_MLFLOW_ARTIFACTS=(root / "mlartifacts").as_uri(), PREFECT_HOME=str(root / ".prefect-test"),
                MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")


def build_in_subprocess(root: Path) -> SampleData:
    """Build in a child process: MLflow's tracking URI is process-global state tests must not inherit."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_REGISTRY_URI", "PREFECT_API_URL")}
    env.update(data_dir_environment(root))
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run([sys.executable, "-m", "tests.dashboards.sample_data", str(root)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building the sample data failed:\n{done.stdout}\n{done.stderr}")
    fields = json.loads(done.stdout.strip().splitlines()[-1])
    paths = ("root", "pointcloud_store", "rgbd_store", "state_store")
    return SampleData(**{k: Path(v) if k in paths else v for k, v in fields.items()})


if __name__ == "__main__":
    import dataclasses
    import sys

    target = Path(sys.argv[1]).absolute()
    os.environ.update(data_dir_environment(target))
    os.environ.pop("PREFECT_API_URL", None)
    built = build_sample_data_dir(target)
    print(json.dumps({k: str(v) for k, v in dataclasses.asdict(built).items()}))
