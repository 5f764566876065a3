"""DAPG end to end: the demo term pulls the policy toward the demos; bad demo datasets are clear errors."""

import numpy as np
import pytest
import torch

from ms2core.algos._common import load_checkpoint
from ms2core.algos._demos import write_demo_zarr
from ms2core.algos.dapg import train_dapg
from ms2core.config import load_config
from ms2core.errors import DatasetError
from ms2core.metrics import read_jsonl_metrics
from ms2core.rollout import EnvFactory, VectorEnv
from storage_schemas.env import EnvConfig
from storage_schemas.rl import DAPGConfig

torch.set_num_threads(1)

ENV = dict(env_id="PickCube-v0", backend="fake", control_mode="pd_ee_delta_pos", max_episode_steps=10)
DEMO_ACTION = np.array([0.8, -0.6, 0.4, 0.0], np.float32)


def constant_action_demos(path, episodes=4, length=10):
    """Demos from the fake env where the expert always plays DEMO_ACTION."""
    eps = []
    with VectorEnv(EnvFactory(EnvConfig(**ENV)), num_envs=1, seed=100) as vec:
        for _ in range(episodes):
            obs, states = vec.reset(), []
            for _ in range(length):
                states.append(obs["state"][0])
                obs = vec.step(DEMO_ACTION[None]).obs
            eps.append({"obs/state": np.stack(states), "actions": np.tile(DEMO_ACTION, (length, 1))})
    return write_demo_zarr(path, eps)


def tiny_dapg(tmp_path, demo_path, dapg_lambda):
    return DAPGConfig.model_validate(dict(
        rollout=dict(env=ENV, num_envs=2), net=dict(hidden_sizes=[16]),
        ppo=dict(rollout_steps=40, minibatch_size=20, num_epochs=4, critic_warmup_epochs=0, max_kl=None, lr=3e-3),
        dapg=dict(dapg_lambda=dapg_lambda, dapg_damping=0.9, demo_batch_size=32),
        demos=dict(path=str(demo_path)),
        run=dict(total_env_steps=200, log_every_steps=40, run_dir=str(tmp_path / f"run{dapg_lambda}"), seed=0)))


def _mean_action_error(ckpt, demo_path):
    from ms2core.algos._demos import load_demo_transitions
    from ms2core.algos.ppo import build_actor_critic

    state = load_checkpoint(ckpt, "dapg")
    cfg = DAPGConfig.model_validate(state["config"])
    actor, _ = build_actor_critic({"state": 51}, 4, cfg.net)
    actor.load_state_dict(state["actor"])
    demos = load_demo_transitions(demo_path, ["state"])
    with torch.no_grad():
        mean, _ = actor({"state": torch.as_tensor(demos.obs["state"])})
    return float((mean - torch.as_tensor(demos.actions)).abs().mean())


def test_demo_term_pulls_policy_to_demos(tmp_path):
    demo_path = constant_action_demos(tmp_path / "demos.zarr")
    with_demos = train_dapg(tiny_dapg(tmp_path, demo_path, dapg_lambda=5.0))
    without = train_dapg(tiny_dapg(tmp_path, demo_path, dapg_lambda=0.0))
    err_with = _mean_action_error(with_demos.final_checkpoint, demo_path)
    err_without = _mean_action_error(without.final_checkpoint, demo_path)
    assert err_with < 0.5 * err_without, (err_with, err_without)
    weights = [r["metrics"]["dapg_weight"] for r in read_jsonl_metrics(tmp_path / "run5.0" / "metrics.jsonl")
               if "dapg_weight" in r["metrics"]]
    assert weights == pytest.approx([5.0 * 0.9**k for k in range(5)])  # one log per update: lambda * damping^k


def test_mismatched_demos_are_rejected(tmp_path):
    path = write_demo_zarr(tmp_path / "bad.zarr", [{"obs/state": np.zeros((3, 51), np.float32),
                                                     "actions": np.zeros((3, 7), np.float32)}])
    with pytest.raises(DatasetError, match="control mode"):
        train_dapg(tiny_dapg(tmp_path, path, 1.0))
    with pytest.raises(DatasetError, match="does not exist"):
        train_dapg(tiny_dapg(tmp_path, tmp_path / "missing.zarr", 1.0))


def test_example_config_loads(repo_root):
    cfg = load_config(DAPGConfig, repo_root / "configs" / "dapg" / "pickcube_state.yaml")
    assert cfg.dapg.dapg_lambda == 1.0 and cfg.dapg.bc_pretrain_steps > 0 and cfg.ppo.gamma == 0.95
    for path in sorted((repo_root / "configs" / "dapg").glob("*.yaml")):  # every committed DAPG config
        assert load_config(DAPGConfig, path, ["run.total_env_steps=10"]).run.total_env_steps == 10
    h50 = load_config(DAPGConfig, repo_root / "configs" / "dapg" / "pickcube_state_h50.yaml")
    assert h50.rollout.train_episode_steps == 50 and h50.ppo.gamma == 0.8


