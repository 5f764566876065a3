"""Writes the tiny checkpoints in this directory with the code of ms2flow before issue 17's single checkpoint
format (commit 74f24ae): one of each algorithm on the fake env, a few steps, a few KB each.

    PYTHONPATH=. python tests/data/checkpoints_v1/make_checkpoints.py

tests/test_checkpoint_compat.py loads and evaluates every one of them with today's code: a checkpoint written by
an older ms2flow must keep loading. Do not re-run this script with newer code (that would test nothing); it is
kept to show how the files were made.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ENV = dict(env_id="PickCube-v0", backend="fake", control_mode="pd_ee_delta_pos", max_episode_steps=10)
ROLLOUT = dict(env=ENV, num_envs=2, num_procs=0)


def demo_store(path: Path) -> str:
    from ms2core.algos._demos import write_demo_zarr

    rng = np.random.default_rng(0)
    return write_demo_zarr(path, [{"obs/state": rng.normal(size=(10, 51)).astype(np.float32),
                                   "actions": np.tile([0.5, -0.5, 0.2, 0.0], (10, 1)).astype(np.float32)}
                                  for _ in range(3)])


def main() -> None:
    from ms2core.algos import bc
    from ms2core.algos.dapg import train_dapg
    from ms2core.algos.gail import train_gail
    from ms2core.algos.ppo import train_ppo
    from ms2core.algos.sac import train_sac
    from storage_schemas.rl import DAPGConfig, GAILConfig, PPOConfig, SACConfig
    from storage_schemas.training import BCConfig
    from tests.zarr_fixtures import write_fake_expert_dataset

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    demos = str(demo_store(tmp / "demos.zarr"))
    net = dict(hidden_sizes=[8])
    ppo = dict(rollout_steps=20, minibatch_size=10, critic_warmup_epochs=0)
    sac = dict(learning_starts=10, batch_size=8, buffer_capacity=24)
    run = lambda name: dict(total_env_steps=20, seed=0, run_dir=str(tmp / name))  # noqa: E731
    written = {
        "ppo": train_ppo(PPOConfig.model_validate(dict(rollout=ROLLOUT, net=net, ppo=ppo, run=run("ppo")))).checkpoint,
        "dapg": train_dapg(DAPGConfig.model_validate(dict(
            rollout=ROLLOUT, net=net, ppo=ppo, dapg=dict(demo_batch_size=8), demos=dict(path=demos),
            run=run("dapg")))).checkpoint,
        "sac": train_sac(SACConfig.model_validate(dict(rollout=ROLLOUT, net=net, sac=sac, run=run("sac")))).checkpoint,
        "gail": train_gail(GAILConfig.model_validate(dict(
            rollout=ROLLOUT, net=net, sac=sac, demos=dict(path=demos),
            gail=dict(discriminator_hidden_sizes=[8], discriminator_batch_size=8), run=run("gail")))).checkpoint,
    }
    store = write_fake_expert_dataset(tmp / "expert.zarr", num_episodes=3)
    bc_cfg = BCConfig.model_validate(dict(
        env=dict(backend="fake", max_episode_steps=10), dataset=dict(paths=[str(store)]),
        network=dict(mlp_hidden=[8]),
        train=dict(num_steps=4, batch_size=8, device="cpu", cpu_threads=1, log_every_steps=2,
                   checkpoint_every_steps=2),
        run_dir=str(tmp / "bc")))
    written["bc"] = bc.train(bc_cfg, progress=False).final_checkpoint
    expected = {}
    for algo, path in written.items():
        shutil.copy(path, HERE / f"{algo}.pt")
        expected[algo] = deterministic_actions(HERE / f"{algo}.pt")
        print(algo, (HERE / f"{algo}.pt").stat().st_size, "bytes")
    (HERE / "expected_actions.json").write_text(json.dumps(expected, indent=1))
    shutil.rmtree(tmp)


def probe_obs() -> dict[str, torch.Tensor]:
    """The observation batch the expected actions are computed on (fake env: state of 51 floats)."""
    return {"state": torch.linspace(-2.0, 2.0, 3 * 51).reshape(3, 51)}


def deterministic_actions(path: Path) -> list[list[float]]:
    from ms2core.algos.policies import load_policy

    policy, _ = load_policy(path)
    return policy.act(probe_obs()).tolist()


if __name__ == "__main__":
    main()
