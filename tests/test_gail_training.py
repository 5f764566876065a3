"""GAIL end to end on the fake env: the discriminator trains, its reward replaces the env reward, resume works."""

import numpy as np
import pytest
import torch

from ms2core.algos._common import load_checkpoint
from ms2core.algos._demos import write_demo_zarr
from ms2core.algos.gail import train_gail
from ms2core.config import load_config
from ms2core.errors import ConfigError
from ms2core.metrics import read_jsonl_metrics
from storage_schemas.rl import GAILConfig

torch.set_num_threads(1)

ENV = dict(env_id="PickCube-v0", backend="fake", control_mode="pd_ee_delta_pos", max_episode_steps=10)


def demos(path):
    rng = np.random.default_rng(0)
    return write_demo_zarr(path, [{"obs/state": rng.normal(size=(10, 51)).astype(np.float32),
                                   "actions": np.tile([0.9, 0.9, 0.9, 0.0], (10, 1)).astype(np.float32)}
                                  for _ in range(3)])


def tiny_gail(tmp_path, demo_path, sac=None, **run):
    return GAILConfig.model_validate(dict(
        rollout=dict(env=ENV, num_envs=2), net=dict(hidden_sizes=[16]),
        sac={"learning_starts": 20, "batch_size": 16, "buffer_capacity": 500, "updates_per_env_step": 0.5, **(sac or {})},
        gail=dict(discriminator_hidden_sizes=[16], discriminator_batch_size=16, discriminator_updates_per_env_step=1.0,
                  gradient_penalty=0.1),
        demos=dict(path=str(demo_path)),
        run={"total_env_steps": 60, "log_every_steps": 20, "run_dir": str(tmp_path / "run"), **run}))


def test_gail_trains_discriminator_and_checkpoints_it(tmp_path):
    result = train_gail(tiny_gail(tmp_path, demos(tmp_path / "d.zarr")))
    assert result.env_steps == 60 and result.updates == 21
    last = read_jsonl_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["metrics"]
    # the discriminator separates constant demo actions from the agent's: demo prob above agent prob
    assert last["disc_demo_prob"] > last["disc_agent_prob"]
    state = load_checkpoint(result.final_checkpoint, "gail")
    assert "disc" in state["hooks"]
    resumed = train_gail(tiny_gail(tmp_path / "b", tmp_path / "d.zarr", resume_from=result.final_checkpoint,
                                   total_env_steps=80))
    assert resumed.env_steps == 80 and resumed.updates == 31


def test_gail_rejects_nstep(tmp_path):
    with pytest.raises(ConfigError, match="n_step=1"):
        train_gail(tiny_gail(tmp_path, demos(tmp_path / "d.zarr"), sac={"n_step": 3}))


def test_example_config_loads(repo_root):
    assert load_config(GAILConfig, repo_root / "configs" / "gail" / "pickcube_state.yaml").sac.n_step == 1