def test_point_cloud_rl_configs_observe_as_the_render_config_renders(repo_root):
    """DAPG refuses demos rendered with other processing than its rollouts use: the point-cloud DAPG and PPO configs
    (issue 20 item 3: obs_frame ee, 50 goal points) must keep the committed render config's obs, or a GPU lending
    ends at the demo check instead of training."""
    from storage_schemas.dataset import RenderConfig
    from storage_schemas.rl import PPOConfig

    render = load_config(RenderConfig, repo_root / "configs" / "render" / "pointcloud.yaml",
                         values={"source": "demos.h5", "store": "out.zarr"}).options.obs
    assert render.obs_frame == "ee" and render.n_goal_points == 50 and render.n_points == 1200
    ppo = load_config(PPOConfig, repo_root / "configs" / "ppo" / "pickcube_pointcloud_gpu_h50.yaml")
    assert ppo.rollout.obs == render and ppo.net.backbone == "pointnet"
    paths = sorted((repo_root / "configs" / "dapg").glob("pickcube_pointcloud*.yaml"))
    assert len(paths) >= 2  # the settings of configs/dapg/pickcube_state_h50.yaml and of its fast-demo recipe
    for path in paths:
        dapg = load_config(DAPGConfig, path)
        assert dapg.rollout.obs == render, path.name
        assert set(dapg.demos.obs_keys) == {"xyz", "rgb", "state"} and dapg.net.backbone == "pointnet", path.name


def _with_pretrain(cfg, steps, **run):
    return cfg.model_copy(update={"dapg": cfg.dapg.model_copy(update={"bc_pretrain_steps": steps,
                                                                      "bc_pretrain_state_noise": 0.0}),
                                  "run": cfg.run.model_copy(update=run)})


def test_bc_pretraining_fits_the_mean_before_any_env_step_and_leaves_log_std(tmp_path):
    """dapg.bc_pretrain_steps: with no demo term and no PPO update worth the name (one 40-step rollout), the
    pre-trained actor already plays the demo action; without pre-training it does not. log_std stays at init."""
    demo_path = constant_action_demos(tmp_path / "demos.zarr")
    base = tiny_dapg(tmp_path, demo_path, dapg_lambda=0.0)
    pre = train_dapg(_with_pretrain(base, 300, total_env_steps=40, run_dir=str(tmp_path / "pre")))
    plain = train_dapg(_with_pretrain(base, 0, total_env_steps=40, run_dir=str(tmp_path / "plain")))
    err_pre, err_plain = _mean_action_error(pre.final_checkpoint, demo_path), _mean_action_error(plain.final_checkpoint, demo_path)
    assert err_pre < 0.1 < err_plain, (err_pre, err_plain)
    assert pre.env_steps == plain.env_steps == 40  # pre-training spends no env steps
    first = read_jsonl_metrics(tmp_path / "pre" / "metrics.jsonl")[0]
    assert first["step"] == 0 and first["metrics"]["bc_pretrain/steps"] == 300
    assert first["metrics"]["bc_pretrain/loss_last_10pct"] < 0.1 * first["metrics"]["bc_pretrain/loss_first"]
    assert not any("bc_pretrain/steps" in r["metrics"] for r in read_jsonl_metrics(tmp_path / "plain" / "metrics.jsonl"))
    state = load_checkpoint(pre.final_checkpoint, "dapg")
    # the PPO update moved log_std a little at most; pre-training itself must not have fitted it to the demos
    assert torch.allclose(state["actor"]["log_std"], torch.full((4,), -0.5), atol=0.05)


def test_resume_does_not_pretrain_again(tmp_path):
    demo_path = constant_action_demos(tmp_path / "demos.zarr")
    cfg = _with_pretrain(tiny_dapg(tmp_path, demo_path, dapg_lambda=0.0), 200, total_env_steps=80,
                         run_dir=str(tmp_path / "r"), checkpoint_every_steps=40)
    first = train_dapg(cfg.model_copy(update={"run": cfg.run.model_copy(update={"total_env_steps": 40})}))
    resumed = train_dapg(cfg.model_copy(update={"run": cfg.run.model_copy(update={"resume_from": first.final_checkpoint})}))
    assert resumed.env_steps == 80
    records = read_jsonl_metrics(tmp_path / "r" / "metrics.jsonl")
    assert sum("bc_pretrain/steps" in r["metrics"] for r in records) == 1
