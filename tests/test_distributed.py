"""Data-parallel learners (ms2core.algos.distributed) on CPU with gloo and 2 processes: the same global batch
gives the same weights as one process (BC on a real store, the PPO update, PPO on the fake env), a DDP
checkpoint resumes in one process and the other way round, removing the gradient sync breaks it, and bad
``run.devices`` are ConfigErrors naming the value (exit 2 through the CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ms2core.algos import bc, distributed
from ms2core.checkpoint import read_checkpoint
from ms2core.config import load_config
from ms2core.errors import ConfigError, TrainingDivergedError
from storage_schemas.rl import NetConfig, PPOConfig, PPOParams
from storage_schemas.training import BCConfig
from tests.zarr_fixtures import write_fake_expert_dataset

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-6


def assert_same_weights(a: dict, b: dict, atol: float = ATOL) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


# --------------------------------------------------------------------------- BC
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_fake_expert_dataset(tmp_path_factory.mktemp("ddp") / "expert.zarr", num_episodes=10)


def bc_cfg(run_dir: Path, store, steps: int = 6, devices=None, **train) -> BCConfig:
    return BCConfig.model_validate(dict(
        env=dict(backend="fake", max_episode_steps=30), dataset=dict(paths=[str(store)], mode="ram"),
        net=dict(hidden_sizes=[32, 32]),
        train={"num_steps": steps, "batch_size": 32, "lr": 1e-3, "log_every_steps": 1, "checkpoint_every_steps": 3,
               "state_noise_std": 0.1, "grad_clip_norm": 1.0, **train},
        run=dict(device="cpu", torch_threads=1, run_dir=str(run_dir), devices=devices, ddp_timeout_s=120)))


def model(path) -> dict:
    return read_checkpoint(path)["model"]


def test_bc_two_learners_match_one_process_and_resume_across_learner_counts(tmp_path, store):
    """The global batch is split, not multiplied: 2 learners = 1 process after 6 steps (losses too), a 2-learner
    checkpoint continues in 1 process, and a 1-process checkpoint on 2 learners, to the same weights."""
    one = bc.train(bc_cfg(tmp_path / "one", store), progress=False)
    two = bc.train(bc_cfg(tmp_path / "two", store, devices=2), progress=False)
    assert_same_weights(model(two.final_checkpoint), model(one.final_checkpoint))
    np.testing.assert_allclose(two.losses, one.losses, atol=ATOL)
    ckpt_two = Path(two.run_dir) / "checkpoints" / "ckpt_00000003.pt"
    assert sorted(p.name for p in ckpt_two.parent.iterdir()) == ["ckpt_00000003.pt", "ckpt_00000006.pt", "final.pt"]
    assert read_checkpoint(ckpt_two)["config"]["run"]["devices"] == 2  # the one format, written once by rank 0

    to_one = bc.train(bc_cfg(tmp_path / "two_to_one", store), resume_from=ckpt_two, progress=False)
    assert to_one.start_update == 3
    assert_same_weights(model(to_one.final_checkpoint), model(one.final_checkpoint))
    ckpt_one = Path(one.run_dir) / "checkpoints" / "ckpt_00000003.pt"
    to_two = bc.train(bc_cfg(tmp_path / "one_to_two", store, devices=["cpu", "cpu"]),
                      resume_from=ckpt_one, progress=False)
    assert to_two.start_update == 3
    assert_same_weights(model(to_two.final_checkpoint), model(one.final_checkpoint))


def test_bc_batch_that_does_not_split_is_refused_before_any_learner_starts(tmp_path, store):
    with pytest.raises(ConfigError, match=r"train.batch_size=33 does not split over 2 learners"):
        bc.train(bc_cfg(tmp_path / "r", store, devices=2, batch_size=33), progress=False)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- the PPO update
def _rollout(T=10, N=4, seed=0):
    from ms2core.algos.ppo import Rollout

    rng = np.random.default_rng(seed)
    return Rollout(obs={"state": rng.normal(size=(T, N, 4)).astype(np.float32)},
                   actions=rng.normal(size=(T, N, 2)).astype(np.float32),
                   log_probs=np.zeros((T, N), np.float32), values=np.zeros((T, N), np.float32),
                   next_values=np.zeros((T, N), np.float32), rewards=rng.normal(size=(T, N)).astype(np.float32),
                   terminated=np.zeros((T, N), bool), dones=rng.random((T, N)) < 0.1)


def ppo_updates(cfg, learners=None, *, sync: bool = True, out_dir: str | None = None, updates: int = 3) -> dict:
    """Three PPO updates (the first with critic warm-up) on a fixed rollout; the actor's and critic's weights.
    A test entry for distributed.launch: every rank writes its weights to out_dir/rank<r>.pt."""
    from ms2core.algos.ppo import build_actor_critic, ppo_update, unique_parameters
    from ms2core.nn.heads import gaussian_log_prob

    torch.manual_seed(0)
    torch.set_num_threads(1)
    actor, critic = build_actor_critic({"state": 4}, 2, NetConfig(hidden_sizes=[8]))
    optimizer = torch.optim.Adam(unique_parameters(actor, critic), lr=1e-3)
    if learners is not None and not sync:
        learners.sync_gradients = lambda parameters: None  # each rank steps on its own shard only
    generator = np.random.default_rng(0)
    stats = []
    for k in range(updates):
        rollout = _rollout(seed=k)
        with torch.no_grad():  # the behaviour policy's log-probs, as collect_rollout records them
            obs = {"state": torch.as_tensor(rollout.obs["state"]).reshape(-1, 4)}
            log_probs = gaussian_log_prob(torch.as_tensor(rollout.actions).reshape(-1, 2), *actor(obs))
            rollout.log_probs = log_probs.reshape(rollout.log_probs.shape).numpy()
        stats.append(ppo_update(actor, critic, optimizer, rollout, cfg.ppo, torch.device("cpu"), k, generator,
                                learners=learners))
    out = {**{f"actor.{k}": v for k, v in actor.state_dict().items()},
           **{f"critic.{k}": v for k, v in critic.state_dict().items()},
           "early_stopped": torch.tensor([s["early_stopped"] for s in stats])}
    if out_dir is not None:
        torch.save(out, Path(out_dir) / f"rank{learners.rank if learners else 0}.pt")
    return out


def update_cfg(**ppo) -> PPOConfig:
    params = {"minibatch_size": 10, "num_epochs": 2, "critic_warmup_epochs": 1, "max_kl": None, **ppo}
    return PPOConfig.model_validate(dict(ppo=params, run=dict(devices=2, ddp_timeout_s=120)))


def test_ppo_update_on_two_learners_matches_one_process_and_needs_the_gradient_sync(tmp_path):
    cfg = update_cfg()
    one = ppo_updates(cfg)
    (tmp_path / "sync").mkdir()
    two = distributed.launch(ppo_updates, cfg, out_dir=str(tmp_path / "sync"))
    assert_same_weights(two, one)
    assert_same_weights(torch.load(tmp_path / "sync" / "rank1.pt"), one)
    # without the all-reduce each rank follows the gradient of its own half-minibatch: the ranks drift apart
    (tmp_path / "nosync").mkdir()
    distributed.launch(ppo_updates, cfg, sync=False, out_dir=str(tmp_path / "nosync"))
    rank0, rank1 = (torch.load(tmp_path / "nosync" / f"rank{r}.pt") for r in (0, 1))
    assert max((rank0[k] - rank1[k]).abs().max().item() for k in rank0) > 1e-4
    assert max((rank0[k] - one[k]).abs().max().item() for k in rank0) > 1e-4


def test_the_kl_early_stop_is_decided_once_for_all_learners(tmp_path):
    """A max_kl between the two half-minibatches' KLs would stop one rank and not the other without the
    all-reduce (a hang); with it both stop where one process stops."""
    cfg = update_cfg(max_kl=1e-3, num_epochs=4, lr=3e-3)
    one = ppo_updates(cfg)
    assert one["early_stopped"].tolist() == [1.0, 1.0, 1.0]
    assert_same_weights(distributed.launch(ppo_updates, cfg), one)


# --------------------------------------------------------------------------- PPO on the fake env
FAKE_ENV = dict(env=dict(env_id="PickCube-v0", backend="fake", control_mode="pd_ee_delta_pos", max_episode_steps=20),
                num_envs=2, num_procs=0)


def tiny_ppo(run_dir: Path, **run) -> PPOConfig:
    return PPOConfig.model_validate(dict(
        rollout=FAKE_ENV, net=dict(hidden_sizes=[16]),
        ppo=dict(rollout_steps=40, minibatch_size=20, num_epochs=2, critic_warmup_epochs=1),
        run={"total_env_steps": 80, "log_every_steps": 40, "run_dir": str(run_dir), "torch_threads": 1,
             "ddp_timeout_s": 120, **run}))


def test_train_ppo_two_learners_match_one_process_and_resume_in_one(tmp_path):
    from ms2core.algos.ppo import train_ppo
    from ms2core.metrics import read_jsonl_metrics

    one = train_ppo(tiny_ppo(tmp_path / "one"))
    two = train_ppo(tiny_ppo(tmp_path / "two", devices=2))
    a, b = read_checkpoint(one.final_checkpoint), read_checkpoint(two.final_checkpoint)
    assert (b["env_steps"], b["updates"], b["episodes"]) == (a["env_steps"], a["updates"], a["episodes"]) == (80, 2, 4)
    assert_same_weights(b["actor"], a["actor"]), assert_same_weights(b["critic"], a["critic"])
    assert len(read_jsonl_metrics(tmp_path / "two" / "metrics.jsonl")) == 2  # rank 0 logs, once per interval
    # a resumed PPO run restarts its envs, so it continues like the 1-process run's checkpoint does
    from_two = train_ppo(tiny_ppo(tmp_path / "from_two", resume_from=two.final_checkpoint, total_env_steps=120))
    from_one = train_ppo(tiny_ppo(tmp_path / "from_one", resume_from=one.final_checkpoint, total_env_steps=120))
    assert from_two.start_update == 2 and from_two.updates == 3
    assert_same_weights(read_checkpoint(from_two.final_checkpoint)["actor"],
                        read_checkpoint(from_one.final_checkpoint)["actor"])


# --------------------------------------------------------------------------- failures
def diverging(cfg, learners=None):
    """A test entry whose rank 1 fails like a NaN loss does, and whose rank 0 then waits for it in a collective."""
    if learners.rank == 1:
        raise TrainingDivergedError("the BC loss is nan at update 3", hint="lower train.lr", step=3)
    learners.mean(torch.zeros(1))


def crashing(cfg, learners=None):
    if learners.rank == 1:
        raise KeyError("boom")
    learners.mean(torch.zeros(1))


def test_a_failed_rank_names_itself_and_its_error_and_leaves_no_process(tmp_path):
    import multiprocessing

    cfg = update_cfg()
    with pytest.raises(TrainingDivergedError, match="learner rank 1 of 2: the BC loss is nan") as info:
        distributed.launch(diverging, cfg)
    assert info.value.step == 3 and info.value.hint == "lower train.lr"
    with pytest.raises(distributed.LearnerRankError, match=r"learner rank 1 of 2 failed: KeyError: 'boom'") as info:
        distributed.launch(crashing, cfg)
    assert "raise KeyError" in info.value.rank_traceback
    assert not multiprocessing.active_children()


def test_devices_form_is_checked_by_the_config_model():
    for bad, message in [("[cpu, 0]", "mixes CPU and CUDA"), ("[0, 0]", "lists a GPU twice"), ("0", ">= 1"),
                         ("[gpu]", "'gpu' is not a learner device"), ("[]", "lists no device")]:
        with pytest.raises(ConfigError, match=message):
            load_config(BCConfig, None, [f"run.devices={bad}"])
    assert load_config(BCConfig, None, ["run.devices=[0, cuda:1]"]).run.devices == [0, "cuda:1"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host without CUDA")
def test_cuda_devices_on_a_cpu_host_are_a_config_error_naming_the_value(tmp_path, store):
    cfg = load_config(BCConfig, None, ["run.devices=[0, 1]"])
    with pytest.raises(ConfigError, match=r"run.devices=\[0, 1\] asks for CUDA learners but CUDA is not available"):
        distributed.learner_devices(cfg.run)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "MS2FLOW_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-m", "flows.cli", "train", "bc", "--devices", "0,1", "--set",
                          f"dataset.paths=[{store}]", "--set", "run.force=true", "--set", "env.backend=fake"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "run.devices=[0, 1]" in out.stderr and "CUDA is not available" in out.stderr
    assert "Traceback" not in out.stderr


def test_sac_refuses_several_learners():
    from ms2core.algos._common import setup_torch

    with pytest.raises(ConfigError, match="this algorithm trains on one learner"):
        setup_torch(load_config(PPOConfig, None, ["run.devices=2"]).run)
