"""Rollout: vectorised stepping in-process and in worker processes, auto-reset, final observations, statistics."""

import numpy as np
import pytest
import torch

from ms2core.errors import ConfigError, UnsupportedModeError
from ms2core.rollout import EnvFactory, EpisodeStats, EpisodeSummary, VectorEnv, run_episodes
from storage_schemas.env import EnvConfig

torch.set_num_threads(1)


def fake_factory(max_steps=3, obs_mode="state", control_mode="pd_ee_delta_pos"):
    return EnvFactory(EnvConfig(env_id="PickCube-v0", obs_mode=obs_mode, control_mode=control_mode,
                                max_episode_steps=max_steps, backend="fake"))


@pytest.mark.parametrize("num_procs", [0, 2])
def test_auto_reset_final_obs_and_episode_stats(num_procs):
    with VectorEnv(fake_factory(max_steps=3), num_envs=2, num_procs=num_procs, seed=5) as vec:
        obs = vec.reset()
        assert obs["state"].shape == (2, 51) and obs["state"].dtype == np.float32
        assert vec.action_dim == 4
        rewards = []
        for t in range(3):
            action = np.tile([1.0, 0.0, 0.0, 0.0], (2, 1))  # tcp moves +5 cm in x per step
            batch = vec.step(action)
            rewards.append(batch.rewards)
            if t < 2:
                assert not batch.dones.any() and not batch.episodes
                np.testing.assert_array_equal(batch.obs["state"], batch.next_obs["state"])
            obs_prev = obs
            obs = batch.obs
        # step 3 hit the time limit: truncated, not terminated, and the envs were reset
        assert batch.truncated.all() and not batch.terminated.any()
        # next_obs is the final observation: tcp x moved 3 * 5 cm from its start (qpos[0] carries tcp x)
        start_x = vec_start_x = None
        assert len(batch.episodes) == 2
        for ep in batch.episodes:
            assert ep.length == 3 and ep.success is False
            assert ep.episode_return == pytest.approx(float(sum(r[ep.env_index] for r in rewards)), rel=1e-5)
        assert not np.allclose(batch.obs["state"], batch.next_obs["state"])
        del start_x, vec_start_x, obs_prev


def test_final_obs_is_the_last_step_not_the_reset():
    with VectorEnv(fake_factory(max_steps=2), num_envs=1, seed=0) as vec:
        first = vec.reset()["state"][0]
        vec.step(np.array([[1.0, 0, 0, 0]]))
        batch = vec.step(np.array([[1.0, 0, 0, 0]]))
        # fake state layout: qpos[0:3] = tcp; two steps of +0.05 m in x
        assert batch.next_obs["state"][0, 0] == pytest.approx(first[0] + 0.1, abs=1e-6)
        assert batch.obs["state"][0, 0] != pytest.approx(first[0] + 0.1, abs=1e-6)


def test_episodes_get_distinct_deterministic_seeds():
    def starts(seed):
        with VectorEnv(fake_factory(max_steps=1), num_envs=2, seed=seed) as vec:
            out = [vec.reset()["state"].copy()]
            for _ in range(2):
                out.append(vec.step(np.zeros((2, 4))).obs["state"].copy())
            return np.stack(out)

    a, b = starts(0), starts(0)
    np.testing.assert_array_equal(a, b)  # reproducible
    goals = a[:, :, 32:35].reshape(-1, 3)  # state = qpos 9, qvel 9, base_pose 7, tcp_pose 7, goal_pos 3: goal differs per env and per episode
    assert len(np.unique(goals.round(6), axis=0)) == 6


def test_actions_are_rescaled_to_env_bounds():
    with VectorEnv(EnvFactory(gym_env_id="Pendulum-v1"), num_envs=1) as vec:
        np.testing.assert_allclose(vec.to_env_action(np.array([[1.0], [-1.0], [0.25], [7.0]])), [[2.0], [-2.0], [0.5], [2.0]])
        np.testing.assert_allclose(vec.to_policy_action(np.array([[2.0], [0.5]])), [[1.0], [0.25]])
        assert vec.reset()["state"].shape == (1, 3)
        eps = run_episodes(vec, lambda o: np.zeros((1, 1)), 1)
        assert eps[0].length == 200 and eps[0].success is None


