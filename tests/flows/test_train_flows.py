"""Training flows on a real Prefect server and SQLite MLflow store (fake backend: no simulator)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ms2core.config import load_config
from storage_schemas.rl import SACConfig
from storage_schemas.training import BCConfig
from tests.conftest import REPO_ROOT
from tests.flows.conftest import build_fake_dataset


def test_train_sac_flow_tracks_metrics_and_checkpoint(prefect_server, data_dir):
    from mlflow.tracking import MlflowClient

    from flows.train import train_sac

    cfg = load_config(SACConfig, REPO_ROOT / "configs/sac/pickcube_state.yaml", [
        "rollout.env.backend=fake", "rollout.env.max_episode_steps=20", "rollout.num_envs=2", "rollout.num_procs=0",
        "net.hidden_sizes=[16,16]", "sac.learning_starts=50", "sac.batch_size=16", "sac.buffer_capacity=500",
        "run.total_env_steps=200", "run.log_every_steps=50", "run.eval_episodes=2", "run.checkpoint_every_steps=0"])
    summary = train_sac(cfg)
    client = MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.data.tags["algo"] == "sac" and run.data.params["sac.batch_size"] == "16"
    assert "eval/success_rate" in run.data.metrics
    assert any(client.get_metric_history(run.info.run_id, key) for key in run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")} == {"checkpoint/checkpoint.pt"}
    # registered like BC: the pyfunc model is the policy part of the checkpoint, deterministic tanh(mean)
    assert summary["model_name"] == "ms2-PickCube-v0-sac" and summary["model_version"] == "1"
    assert str(client.get_model_version_by_alias("ms2-PickCube-v0-sac", "champion").version) == "1"
    import mlflow
    import numpy as np
    import torch

    from ms2core.algos.policies import load_policy

    model = mlflow.pyfunc.load_model("models:/ms2-PickCube-v0-sac@champion")
    states = np.random.default_rng(0).normal(size=(3, 51)).astype(np.float32)
    actions = model.predict({"state": states})
    policy, _ = load_policy(summary["checkpoint"])
    np.testing.assert_allclose(actions, policy.act({"state": torch.as_tensor(states)}).numpy(), atol=1e-6)


def test_ppo_flows_register_candidates_promote_champions_and_export(prefect_server, data_dir, tmp_path):
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.train import train_ppo
    from storage_schemas.rl import PPOConfig

    def run(seed: int) -> dict:
        cfg = load_config(PPOConfig, REPO_ROOT / "configs/ppo/pickcube_state.yaml", [
            "rollout.env.backend=fake", "rollout.env.control_mode=pd_ee_delta_pos", "rollout.env.max_episode_steps=10",
            "rollout.num_envs=2", "rollout.num_procs=0", "net.hidden_sizes=[16]", "ppo.rollout_steps=40",
            "ppo.minibatch_size=20", "ppo.critic_warmup_epochs=0", "run.total_env_steps=80",
            "run.log_every_steps=40", "run.eval_episodes=4", "run.checkpoint_every_steps=0", f"run.seed={seed}"])
        return train_ppo(cfg)

    first, second = run(0), run(1)
    client = MlflowClient()
    name = "ms2-PickCube-v0-ppo"
    assert (first["model_version"], second["model_version"]) == ("1", "2")
    assert str(client.get_model_version_by_alias(name, "candidate").version) == "2"
    better = second["success_rate"] > first["success_rate"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == ("2" if better else "1")
    assert second["champion_moved"] == better

    runner = CliRunner()
    out = tmp_path / "ppo_policy"
    exported = runner.invoke(app, ["export-policy", f"models:/{name}@champion", "--out", str(out)],
                             catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    evaluated = runner.invoke(app, ["evaluate", "--policy", str(out), "--num", "2", "--backend", "fake"],
                              catch_exceptions=False)
    assert evaluated.exit_code == 0 and "success_once" in evaluated.output, evaluated.output
    # ms2 evaluate --checkpoint takes the run's checkpoint.pt as it takes a BC checkpoint
    by_ckpt = runner.invoke(app, ["evaluate", "--checkpoint", second["checkpoint"], "--num", "2",
                                  "--output-dir", str(tmp_path / "eval")], catch_exceptions=False)
    assert by_ckpt.exit_code == 0 and (tmp_path / "eval" / "result.json").exists(), by_ckpt.output


def test_ms2_run_resumes_a_checkpoint_into_a_new_tracked_and_registered_run(prefect_server, data_dir):
    """`ms2 run train-<algo> --resume-from` (a checkpoint trained elsewhere, e.g. on a GPU host, brought back):
    the run goes on in the checkpoint's run dir from its env step counter, and the flow's MLflow run holds only
    the resumed steps, the evaluation and a new registered version."""
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.train import train_ppo
    from ms2core.checkpoint import read_checkpoint
    from storage_schemas.rl import PPOConfig

    sets = ["rollout.env.backend=fake", "rollout.env.control_mode=pd_ee_delta_pos", "rollout.env.max_episode_steps=10",
            "rollout.num_envs=2", "rollout.num_procs=0", "net.hidden_sizes=[16]", "ppo.rollout_steps=40",
            "ppo.minibatch_size=20", "ppo.critic_warmup_epochs=0", "run.log_every_steps=40", "run.eval_episodes=4",
            "run.checkpoint_every_steps=0"]
    config = REPO_ROOT / "configs/ppo/pickcube_state.yaml"
    first = train_ppo(load_config(PPOConfig, config, [*sets, "run.total_env_steps=80"]))
    runner = CliRunner()
    args = ["run", "train-ppo", "-c", str(config), *(a for s in sets for a in ("--set", s)),
            "--set", "run.total_env_steps=120", "--resume-from", first["checkpoint"]]
    resumed = runner.invoke(app, args, catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    state = read_checkpoint(first["checkpoint"])
    assert (state["env_steps"], state["updates"]) == (120, 3)
    client = MlflowClient()
    name = "ms2-PickCube-v0-ppo"
    versions = {int(v.version): v.run_id for v in client.search_model_versions(f"name='{name}'")}
    assert sorted(versions) == [1, 2] and versions[1] == first["run_id"]
    second = client.get_run(versions[2])
    assert second.data.tags["run_dir"] == first["run_dir"] and "eval/success_rate" in second.data.metrics
    history = client.get_metric_history(second.info.run_id, "episodes")
    assert history and min(m.step for m in history) > 80
    refused = runner.invoke(app, ["run", "evaluate", "--resume-from", first["checkpoint"]])  # (ms2's main prints it)
    assert refused.exit_code != 0 and "'evaluate'" in str(refused.exception) and "train-ppo" in str(refused.exception)


def test_train_bc_refuses_a_dataset_that_fails_validation(prefect_server, data_dir):
    """One place decides (pipelines.train.run): the flow refuses what the CLI refuses; force=True trains and
    is recorded in the MLflow params and the run's train_result.json."""
    import json

    from mlflow.tracking import MlflowClient

    from flows.train import train_bc
    from pipelines.validate import run as validate
    from storage_schemas.validation import ValidationConfig

    store = build_fake_dataset("state", num_episodes=3)
    from tests.validate_fixtures import write_rows

    write_rows(store, "data/actions", 1, 5.0)  # outside the action bounds (through the real writer)
    assert validate(ValidationConfig(path=store, progress=False, recheck=True)).report.status == "failed"
    cfg = BCConfig.model_validate({"env": {"backend": "fake"}, "dataset": {"paths": [store], "mode": "ram"},
                                   "train": {"num_steps": 5, "batch_size": 4}, "run": {"device": "cpu"}})
    state = train_bc(cfg, return_state=True, register_model=False)
    assert state.is_failed()
    with pytest.raises(Exception, match="failed validation with .* action_bounds"):
        state.result()
    summary = train_bc(cfg, register_model=False, force=True)
    run = MlflowClient().get_run(summary["run_id"])
    assert run.data.params["run.force"] == "True" and "action_bounds" in run.data.tags["forced_inputs"]
    assert run.data.tags["run_dir"] == summary["run_dir"] and run.info.run_name == "bc-default"
    assert json.loads((Path(summary["run_dir"]) / "train_result.json").read_text())["forced_inputs"]
