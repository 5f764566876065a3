"""Training flows on a real Prefect server and SQLite MLflow store (fake backend: no simulator)."""

from __future__ import annotations

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
    assert summary["model_version"] is None  # online-RL checkpoints are logged, not registered


def test_train_bc_refuses_a_dataset_that_fails_validation(prefect_server, data_dir):
    import zarr

    from flows.train import train_bc

    store = build_fake_dataset("state", num_episodes=3)
    ends = zarr.open_group(store, mode="r+")["meta/episode_ends"]
    ends[:] = ends[:][::-1].copy()  # no longer increasing: a validation error
    cfg = BCConfig.model_validate({"env": {"backend": "fake"}, "dataset": {"paths": [store], "mode": "ram"},
                                   "train": {"num_steps": 5, "batch_size": 4, "device": "cpu"}})
    state = train_bc(cfg, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="failed validation"):
        state.result()