def test_worker_error_is_reported():
    factory = EnvFactory(EnvConfig(env_id="PickCube-v0", backend="fake"), obs_processor=_exploding_processor)
    vec = VectorEnv(factory, num_envs=2, num_procs=1)
    with pytest.raises(RuntimeError, match=r"simulator worker 0 .* failed with KeyError: .*no_such_key"):
        vec.reset()
    assert vec._closed


def _exploding_processor(raw):
    raise KeyError("no_such_key")


def test_wrong_action_shape_is_rejected():
    with VectorEnv(fake_factory(), num_envs=2) as vec:
        vec.reset()
        with pytest.raises(ValueError, match=r"actions of shape \(2, 4\)"):
            vec.step(np.zeros((2, 3)))


def test_bad_arguments():
    with pytest.raises(ConfigError, match="num_procs"):
        VectorEnv(fake_factory(), num_envs=2, num_procs=3)
    with pytest.raises(ConfigError, match="num_envs"):
        VectorEnv(fake_factory(), num_envs=0)
    with pytest.raises(ConfigError, match="gymnasium env id"):
        VectorEnv(EnvFactory(gym_env_id="NoSuchEnv-v9"), num_envs=1)


def test_pointcloud_rollouts_process_like_the_render_stage():
    with VectorEnv(fake_factory(obs_mode="pointcloud"), num_envs=2) as vec:
        obs = vec.reset()
    assert obs["xyz"].shape == (2, 1200, 3) and obs["rgb"].dtype == np.uint8 and obs["state"].ndim == 2


def test_custom_obs_processor_is_used():
    factory = EnvFactory(EnvConfig(env_id="PickCube-v0", obs_mode="pointcloud", backend="fake", max_episode_steps=2),
                         obs_processor=_xyz_mean_processor)
    with VectorEnv(factory, num_envs=2) as vec:
        assert vec.reset()["xyz_mean"].shape == (2, 3)


def _xyz_mean_processor(raw):  # module level: must pickle into spawned workers
    return {"xyz_mean": raw["pointcloud"]["xyzw"][:, :3].mean(0).astype(np.float32)}


def test_episode_summary():
    s = EpisodeSummary.of([EpisodeStats(0, 1.0, 10, True), EpisodeStats(1, 3.0, 20, False)])
    assert (s.episodes, s.mean_return, s.mean_length, s.success_rate) == (2, 2.0, 15.0, 0.5)
    assert np.isnan(EpisodeSummary.of([EpisodeStats(0, 1.0, 5, None)]).success_rate)
    assert EpisodeSummary.of([]).episodes == 0


def test_forkserver_workers():
    with VectorEnv(fake_factory(max_steps=2), num_envs=2, num_procs=2, start_method="forkserver") as vec:
        assert vec.reset()["state"].shape == (2, 51)
        assert len(vec.step(np.zeros((2, 4))).episodes) == 0


def _run_to_goal(continue_after_success: bool, max_steps: int = 40):
    """Drive one fake env to its goal (proportional control on the env's true positions) until the episode ends."""
    from ms2core.rollout import _EnvSlot

    factory = EnvFactory(EnvConfig(env_id="PickCube-v0", control_mode="pd_ee_delta_pos", max_episode_steps=max_steps,
                                   backend="fake"), continue_after_success=continue_after_success)
    slot = _EnvSlot(factory, env_index=0, num_envs=1, seed=3)
    slot.reset()
    steps = []
    try:
        while True:
            env = slot.env.unwrapped
            move = np.clip((env._goal - env._tcp) / 0.05, -1.0, 1.0)
            steps.append(slot.step(np.concatenate([move, [0.0]]).astype(np.float32)))
            if steps[-1].episode is not None:
                return steps
    finally:
        slot.close()


