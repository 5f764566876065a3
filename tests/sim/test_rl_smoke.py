"""Every online algorithm runs a few hundred real PickCube-v0 state steps, checkpoints and resumes.

The CI smoke tier: tiny budgets on the real simulator (state observations, so no
rendering), each well under a minute on 2 CPU cores. PPO steps its envs in a
spawned worker process, as training does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ms2core.algos._demos import write_demo_zarr
from ms2core.algos.dapg import train_dapg
from ms2core.algos.gail import train_gail
from ms2core.algos.ppo import train_ppo
from ms2core.algos.sac import train_sac
from ms2core.config import load_config
from ms2core.rollout import EnvFactory, VectorEnv
from storage_schemas.env import EnvConfig
from storage_schemas.rl import DAPGConfig, GAILConfig, PPOConfig, SACConfig

pytestmark = pytest.mark.sim
torch.set_num_threads(1)

ENV_SETS = ["rollout.env.env_id=PickCube-v0", "rollout.env.obs_mode=state", "rollout.env.max_episode_steps=50",
            "rollout.num_envs=2", "rollout.num_procs=0", "net.hidden_sizes=[32,32]", "run.log_every_steps=100",
            "run.eval_episodes=0"]


@pytest.fixture(scope="module")
def real_demos(tmp_path_factory):
    """A few short real-simulator episodes (random actions) in ms2flow's Zarr layout."""
    path = tmp_path_factory.mktemp("demos") / "pickcube_state.zarr"
    env_cfg = EnvConfig(env_id="PickCube-v0", obs_mode="state", control_mode="pd_ee_delta_pose", max_episode_steps=20)
    rng, episodes = np.random.default_rng(0), []
    with VectorEnv(EnvFactory(env_cfg), num_envs=1, seed=7) as vec:
        for _ in range(3):
            obs, states, actions = vec.reset(), [], []
            for _ in range(20):
                a = rng.uniform(-1, 1, (1, vec.action_dim)).astype(np.float32)
                states.append(obs["state"][0]), actions.append(vec.to_env_action(a)[0])
                obs = vec.step(a).obs
            episodes.append({"obs/state": np.stack(states), "actions": np.stack(actions)})
    return write_demo_zarr(path, episodes)


#: the demos here are written by hand (no manifest, never validated): pipelines.train refuses them unless forced
#: (the validation gate itself is tested in tests/test_train_integrity.py)
FORCE_HANDMADE_DEMOS = ["run.force=true"]


def _run_twice(train, model, config, tmp_path, sets, steps, more):
    """`ms2 train <algo>` for ``steps``, then `--resume-from` its checkpoint to ``steps + more``; each under a minute."""
    from typer.testing import CliRunner

    from flows.cli import app
    from ms2core.algos._common import load_checkpoint

    algo = model.model_fields["algo"].default
    runner = CliRunner()

    def cli(total: int, *extra: str):
        args = ["train", algo, "--config", str(config)]
        for item in ENV_SETS + sets + [f"run.total_env_steps={total}", f"run.run_dir={tmp_path / 'run'}"]:
            args += ["--set", item]
        result = runner.invoke(app, args + list(extra), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    out = cli(steps)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert checkpoint.exists(), out
    first = load_checkpoint(checkpoint, algo)
    out = cli(steps + more, "--resume-from", str(checkpoint))
    second = load_checkpoint(checkpoint, algo)
    assert f"{algo} trained" in out and " env steps/s" in out and "0.0 updates/s" not in out
    assert first["env_steps"] >= steps and second["env_steps"] >= steps + more
    assert second["updates"] > first["updates"] and first["episodes"] >= 1


def test_ppo_smoke_with_worker_process(repo_root, tmp_path):
    _run_twice(train_ppo, PPOConfig, repo_root / "configs/ppo/pickcube_state.yaml", tmp_path,
               ["rollout.num_procs=1", "ppo.rollout_steps=100", "ppo.minibatch_size=50", "ppo.critic_warmup_epochs=1"],
               200, 100)
    # the PPO checkpoint evaluates like a BC one: ms2 evaluate --checkpoint on the real simulator
    from typer.testing import CliRunner

    from flows.cli import app

    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--num",
                                      "2", "--max-episode-steps", "20", "--output-dir", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0 and "success_once" in result.output, result.output
    assert (out / "result.json").exists()


def test_sac_smoke(repo_root, tmp_path):
    _run_twice(train_sac, SACConfig, repo_root / "configs/sac/pickcube_state.yaml", tmp_path,
               ["sac.learning_starts=100", "sac.batch_size=32", "sac.buffer_capacity=1000"], 200, 100)


def test_dapg_smoke(repo_root, tmp_path, real_demos):
    _run_twice(train_dapg, DAPGConfig, repo_root / "configs/dapg/pickcube_state.yaml", tmp_path,
               ["ppo.rollout_steps=100", "ppo.minibatch_size=50", "ppo.critic_warmup_epochs=1",
                "dapg.bc_pretrain_steps=50", f"demos.path={real_demos}", *FORCE_HANDMADE_DEMOS], 200, 100)


def test_gail_smoke(repo_root, tmp_path, real_demos):
    _run_twice(train_gail, GAILConfig, repo_root / "configs/gail/pickcube_state.yaml", tmp_path,
               ["sac.learning_starts=100", "sac.batch_size=32", "sac.buffer_capacity=1000",
                "gail.discriminator_batch_size=32", f"demos.path={real_demos}", *FORCE_HANDMADE_DEMOS], 200, 100)
