"""BC end to end on fake-env expert datasets (train -> checkpoint -> evaluate), the CLI, configs, idempotency."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from ms2core.algos import bc
from ms2core.config import load_config
from ms2core.data import DemoBatch
from ms2core.errors import ConfigError
from ms2core.evaluation import evaluate
from ms2core.algos._common import resolve_device
from ms2core.nn import build_policy
from storage_schemas.training import BCConfig, EvalConfig, NetConfig
from tests.zarr_fixtures import fake_pointcloud_obs, write_demo_zarr, write_fake_expert_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def expert_state_dataset(tmp_path_factory):
    return write_fake_expert_dataset(tmp_path_factory.mktemp("data") / "expert.zarr", num_episodes=200)


def state_cfg(tmp_path, dataset, steps, **extra):
    return BCConfig.model_validate(dict(
        env=dict(backend="fake", max_episode_steps=30), dataset=dict(paths=[str(dataset)]),
        train=dict(num_steps=steps, batch_size=64, lr=1e-3, log_every_steps=50, checkpoint_every_steps=1000),
        run={"device": "cpu", "torch_threads": 1, "run_dir": str(tmp_path / "run"), **extra},
    ))


def test_bc_loss_is_mse_for_deterministic_heads_and_nll_for_gaussian():
    batch = DemoBatch({"state": torch.randn(8, 4)}, torch.rand(8, 2) * 2 - 1)
    det = build_policy(NetConfig(), "state", {"state": (4,)}, 2)
    loss = bc.bc_loss(det, batch)
    expected = ((det(batch.obs) - batch.actions) ** 2).mean()
    torch.testing.assert_close(loss.loss, expected)
    gauss = build_policy(NetConfig(head="gaussian"), "state", {"state": (4,)}, 2)
    nll = bc.bc_loss(gauss, batch)
    torch.testing.assert_close(nll.loss, -gauss(batch.obs).log_prob(batch.actions).mean())


def test_standardized_action_loss_weights_each_dimension_by_inverse_variance():
    weights = bc.action_loss_weights(np.array([0.1, 1.0, 0.0]))
    # 1/var = [100, 1, 1e6 (floored std 1e-3)], rescaled to mean 1.
    raw = np.array([100.0, 1.0, 1e6])
    torch.testing.assert_close(weights, torch.tensor(raw / raw.mean(), dtype=torch.float32))
    batch = DemoBatch({"state": torch.randn(8, 4)}, torch.rand(8, 3) * 2 - 1)
    det = build_policy(NetConfig(), "state", {"state": (4,)}, 3)
    loss = bc.bc_loss(det, batch, weights)
    squared = (det(batch.obs) - batch.actions) ** 2
    torch.testing.assert_close(loss.loss, (squared * weights).mean())
    torch.testing.assert_close(loss.action_mse, squared.mean().detach())  # logged MSE stays unweighted


def test_standardized_action_loss_trains_and_rejects_gaussian_heads(tmp_path, expert_state_dataset):
    result = bc.train(state_cfg(tmp_path, expert_state_dataset, 20, run_name="std")
                      .model_copy(update={"train": state_cfg(tmp_path, expert_state_dataset, 20).train.model_copy(
                          update={"standardize_action_loss": True})}), progress=False)
    assert result.updates == 20 and result.env_steps is None and np.isfinite(result.final_loss)
    cfg = BCConfig.model_validate({**state_cfg(tmp_path, expert_state_dataset, 5).model_dump(),
                                   "net": {"head": "gaussian"},
                                   "train": {**state_cfg(tmp_path, expert_state_dataset, 5).train.model_dump(),
                                             "standardize_action_loss": True}})
    with pytest.raises(ConfigError, match="standardize_action_loss"):
        bc.train(cfg, progress=False)


@pytest.fixture(scope="module")
def trained_state_run(tmp_path_factory, expert_state_dataset):
    return bc.train(state_cfg(tmp_path_factory.mktemp("trained"), expert_state_dataset, 400), progress=False)


def test_bc_learns_the_fake_expert_to_high_success(tmp_path, expert_state_dataset, trained_state_run):
    result = trained_state_run
    assert result.losses[-1] < 0.1 * result.losses[0]
    trained = evaluate(EvalConfig(checkpoint=result.final_checkpoint, num_episodes=20), progress=False)
    assert trained.success_once.mean >= 0.9
    # control: the same network after one update does not solve the task
    barely = bc.train(state_cfg(tmp_path / "b", expert_state_dataset, 1), progress=False)
    untrained = evaluate(EvalConfig(checkpoint=barely.final_checkpoint, num_episodes=20), progress=False)
    assert untrained.success_once.mean <= 0.5
    assert (Path(result.run_dir) / "config.yaml").exists()
    saved = yaml.safe_load((Path(result.run_dir) / "config.yaml").read_text())
    assert saved["train"]["num_steps"] == 400 and saved["dataset"]["paths"] == [str(expert_state_dataset)]


def pointcloud_processor(raw):
    return fake_pointcloud_obs(raw, n_points=32)


def test_pointnet_bc_runs_end_to_end_on_cpu(tmp_path):
    dataset = write_fake_expert_dataset(tmp_path / "pc.zarr", num_episodes=100, obs_mode="pointcloud", n_points=32)
    cfg = BCConfig.model_validate(dict(
        env=dict(obs_mode="pointcloud", backend="fake", max_episode_steps=20), dataset=dict(paths=[str(dataset)]),
        net=dict(pointnet_point_mlp=[16, 32], hidden_sizes=[64, 64]),
        train=dict(num_steps=300, batch_size=32, lr=1e-3, log_every_steps=100),
        run=dict(device="cpu", torch_threads=1, run_dir=str(tmp_path / "run")),
    ))
    result = bc.train(cfg, progress=False)
    assert np.isfinite(result.final_loss) and len(result.losses) == 300
    policy, ckpt = bc.load_policy(result.final_checkpoint)
    assert type(policy.encoder).__name__ == "PointNetEncoder" and ckpt["extra"]["obs_shapes"]["xyz"] == [32, 3]
    ev = evaluate(EvalConfig(checkpoint=result.final_checkpoint, num_episodes=10), obs_processor=pointcloud_processor,
                  progress=False)
    # ManiSkill2 (and the fake env) terminate at success: an episode is 20 steps or ends in success
    assert ev.obs_mode == "pointcloud" and all(e.length == 20 or e.success_at_end for e in ev.episodes)
    assert ev.success_once.mean >= 0.7


def write_rgbd_dataset(path):
    rng = np.random.default_rng(0)
    eps = [dict(obs={"rgb": rng.integers(0, 255, (6, 48, 48, 6), dtype=np.uint8),
                     "depth": rng.uniform(0, 2, (6, 48, 48, 2)).astype(np.float32),
                     "state": rng.normal(size=(6, 9)).astype(np.float32)},
                actions=rng.uniform(-1, 1, (6, 7)), rewards=np.zeros(6), success=np.zeros(6))
           for _ in range(3)]
    return write_demo_zarr(path, eps, "rgbd")


@pytest.mark.parametrize("name", ["pickcube_state", "pickcube_pointcloud", "pickcube_rgbd"])
def test_every_example_config_trains_with_tiny_overrides(tmp_path, name):
    obs = name.split("_")[1]
    if obs == "rgbd":
        dataset = write_rgbd_dataset(tmp_path / "d.zarr")
    else:
        dataset = write_fake_expert_dataset(tmp_path / "d.zarr", 3, obs_mode=obs, n_points=16)
    cfg = load_config(BCConfig, REPO / "configs" / "bc" / f"{name}.yaml", [
        f"dataset.paths=[{dataset}]", "train.num_steps=3", "train.batch_size=4", "run.device=cpu", "run.torch_threads=1",
        "run.eval_episodes=0", f"run.run_dir={tmp_path / 'run'}", "env.backend=fake",
    ])
    result = bc.train(cfg, progress=False)
    assert result.updates == 3 and Path(result.final_checkpoint).exists()


@pytest.fixture(scope="module")
def validated_state_store(tmp_path_factory):
    """A store made and validated by the real writers (pipelines.train refuses unvalidated ones)."""
    from tests.train_fixtures import build_validated_store

    return build_validated_store(tmp_path_factory.mktemp("ms2data"), "state", num_episodes=4)


def test_train_stage_is_idempotent(tmp_path, validated_state_store, monkeypatch):
    from pipelines import train as stage

    cfg = state_cfg(tmp_path, validated_state_store, 5)
    first = stage.run(cfg, progress=False)
    assert not first.skipped

    def must_not_train(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(bc, "train", must_not_train)
    again = stage.run(cfg, progress=False)
    assert again.skipped and again.final_checkpoint == first.final_checkpoint
    with pytest.raises(ConfigError, match="unknown algorithm 'bcc'"):
        stage.run(cfg, algo="bcc")


def test_config_errors_name_key_and_allowed_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  num_step: 5\n")
    with pytest.raises(ConfigError, match="num_step"):
        load_config(BCConfig, path)
    with pytest.raises(ConfigError, match="precision"):
        load_config(BCConfig, None, ["train.precision=fp8"])
    with pytest.raises(ConfigError, match="did you mean batch_size"):
        load_config(BCConfig, None, ["train.batchsize=5"])
    with pytest.raises(ConfigError, match="gpu"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    # the keys BC had before the shared run/net sections are refused, naming the new key
    with pytest.raises(ConfigError, match="train.device is now run.device") as info:
        load_config(BCConfig, None, ["train.device=cpu"])
    assert "write run.device instead of train.device" in info.value.hint
    old = tmp_path / "old.yaml"
    old.write_text("network: {kind: mlp, mlp_hidden: [8]}\ntrain: {seed: 1}\neval_episodes: 3\n")
    with pytest.raises(ConfigError, match="network.mlp_hidden is now net.hidden_sizes") as info:
        load_config(BCConfig, old)
    for renamed in ("network.kind is now net.backbone", "train.seed is now run.seed",
                    "eval_episodes is now run.eval_episodes", str(old)):
        assert renamed in info.value.message


def test_cli_train(tmp_path, validated_state_store):
    from flows.cli import app

    res = CliRunner().invoke(app, [
        "train", "bc", "--config", str(REPO / "configs/bc/pickcube_state.yaml"),
        "--set", f"dataset.paths=[{validated_state_store}]", "--set", "train.num_steps=20",
        "--set", "train.log_every_steps=10", "--set", "run.eval_episodes=0",
        "--set", "env.backend=fake", "--set", f"run.run_dir={tmp_path / 'run'}", "--set", "run.torch_threads=1", "--device", "cpu",
    ])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "checkpoints" / "final.pt").exists() and "updates/s" in res.output
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_cli_evaluate_with_two_worker_processes(tmp_path, trained_state_run):
    from flows.cli import app
    from storage_schemas.training import EvaluationResult

    res = CliRunner().invoke(app, ["evaluate", "--checkpoint", trained_state_run.final_checkpoint, "--num", "4",
                                   "--num-procs", "2", "--seed", "10", "--output-dir", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    result = EvaluationResult.model_validate_json((tmp_path / "eval" / "result.json").read_text())
    assert [e.seed for e in result.episodes] == list(range(10, 14))
    assert result.success_once.mean >= 0.75 and "success_once" in res.output


def test_cli_errors_exit_2(tmp_path):
    import subprocess
    import sys

    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "flows.cli", "train", "bc", "--set", "train.lr=-1"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2 and "train.lr" in out.stderr
    out = subprocess.run([sys.executable, "-m", "flows.cli", "evaluate", "--checkpoint", str(tmp_path / "x.pt")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_a_policys_successful_evaluation_episodes_become_a_demo_pair(tmp_path, trained_state_run):
    """`ms2 evaluate --save-traj` then `ms2 demos merge --successful-only`: the policy's own successes as demos
    (the README's BC-from-PPO-demos row); a 2-step limit fails the fake expert's 3-step episodes."""
    import h5py
    from typer.testing import CliRunner

    from flows.cli import app
    from ms2core.errors import DemoFileError
    from ms2core.trajectory import DemoPair
    from pipelines import demos
    from storage_schemas.demos import MergeDemosConfig

    ev = evaluate(EvalConfig(checkpoint=trained_state_run.final_checkpoint, num_episodes=10, max_episode_steps=2,
                             save_traj=True, output_dir=str(tmp_path / "eval")), progress=False)
    succeeded = [e.seed for e in ev.episodes if e.success_at_end]
    assert 0 < len(succeeded) < 10  # both kinds, or the filter is not tested
    out = tmp_path / "ppo_demos"
    res = CliRunner().invoke(app, ["demos", "merge", ev.trajectory_path, "-o", str(out), "--successful-only"])
    assert res.exit_code == 0, res.output
    assert f"{10 - len(succeeded)} unsuccessful left out" in res.output
    with DemoPair(str(out) + ".h5") as pair, DemoPair(ev.trajectory_path) as source:
        assert [m.seed for m in pair.episodes] == succeeded
        assert [m.episode_id for m in pair.episodes] == list(range(len(succeeded)))
        assert all(m.info["success"] for m in pair.episodes)
        first = next(i for i, m in enumerate(source.episodes) if m.seed == succeeded[0])
        np.testing.assert_array_equal(pair.read_episode(0).actions, source.read_episode(first).actions)
    everything = demos.merge(MergeDemosConfig(inputs=[ev.trajectory_path], output=str(tmp_path / "all")))
    assert everything.num_episodes == 10 and everything.dropped_unsuccessful == 0
    # an episode whose json says nothing about success is an error, not a failure; no output
    source_json = json.loads(Path(ev.trajectory_path).with_suffix(".json").read_text())
    del source_json["episodes"][0]["info"]["success"]
    bad = tmp_path / "bad"
    with h5py.File(str(bad) + ".h5", "w") as dst, h5py.File(ev.trajectory_path) as src:
        for key in src:
            src.copy(key, dst)
    Path(str(bad) + ".json").write_text(json.dumps(source_json))
    with pytest.raises(DemoFileError, match=r"bad\.json episode 0: info has no boolean 'success'"):
        demos.merge(MergeDemosConfig(inputs=[str(bad) + ".h5"], output=str(tmp_path / "m"), successful_only=True))
    assert not (tmp_path / "m.h5").exists()