def test_success_ends_the_episode_unless_continue_after_success():
    ended = _run_to_goal(continue_after_success=False)
    assert ended[-1].terminated and not ended[-1].truncated and len(ended) < 40
    assert ended[-1].episode.success is True and ended[-1].episode.length == len(ended)

    went_on = _run_to_goal(continue_after_success=True)
    # the same success happens at the same step, but only the time limit ends the episode
    assert len(went_on) == 40 and went_on[-1].truncated
    assert not any(s.terminated for s in went_on)
    assert went_on[len(ended) - 1].reward == ended[-1].reward  # the success reward was paid at the same step
    assert went_on[-1].episode.success is True and went_on[-1].episode.length == 40


def test_continue_after_success_defaults_by_env_kind():
    from ms2core.rollout import continue_after_success, env_factory_from_config
    from storage_schemas.rl import RolloutConfig

    assert continue_after_success(RolloutConfig(env=EnvConfig(env_id="PickCube-v0", backend="fake")))
    assert not continue_after_success(RolloutConfig(gym_env_id="Pendulum-v1"))
    explicit = RolloutConfig(env=EnvConfig(env_id="PickCube-v0", backend="fake"), continue_after_success=False)
    assert env_factory_from_config(explicit).continue_after_success is False


def test_deterministic_evaluation_ends_episodes_at_success():
    from ms2core.rollout import evaluate_deterministic
    from storage_schemas.rl import RolloutConfig

    cfg = RolloutConfig(env=EnvConfig(env_id="PickCube-v0", control_mode="pd_ee_delta_pos", max_episode_steps=40,
                                      backend="fake"), num_envs=1, continue_after_success=True)

    def act(obs):  # fake state: qpos 9, qvel 9, base_pose 7, tcp_pose 7, goal_pos 3, tcp_to_goal_pos 3, ...
        move = np.clip(obs["state"][:, 35:38] / 0.05, -1.0, 1.0)
        return np.concatenate([move, np.zeros((len(move), 1))], axis=1).astype(np.float32)

    summary = evaluate_deterministic(cfg, act, num_episodes=1, seed=3)
    assert summary.episodes == 1 and summary.success_rate == 1.0 and summary.mean_length < 40


def test_train_episode_steps_cuts_training_episodes_but_not_evaluations():
    from ms2core.rollout import evaluate_deterministic, vector_env_from_config
    from storage_schemas.rl import RolloutConfig

    cfg = RolloutConfig(env=EnvConfig(env_id="PickCube-v0", control_mode="pd_ee_delta_pos", max_episode_steps=12,
                                      backend="fake"), num_envs=2, train_episode_steps=5)
    with vector_env_from_config(cfg, seed=0) as vec:
        vec.reset()
        lengths, truncated = [], []
        for _ in range(10):
            batch = vec.step(np.zeros((2, vec.action_dim), dtype=np.float32))
            lengths += [ep.length for ep in batch.episodes]
            truncated += list(batch.truncated[batch.dones])
    assert lengths == [5, 5, 5, 5] and all(truncated)  # cut at 5: a truncation (bootstrapped), never a termination

    idle = evaluate_deterministic(cfg, lambda obs: np.zeros((len(obs["state"]), 4), np.float32), 2, seed=1)
    assert idle.mean_length == 12  # the task's own limit, not the training horizon
    with pytest.raises(ValueError, match="train_episode_steps"):
        RolloutConfig(gym_env_id="Pendulum-v1", train_episode_steps=5)


def test_evaluation_counts_a_fixed_set_of_episodes_not_the_first_to_finish():
    from ms2core.rollout import evaluate_deterministic
    from storage_schemas.rl import RolloutConfig

    cfg = RolloutConfig(env=EnvConfig(env_id="PickCube-v0", control_mode="pd_ee_delta_pos", max_episode_steps=40,
                                      backend="fake"), num_envs=2)

    def act(obs):  # env 0 heads for the goal (a short, successful episode), env 1 idles until the time limit
        move = np.clip(obs["state"][:, 35:38] / 0.05, -1.0, 1.0)
        move[1:] = 0.0
        return np.concatenate([move, np.zeros((len(move), 1))], axis=1).astype(np.float32)

    summary = evaluate_deterministic(cfg, act, num_episodes=6, seed=3)
    # three episodes of each env: "the first 6 to finish" would be mostly env 0's quick successes
    assert summary.episodes == 6 and summary.success_rate == 0.5
