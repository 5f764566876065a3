"""Discounted returns and generalised advantage estimation (GAE), as pure numpy functions.

Terminated and truncated are different: at a *termination* the episode really
ended and the future is worth 0; at a *truncation* (time limit) it was cut off,
so the value of the final observation is bootstrapped. Both stop the backward
recursion from leaking across the episode boundary.
"""

from __future__ import annotations

import numpy as np


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and value targets for a (T, N) rollout (or (T,)).

    ``values[t]`` = V(s_t); ``next_values[t]`` = V(s_{t+1}) of the *same* episode,
    i.e. the value of the final observation where step t ended the episode (the
    rollout keeps it), and of the next observation otherwise (the last row uses
    the value of the observation after the rollout). ``terminated[t]`` zeroes the
    bootstrap; ``dones[t]`` (terminated or truncated) cuts the GAE recursion.

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
        returns = A + values
    """
    rewards = np.asarray(rewards, np.float64)
    values = np.asarray(values, np.float64)
    next_values = np.asarray(next_values, np.float64)
    not_terminated = 1.0 - np.asarray(terminated, np.float64)
    not_done = 1.0 - np.asarray(dones, np.float64)
    if not (rewards.shape == values.shape == next_values.shape == not_terminated.shape == not_done.shape):
        raise ValueError(
            f"compute_gae needs equal shapes, got rewards {rewards.shape}, values {values.shape}, "
            f"next_values {next_values.shape}, terminated {not_terminated.shape}, dones {not_done.shape}"
        )
    deltas = rewards + gamma * not_terminated * next_values - values
    advantages = np.zeros_like(deltas)
    running = np.zeros_like(deltas[0])
    for t in range(len(deltas) - 1, -1, -1):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
    return advantages.astype(np.float32), (advantages + values).astype(np.float32)


def discounted_returns(rewards: np.ndarray, dones: np.ndarray, gamma: float, bootstrap: np.ndarray | float = 0.0) -> np.ndarray:
    """Monte-Carlo returns G_t = r_t + gamma * (1 - done_t) * G_{t+1}, with G_T = bootstrap."""
    rewards = np.asarray(rewards, np.float64)
    not_done = 1.0 - np.asarray(dones, np.float64)
    out = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0]) + bootstrap
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * not_done[t] * running
        out[t] = running
    return out


class RunningMeanStd:
    """Running mean/variance over a stream of batches (Chan et al. parallel update)."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, np.float64)
        b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = np.asarray(state["mean"]), np.asarray(state["var"]), float(state["count"])


class ReturnNormalizer:
    """Scale rewards by the running std of the discounted return (the usual PPO reward normalisation).

    Dividing by the std of *returns* (not rewards) keeps value targets O(1)
    whatever the reward scale, which is what the critic needs.
    """

    def __init__(self, num_envs: int, gamma: float, epsilon: float = 1e-8):
        self.gamma = gamma
        self.epsilon = epsilon
        self.returns = np.zeros(num_envs, np.float64)
        self.stats = RunningMeanStd()

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + rewards
        self.stats.update(self.returns)
        self.returns = np.where(dones, 0.0, self.returns)
        return (rewards / np.sqrt(self.stats.var + self.epsilon)).astype(np.float32)

    def state_dict(self) -> dict:
        return {"returns": self.returns, "stats": self.stats.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.returns = np.asarray(state["returns"])
        self.stats.load_state_dict(state["stats"])
