"""rollout.obs: the observation processing of rollouts, recorded in checkpoints, checked against demo datasets."""

import pytest
import torch

from ms2core.errors import ConfigError, DatasetError
from storage_schemas.rl import DAPGConfig, PPOConfig

torch.set_num_threads(1)

ENV = dict(env_id="PickCube-v0", backend="fake", obs_mode="pointcloud", control_mode="pd_ee_delta_pose",
           max_episode_steps=10)


def test_rollout_obs_options_reach_observations_and_the_policy(tmp_path):
    from ms2core.algos.policies import load_policy
    from ms2core.algos.ppo import train_ppo
    from ms2core.rollout import vector_env_from_config

    cfg = PPOConfig.model_validate(dict(
        rollout=dict(env=ENV, num_envs=2, obs=dict(obs_mode="pointcloud", n_points=48, n_goal_points=4)),
        net=dict(hidden_sizes=[8], pointnet_point_mlp=[8]), ppo=dict(rollout_steps=20, minibatch_size=10),
        run=dict(total_env_steps=20, run_dir=str(tmp_path))))
    with vector_env_from_config(cfg.rollout, seed=0) as vec:
        obs = vec.reset()
    assert obs["xyz"].shape == (2, 52, 3) and (obs["rgb"][:, -4:] == [0, 255, 0]).all()  # 48 points + 4 goal points
    _, view = load_policy(train_ppo(cfg).final_checkpoint)  # auto backbone: PointNet on the 52 points
    assert view["extra"]["obs_shapes"]["xyz"] == [52, 3] and view["extra"]["obs_processing"]["n_goal_points"] == 4


def test_rollout_obs_must_process_the_envs_obs_mode():
    with pytest.raises(ValueError, match="rollout.env.obs_mode is 'state'"):
        PPOConfig.model_validate(dict(rollout=dict(env={**ENV, "obs_mode": "state"}, obs=dict(obs_mode="pointcloud"))))
    from ms2core.config import load_config

    with pytest.raises(ConfigError, match="include_seg"):
        load_config(PPOConfig, None, ["rollout.env.obs_mode=pointcloud_robot_seg", "rollout.obs.obs_mode=pointcloud"])


def test_dapg_refuses_demos_processed_unlike_its_rollouts(tmp_path, monkeypatch):
    from ms2core.algos.dapg import train_dapg
    from tests.flows.conftest import build_fake_dataset

    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    store = build_fake_dataset("pointcloud", num_episodes=2, n_points=40)

    def dapg(obs: dict) -> DAPGConfig:
        return DAPGConfig.model_validate(dict(
            rollout=dict(env=ENV, num_envs=2, obs=obs), net=dict(hidden_sizes=[8], pointnet_point_mlp=[8]),
            ppo=dict(rollout_steps=20, minibatch_size=10, critic_warmup_epochs=0), dapg=dict(demo_batch_size=8),
            demos=dict(path=store, obs_keys=["xyz", "rgb", "state"]),
            run=dict(total_env_steps=20, run_dir=str(tmp_path / "run"))))

    with pytest.raises(DatasetError, match=r"obs_frame='world' \(rollout: 'ee'\)") as err:
        train_dapg(dapg(dict(obs_mode="pointcloud", n_points=40, obs_frame="ee")))
    assert "--set rollout.obs.obs_frame=world" in err.value.hint
    with pytest.raises(DatasetError, match=r"n_points=40 \(rollout: 1200\)"):
        train_dapg(dapg(None))
    assert train_dapg(dapg(dict(obs_mode="pointcloud", n_points=40))).updates == 1  # the dataset's own options
