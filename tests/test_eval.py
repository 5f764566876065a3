"""Evaluation on the fake env: statistics, seeds, success at end vs once, trajectories, videos, idempotency."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ms2core.checkpoint import save_checkpoint
from ms2core.errors import CheckpointError, ConfigError
from ms2core.evaluation import (
    ManifestObsProcessor, evaluate, mean_ci95, rate_ci95, run_episode, state_obs_processor,
)
from ms2core.envs import make_env
from ms2core.nn import build_policy
from ms2core.trajectory import DemoPair
from storage_schemas.training import BCConfig, EvalConfig, NetConfig
from tests.zarr_fixtures import expert_action


def make_checkpoint(path, head="deterministic", max_steps=8):
    cfg = BCConfig.model_validate(dict(env=dict(backend="fake", max_episode_steps=max_steps),
                                       net=dict(head=head, hidden_sizes=[16])))
    torch.manual_seed(0)
    policy = build_policy(cfg.net, "state", {"state": (51,)}, 7)
    extra = {"algo": "bc", "obs_mode": "state", "obs_shapes": {"state": [51]}, "action_dim": 7, "dataset_manifest": {}}
    return save_checkpoint(path, model=policy, optimizer=None, step=3, config=cfg.model_dump(mode="json"), extra=extra)


def test_rate_ci95_is_wilson():
    stat = rate_ci95([1] * 8 + [0] * 2)
    # Wilson interval for 8/10 at z=1.96, computed by hand: centre 0.7198, half-width 0.2288
    assert stat.mean == 0.8
    assert stat.ci95_low == pytest.approx(0.4902, abs=1e-3) and stat.ci95_high == pytest.approx(0.9433, abs=1e-3)
    assert rate_ci95([1, 1, 1]).ci95_high == 1.0 and rate_ci95([0, 0]).ci95_low == 0.0


def test_mean_ci95_is_normal_approximation():
    stat = mean_ci95([1.0, 2.0, 3.0, 4.0])
    half = 1.96 * np.std([1, 2, 3, 4], ddof=1) / 2
    assert stat.mean == 2.5 and stat.ci95_low == pytest.approx(2.5 - half) and stat.ci95_high == pytest.approx(2.5 + half)
    assert mean_ci95([5.0]).ci95_low == 5.0


def test_state_obs_processor():
    out = state_obs_processor(np.arange(4, dtype=np.float64))
    assert out["state"].dtype == np.float32 and out["state"].tolist() == [0, 1, 2, 3]


class ScriptedPolicy:
    """Goes to the goal (success), then walks away: success once but not at the end."""

    def __init__(self, env, away_after):
        self.env, self.away_after, self.t = env, away_after, 0

    def act(self, obs, sample_mode, generator):
        self.t += 1
        action = expert_action(self.env, 7)
        if self.t > self.away_after:
            action[:3] = np.array([1.0, 1.0, 1.0])
        return torch.from_numpy(action)[None]


def test_success_once_vs_success_at_end_and_trajectory_arrays():
    env = make_env("PickCube-v0", "state", backend="fake", max_episode_steps=12)
    # the env terminates at success (ManiSkill2); success once vs at end differ only when the episode goes on
    result, traj = run_episode(env, ScriptedPolicy(env, away_after=8), state_obs_processor, seed=3,
                               continue_after_success=True, record_trajectory=True)
    assert result.success_once and not result.success_at_end and result.length == 12
    assert traj["actions"].shape == (12, 7) and traj["env_states"].shape == (13, 10) and traj["success"].any()
    assert result.episode_return > 0


def test_evaluate_fields_seeds_trajectories_and_videos(tmp_path):
    ckpt = make_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")
    cfg = EvalConfig(checkpoint=str(ckpt), num_episodes=3, num_procs=2, seed=5, save_traj=True, save_video=True)
    result = evaluate(cfg, progress=False)
    out = tmp_path / "run" / "eval" / "final_seed5_mean_n3"
    assert (out / "result.json").exists()
    assert result.env_id == "PickCube-v0" and result.checkpoint_step == 3 and result.num_episodes == 3
    assert [e.seed for e in result.episodes] == [5, 6, 7]
    assert all(e.length == 8 for e in result.episodes) and result.episode_length.mean == 8
    assert 0 <= result.success_once.ci95_low <= result.success_once.mean <= result.success_once.ci95_high <= 1
    with DemoPair(result.trajectory_path) as pair:
        assert len(pair) == 3 and pair.env_info.env_id == "PickCube-v0"
        ep = pair.read_episode(1)
        assert ep.meta.reset_kwargs == {"seed": 6} and ep.actions.shape == (8, 7) and ep.env_states.shape == (9, 10)
    # the saved states replay: resetting with the recorded seed gives the first state
    env = make_env("PickCube-v0", "state", backend="fake")
    env.reset(seed=6)
    np.testing.assert_allclose(env.unwrapped.get_state(), ep.env_states[0], rtol=1e-6)
    import imageio.v3 as iio

    for e in result.episodes:
        frames = iio.imread(e.video)
        assert frames.shape[0] == e.length + 1 and frames.shape[-1] == 3


def test_sample_mode_is_reproducible_per_seed(tmp_path):
    ckpt = make_checkpoint(tmp_path / "c.pt", head="gaussian")
    runs = [evaluate(EvalConfig(checkpoint=str(ckpt), num_episodes=2, sample_mode=mode, output_dir=str(tmp_path / f"{mode}{i}")),
                     progress=False) for mode in ("sample", "mean") for i in range(2)]
    returns = [[e.episode_return for e in r.episodes] for r in runs]
    assert returns[0] == returns[1] and returns[2] == returns[3] and returns[0] != returns[2]


def test_evaluate_stage_is_idempotent(tmp_path, monkeypatch):
    from pipelines import evaluate as stage

    ckpt = make_checkpoint(tmp_path / "c.pt")
    cfg = EvalConfig(checkpoint=str(ckpt), num_episodes=2, output_dir=str(tmp_path / "e"))
    first = stage.run(cfg, progress=False)

    def must_not_run(*a, **k):
        raise AssertionError("evaluated again")

    import ms2core.evaluation as core

    monkeypatch.setattr(core, "evaluate", must_not_run)  # the stage's reuse check lives beside evaluate
    assert stage.run(cfg, progress=False) == first
    with pytest.raises(AssertionError):
        stage.run(cfg.model_copy(update={"seed": 1}), progress=False)


def test_bad_inputs(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate(EvalConfig(checkpoint=str(tmp_path / "none.pt"), num_episodes=1), progress=False)
    from ms2core.config import load_config

    with pytest.raises(ConfigError, match="sample_mode"):
        load_config(EvalConfig, None, ["sample_mode=greedy"])
    with pytest.raises(ConfigError, match="num_episodes"):
        load_config(EvalConfig, None, ["num_episodes=0"])


def test_pointcloud_eval_uses_the_datasets_processing_options_on_fake_env():
    from storage_schemas.dataset import DatasetManifest, ObsProcessConfig, RenderOptions, SourceInfo

    manifest = DatasetManifest(
        dataset_version="v", versions={}, options=RenderOptions(obs=ObsProcessConfig(obs_mode="pointcloud", n_points=64)),
        source=SourceInfo(path="x.h5", digest="d", env_id="PickCube-v0", control_mode="pd_ee_delta_pose",
                          n_episodes=1, replay="env_states"),
    ).model_dump(mode="json")
    env = make_env("PickCube-v0", "pointcloud", backend="fake", n_points=512)
    raw, _ = env.reset(seed=0)
    out = ManifestObsProcessor(manifest)(raw)
    assert {"xyz", "rgb", "state"} <= set(out)
    assert out["xyz"].shape == (64, 3) and out["rgb"].shape == (64, 3)
    with pytest.raises(ConfigError, match="observation-processing options"):
        ManifestObsProcessor({})(raw)

def test_max_videos_records_only_the_first_episodes(tmp_path):
    ckpt = make_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")
    cfg = EvalConfig(checkpoint=str(ckpt), num_episodes=3, num_procs=1, save_video=True, max_videos=1)
    result = evaluate(cfg, progress=False)
    assert result.episodes[0].video and Path(result.episodes[0].video).exists()
    assert [e.video for e in result.episodes[1:]] == [None, None]
    assert evaluate(cfg, progress=False).episodes[0].video == result.episodes[0].video  # reused as it is
