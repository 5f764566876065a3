"""``ms2 quickstart``: generate demos -> replay -> render point clouds -> validate -> BC -> evaluate -> register."""

from __future__ import annotations

import time

from prefect import flow

from flows.data import demo_to_dataset
from flows.train import train_bc
from storage_schemas.env import EnvConfig
from storage_schemas.flows import DemoToDatasetConfig
from storage_schemas.quickstart import QuickstartConfig, QuickstartSummary
from storage_schemas.training import BCConfig, BCRunConfig, DatasetConfig, NetConfig, TrainLoopConfig


def bc_config_for(config: QuickstartConfig, store: str) -> BCConfig:
    return BCConfig(
        env=EnvConfig(env_id=config.env_id, obs_mode="pointcloud", control_mode=config.target_control_mode,
                      backend=config.backend),
        dataset=DatasetConfig(paths=[store], mode="ram", prefetch_batches=2),
        net=NetConfig(backbone="pointnet", head="deterministic"),
        train=TrainLoopConfig(num_steps=config.train_steps, batch_size=config.batch_size,
                              log_every_steps=max(1, min(10, config.train_steps)),
                              checkpoint_every_steps=max(1, config.train_steps // 2)),
        # the flow evaluates (with videos) after training, for the quickstart's eval_episodes
        run=BCRunConfig(device="auto", eval_episodes=0, run_name="quickstart"),
    )


@flow(name="quickstart", log_prints=True)
def quickstart(config: QuickstartConfig = QuickstartConfig()) -> QuickstartSummary:
    start = time.perf_counter()
    data = demo_to_dataset(DemoToDatasetConfig(
        env_id=config.env_id, demos="generate", num_episodes=config.num_demos,
        target_control_mode=config.target_control_mode, render=config.render_options(), workers=config.workers,
        validate_replay_sample=config.validate_replay_sample, backend=config.backend))
    trained = train_bc(bc_config_for(config, data.store), eval_episodes=config.eval_episodes)
    return QuickstartSummary(
        env_id=config.env_id, dataset=data.store, n_episodes=data.n_episodes, n_rows=data.n_rows,
        validation_status=data.validation_status, run_id=trained["run_id"], run_dir=trained["run_dir"],
        checkpoint=trained["checkpoint"], success_rate=trained["success_rate"],
        model_name=trained.get("model_name"), model_version=trained.get("model_version"),
        wall_s=time.perf_counter() - start,
    )
