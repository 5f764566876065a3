"""ManiSkill2-Learn checkpoints in ms2flow: loaded from its state dict, acting as its actor, evaluated.

tests/data/ml2l/{bc,ppo}_pointnet_tiny.ckpt were written by ManiSkill2-Learn itself (its config
loader, agent builder and save_checkpoint; tests/data/ml2l/make_checkpoint.py), with the actions
its actor returned (mode "eval") for fixed observations beside them.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ms2core.envs import make_env
from ms2core.errors import CheckpointError, ConfigError
from ms2core.nn.ml2l import load_ml2l_policy, read_ml2l_config
from ms2core.obs import ObservationProcessor
from pipelines.evaluate import run as run_evaluation
from storage_schemas.dataset import ObsProcessConfig
from storage_schemas.training import EvalConfig

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "ml2l"


def _io(name: str) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    with np.load(DATA / f"{name}_io.npz") as data:
        obs = {k[len("obs_"):]: torch.from_numpy(data[k]) for k in data.files if k.startswith("obs_")}
        return obs, data["actions"]


@pytest.mark.parametrize("name", ["bc_pointnet_tiny", "ppo_pointnet_tiny"])
def test_actions_equal_maniskill2_learns_on_the_same_observations(name):
    actor, view = load_ml2l_policy(DATA / f"{name}.ckpt", DATA / f"{name}.py")
    obs, expected = _io(name)
    np.testing.assert_allclose(actor.act(obs, "mean").numpy(), expected, rtol=0, atol=1e-6)
    assert np.abs(expected).max() > 0.05  # trained weights, not the near-zero initial output layer
    assert view["extra"]["obs_processing"]["obs_layout"] == "ml2l"
    assert view["config"]["env"]["control_mode"] == "pd_ee_delta_pose" and view["extra"]["action_dim"] == 7


def test_head_kinds_sample_and_clip_like_ml2l():
    bc, _ = load_ml2l_policy(DATA / "bc_pointnet_tiny.ckpt", DATA / "bc_pointnet_tiny.py")
    ppo, _ = load_ml2l_policy(DATA / "ppo_pointnet_tiny.ckpt", DATA / "ppo_pointnet_tiny.py")
    assert (bc.head_kind, ppo.head_kind) == ("tanh", "gaussian")
    obs, _ = _io("ppo_pointnet_tiny")
    samples = torch.stack([ppo.act(obs, "sample", torch.Generator().manual_seed(i)) for i in range(64)])
    # GaussianHead: Normal(mean, exp(log_std) * scale), clamped to the bounds; log_std was initialised at -1
    spread = (samples - ppo.act(obs)).std(0).mean().item()
    assert 0.2 < spread < 0.5 and samples.abs().max() <= 1.0
    bc_spread = (torch.stack([bc.act(obs, "sample", torch.Generator().manual_seed(i)) for i in range(4)])
                 - bc.act(obs)).abs().max().item()
    assert bc_spread < 1e-3  # TanhHead: noise_std 1e-5


def test_bad_checkpoints_and_configs_are_typed_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_ml2l_policy(tmp_path / "missing.ckpt", DATA / "bc_pointnet_tiny.py")
    payload = torch.load(DATA / "bc_pointnet_tiny.ckpt", weights_only=True)
    del payload["state_dict"]["actor.backbone.final_mlp.mlp.linear1.bias"]
    torch.save(payload, tmp_path / "edited.ckpt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_ml2l_policy(tmp_path / "edited.ckpt", DATA / "bc_pointnet_tiny.py")
    torch.save({"state_dict": {"critic.x": torch.zeros(1)}}, tmp_path / "no_actor.ckpt")
    with pytest.raises(CheckpointError, match="no ML2L actor weights"):
        load_ml2l_policy(tmp_path / "no_actor.ckpt", DATA / "bc_pointnet_tiny.py")
    with pytest.raises(CheckpointError, match="does not exist|not readable"):
        load_ml2l_policy(DATA / "bc_pointnet_tiny.py", DATA / "bc_pointnet_tiny.py")
    cnn = tmp_path / "cnn.py"
    cnn.write_text('agent_cfg = dict(actor_cfg=dict(head_cfg=dict(type="GaussianHead"), nn_cfg=dict('
                   'type="Visuomotor", visual_nn_cfg=dict(type="IMPALA"))))\nenv_cfg = dict(env_name="PickCube-v0")\n')
    with pytest.raises(ConfigError, match="IMPALA is not supported"):
        load_ml2l_policy(DATA / "bc_pointnet_tiny.ckpt", cnn)


def test_configs_are_read_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"agent_cfg = dict(x=__import__('pathlib').Path({str(marker)!r}).touch())\n")
    with pytest.raises(ConfigError, match="not a literal"):
        read_ml2l_config(evil)
    assert not marker.exists()
    cfg = read_ml2l_config(REPO / "tests" / "data" / "ml2l" / "ppo_pointnet_tiny.py")
    assert cfg["agent_cfg"]["actor_cfg"]["nn_cfg"]["mlp_cfg"]["mlp_spec"] == ["32 + agent_shape", 16, 16,
                                                                               "action_shape"]


def test_evaluation_runs_the_ml2l_policy_on_the_fake_env_with_the_ml2l_layout(tmp_path):
    cfg = EvalConfig(checkpoint=str(DATA / "bc_pointnet_tiny.ckpt"), ml2l_config=str(DATA / "bc_pointnet_tiny.py"),
                     ml2l_options=["env_cfg.n_points=64"], num_episodes=2, backend="fake", max_episode_steps=4,
                     save_traj=True, output_dir=str(tmp_path / "eval"))
    result = run_evaluation(cfg, progress=False)
    assert result.num_episodes == 2 and result.obs_mode == "pointcloud" and result.episode_length.mean == 4
    # the recorded actions are the ML2L actor's on ml2l-layout observations of the same episodes
    actor, _ = load_ml2l_policy(cfg.checkpoint, cfg.ml2l_config, cfg.ml2l_options)
    processor = ObservationProcessor(ObsProcessConfig(obs_layout="ml2l", obs_frame="ee", n_points=64,
                                                      n_goal_points=50), cfg.seed)
    env = make_env("PickCube-v0", "pointcloud", "pd_ee_delta_pose", backend="fake", max_episode_steps=4)
    with h5py.File(result.trajectory_path) as f:
        for i in range(2):
            raw, _ = env.reset(seed=i)
            recorded = f[f"traj_{i}"]["actions"][()]
            for action in recorded:
                obs = {k: torch.from_numpy(v)[None] for k, v in processor(raw).items()}
                np.testing.assert_allclose(action, actor.act(obs)[0].numpy().clip(-1, 1), atol=1e-6)
                raw, *_ = env.step(action)


def _cli(*args: str):
    from typer.testing import CliRunner

    from flows.cli import app

    return CliRunner().invoke(app, ["evaluate", *args])


def test_cli_evaluates_an_ml2l_checkpoint_and_explains_mistakes(tmp_path):
    ckpt, config = str(DATA / "ppo_pointnet_tiny.ckpt"), str(DATA / "ppo_pointnet_tiny.py")
    ok = _cli("--ml2l-checkpoint", ckpt, "--ml2l-config", config, "--ml2l-cfg-option", "env_cfg.n_points=32",
              "--backend", "fake", "--num", "1", "--max-episode-steps", "2", "--output-dir", str(tmp_path / "e"))
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "e" / "result.json").exists() and "PickCube-v0 pointcloud" in ok.output
    alone = _cli("--ml2l-checkpoint", ckpt, "--backend", "fake")
    assert isinstance(alone.exception, ConfigError) and "--ml2l-config" in str(alone.exception)
    joint = _cli("--ml2l-checkpoint", ckpt, "--ml2l-config", config, "--ml2l-cfg-option",
                 "env_cfg.control_mode=pd_joint_delta_pos", "--backend", "fake", "--num", "1",
                 "--output-dir", str(tmp_path / "j"))
    assert isinstance(joint.exception, ConfigError)
    assert "acts in 7 dimensions" in str(joint.exception) and "takes 8" in str(joint.exception)
