"""Evaluate a (random-init) BC checkpoint on the real PickCube-v0 for a few state episodes with 2 worker processes."""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.sim


def test_evaluate_pickcube_state_checkpoint_with_two_workers(tmp_path):
    from ms2core.checkpoint import save_checkpoint
    from ms2core.envs import make_env
    from ms2core.evaluation import evaluate
    from ms2core.nn import build_policy
    from ms2core.trajectory import DemoPair
    from storage_schemas.training import BCConfig, EvalConfig

    env = make_env("PickCube-v0", "state", "pd_ee_delta_pose")
    raw, _ = env.reset(seed=101)
    first_state = env.unwrapped.get_state()
    state_dim, action_dim = raw.shape[0], env.action_space.shape[0]
    env.close()

    cfg = BCConfig.model_validate(dict(env=dict(env_id="PickCube-v0", obs_mode="state", control_mode="pd_ee_delta_pose"),
                                       net=dict(hidden_sizes=[64, 64])))
    torch.manual_seed(0)
    policy = build_policy(cfg.net, "state", {"state": (state_dim,)}, action_dim)
    extra = {"algo": "bc", "obs_mode": "state", "obs_shapes": {"state": [state_dim]}, "action_dim": action_dim,
             "dataset_manifest": {}}
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt", model=policy, optimizer=None, step=0,
                           config=cfg.model_dump(mode="json"), extra=extra)

    result = evaluate(EvalConfig(checkpoint=str(ckpt), num_episodes=3, num_procs=2, seed=100, max_episode_steps=15,
                                 save_traj=True, save_video=True), progress=False)
    assert result.env_id == "PickCube-v0" and result.obs_mode == "state" and result.num_episodes == 3
    assert [e.seed for e in result.episodes] == [100, 101, 102]
    assert all(e.length == 15 for e in result.episodes)  # a random policy does not succeed early
    assert result.success_once.mean == 0.0 and result.episode_length.mean == 15
    assert np.isfinite(result.episode_return.mean) and result.episode_return.mean > 0  # dense reward
    with DemoPair(result.trajectory_path) as pair:
        assert len(pair) == 3 and pair.meta.control_mode == "pd_ee_delta_pose"
        ep = pair.read_episode(1)
        assert ep.meta.episode_seed == 101 and ep.actions.shape == (15, action_dim)
        np.testing.assert_allclose(ep.env_states[0], first_state, atol=1e-5)
    import imageio.v3 as iio

    frames = iio.imread(result.episodes[0].video)
    assert frames.shape[0] == 16 and frames.shape[-1] == 3 and frames.std() > 1  # the render camera shows a scene
