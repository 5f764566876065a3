"""Every deployment runs from its defaults (issue 18): each flow function called as
``prefect deployment run <flow>/default`` calls it (no parameters, or only task=...), on a real Prefect server
and SQLite MLflow store, with the fake env and tiny budgets set through MS2FLOW_DEFAULTS_SET."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.flows.conftest import build_fake_dataset

FAKE_RL_ENV = ["rollout.env.backend=fake", "rollout.env.control_mode=pd_ee_delta_pose", "rollout.env.max_episode_steps=10",
               "rollout.num_envs=2", "rollout.num_procs=0", "net.hidden_sizes=[16]", "run.log_every_steps=40",
               "run.eval_episodes=2", "run.checkpoint_every_steps=0"]
PPO = ["ppo.rollout_steps=40", "ppo.minibatch_size=20", "ppo.critic_warmup_epochs=0", "run.total_env_steps=80"]
SAC = ["sac.learning_starts=20", "sac.batch_size=16", "sac.buffer_capacity=500", "run.total_env_steps=60"]
TINY = {
    "demo-to-dataset": ["backend=fake", "num_episodes=4", "render.obs.n_points=32", "workers=1",
                        "validate_replay_sample=0"],
    "train-bc": ["env.backend=fake", "train.num_steps=5", "train.batch_size=8", "run.device=cpu",
                 "train.log_every_steps=5", "train.checkpoint_every_steps=5", "run.eval_episodes=2", "run.eval_num_procs=1",
                 "dataset.mode=ram", "dataset.prefetch_batches=0"],
    "train-ppo": FAKE_RL_ENV + PPO,
    "train-dapg": FAKE_RL_ENV + PPO + ["dapg.bc_pretrain_steps=5", "dapg.demo_batch_size=16"],
    "train-sac": FAKE_RL_ENV + SAC,
    "train-gail": FAKE_RL_ENV + SAC + ["gail.discriminator_hidden_sizes=[16]"],
    "evaluate": ["num_episodes=2", "backend=fake"],
}


@pytest.fixture
def tiny_defaults(monkeypatch):
    monkeypatch.setenv("MS2FLOW_DEFAULTS_SET", json.dumps(TINY))


def _stores(data_dir: Path, task: str = "PickCube-v0") -> list[Path]:
    return sorted((data_dir / "datasets" / task).glob("*.zarr"))


def test_every_training_deployment_runs_with_no_parameters(prefect_server, data_dir, tiny_defaults):
    """train-bc builds the default dataset (demo-to-dataset as a subflow); DAPG and GAIL find it; PPO and SAC
    need none; evaluate takes the champion that train-bc registered. All end Completed."""
    from mlflow.tracking import MlflowClient

    from flows.train import evaluate, train_bc, train_dapg, train_gail, train_ppo, train_sac

    state = train_bc(return_state=True)
    assert state.is_completed(), state
    (store,) = _stores(data_dir)  # built once, state observations, in the config's control mode
    assert ".state." in store.name and "pd_ee_delta_pose" in store.name
    summary = state.result()
    run = MlflowClient().get_run(summary["run_id"])
    assert run.data.params["train.num_steps"] == "5" and run.data.params["train.state_noise_std"] == "0.1"
    assert json.loads(run.data.params["dataset.paths"].replace("'", '"')) == [str(store)]
    for flow in (train_dapg, train_gail, train_ppo, train_sac):
        state = flow(return_state=True)
        assert state.is_completed(), (flow.name, state)
    assert _stores(data_dir) == [store]  # found, not built again
    demo_runs = MlflowClient().search_runs([run.info.experiment_id], "tags.algo = 'dapg'")
    assert demo_runs and demo_runs[0].data.params["demos.path"] == str(store)

    result = evaluate(return_state=True)  # the champion of ms2-PickCube-v0-bc, downloaded from MLflow
    assert result.is_completed(), result
    evaluated = result.result()
    assert evaluated.num_episodes == 2 and Path(evaluated.checkpoint).is_relative_to(data_dir / "models")


def test_task_parameter_selects_the_task_and_the_template_config(prefect_server, data_dir, tiny_defaults):
    from flows.data import demo_to_dataset
    from flows.train import evaluate, train_bc

    state = demo_to_dataset(task="LiftCube-v0", return_state=True)
    assert state.is_completed(), state
    assert state.result().env_id == "LiftCube-v0" and len(_stores(data_dir, "LiftCube-v0")) == 1
    summary = train_bc(task="LiftCube-v0")  # no LiftCube config: pickcube_state.yaml, task substituted
    assert summary["model_name"] == "ms2-LiftCube-v0-bc"
    assert len(_stores(data_dir, "LiftCube-v0")) == 2  # the point-cloud one above and the state one BC built
    result = evaluate(model="models:/ms2-LiftCube-v0-bc@champion")
    assert result.env_id == "LiftCube-v0" and result.num_episodes == 2


def test_partial_config_and_overrides_merge_over_the_config_file(prefect_server, data_dir, monkeypatch):
    from mlflow.tracking import MlflowClient

    from flows.train import train_bc

    store = build_fake_dataset("state", num_episodes=3)
    summary = train_bc(config={"env": {"backend": "fake"}, "dataset": {"paths": [store], "mode": "ram"},
                               "train": {"num_steps": 4, "checkpoint_every_steps": 4}, "run": {"device": "cpu"}},
                       overrides=["train.batch_size=4", "run.eval_episodes=0", "run.run_name=partial"], register_model=False)
    params = MlflowClient().get_run(summary["run_id"]).data.params
    assert (params["train.num_steps"], params["train.batch_size"], params["run.run_name"]) == ("4", "4", "partial")
    assert params["train.lr"] == "0.0003" and params["net.hidden_sizes"] == "[256, 256, 256]"  # from the file


def test_evaluate_names_a_missing_model_and_how_to_make_one(prefect_server, data_dir, tiny_defaults):
    from flows.train import evaluate
    from ms2core.errors import ConfigError

    state = evaluate(model="models:/ms2-PickCube-v0-bc@champion", return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match="cannot find models:/ms2-PickCube-v0-bc@champion"):
        state.result()


def test_default_config_files_and_dataset_matching(data_dir):
    from flows.defaults import config_file, find_dataset, task_slug
    from ms2core.errors import ConfigError
    from storage_schemas.dataset import ObsProcessConfig

    assert task_slug("PickCube-v0") == "pickcube" and task_slug("TurnFaucet-v0") == "turnfaucet"
    path, templated = config_file("dapg", "PickCube-v0")
    assert path.name == "pickcube_state.yaml" and not templated
    assert config_file("sac", "LiftCube-v0")[1] is True
    with pytest.raises(ConfigError, match="no default config for nosuch"):
        config_file("nosuch", "PickCube-v0")
    state = build_fake_dataset("state", num_episodes=2)
    points = build_fake_dataset("pointcloud", num_episodes=2, n_points=32)
    state_obs = ObsProcessConfig(obs_mode="state")
    assert find_dataset("PickCube-v0", "pd_ee_delta_pose", state_obs, "fake") == state
    assert find_dataset("PickCube-v0", "pd_ee_delta_pose", ObsProcessConfig(n_points=32), "fake") == points
    assert find_dataset("PickCube-v0", "pd_ee_delta_pose", ObsProcessConfig(n_points=64), "fake") is None
    assert find_dataset("PickCube-v0", "pd_joint_pos", state_obs, "fake") is None
    assert find_dataset("PickCube-v0", "pd_ee_delta_pose", state_obs, "sapien") is None
    assert find_dataset("LiftCube-v0", "pd_ee_delta_pose", state_obs, "fake") is None
