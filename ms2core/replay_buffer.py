"""Replay for off-policy learning (SAC, GAIL): storage, n-step writing and uniform sampling kept apart.

* :class:`ReplayStorage` — a fixed-capacity ring of numpy arrays, one per field,
  allocated from the first transitions it sees (obs entries are dicts of arrays).
* :class:`NStepWriter` — turns per-env step streams into n-step transitions
  ``(s_t, a_t, R_t = sum_{j<k} gamma^j r_{t+j}, s_{t+k}, terminated, discount = gamma^k)``,
  with k = n or shorter where an episode ends first. A truncated episode keeps
  ``terminated = False`` so the target still bootstraps from its final observation.
* :class:`ReplayBuffer` — the two together plus uniform sampling into a :class:`TransitionBatch`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from ms2core.errors import ConfigError


@dataclass
class Transitions:
    """A batch of transitions as numpy arrays (what the writer emits and the storage keeps)."""

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: dict[str, np.ndarray]
    terminated: np.ndarray
    discounts: np.ndarray   # gamma^k of the bootstrap term

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class TransitionBatch:
    """A sampled batch as tensors on the learner's device."""

    obs: dict[str, torch.Tensor]
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: dict[str, torch.Tensor]
    terminated: torch.Tensor   # float 0/1
    discounts: torch.Tensor


class ReplayStorage:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ConfigError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.size = 0
        self.cursor = 0
        self.arrays: dict[str, np.ndarray] | None = None

    @staticmethod
    def _flatten(t: Transitions) -> dict[str, np.ndarray]:
        flat = {f"obs/{k}": v for k, v in t.obs.items()}
        flat.update({f"next_obs/{k}": v for k, v in t.next_obs.items()})
        flat.update(actions=t.actions, rewards=t.rewards, terminated=t.terminated, discounts=t.discounts)
        return flat

    def add(self, t: Transitions) -> None:
        flat = self._flatten(t)
        n = len(t)
        if n == 0:
            return
        if self.arrays is None:
            self.arrays = {k: np.zeros((self.capacity, *v.shape[1:]), v.dtype) for k, v in flat.items()}
        idx = (self.cursor + np.arange(n)) % self.capacity
        for k, v in flat.items():
            self.arrays[k][idx] = v
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def get(self, indices: np.ndarray) -> Transitions:
        a = self.arrays
        pick = lambda prefix: {k[len(prefix):]: v[indices] for k, v in a.items() if k.startswith(prefix)}  # noqa: E731
        return Transitions(pick("obs/"), a["actions"][indices], a["rewards"][indices], pick("next_obs/"),
                           a["terminated"][indices], a["discounts"][indices])

    def state_dict(self) -> dict:
        filled = None if self.arrays is None else {k: v[:self.size].copy() for k, v in self.arrays.items()}
        return {"capacity": self.capacity, "size": self.size, "cursor": self.cursor, "arrays": filled}

    def load_state_dict(self, state: dict) -> None:
        self.capacity, self.size, self.cursor = state["capacity"], state["size"], state["cursor"]
        self.arrays = None
        if state["arrays"] is not None:
            self.arrays = {}
            for k, v in state["arrays"].items():
                full = np.zeros((self.capacity, *v.shape[1:]), v.dtype)
                full[:len(v)] = v
                self.arrays[k] = full


class NStepWriter:
    """Per-env queues of the last n steps; emits n-step transitions, flushing at episode ends."""

    def __init__(self, num_envs: int, n_step: int, gamma: float):
        if n_step < 1:
            raise ConfigError(f"n_step must be >= 1, got {n_step}")
        self.n, self.gamma = n_step, gamma
        self.queues: list[deque] = [deque() for _ in range(num_envs)]

    def _emit(self, queue: deque, next_obs: dict, terminated: bool, out: list) -> None:
        rewards = [q[2] for q in queue]
        ret = sum(self.gamma**j * r for j, r in enumerate(rewards))
        obs, action, _ = queue[0]
        out.append((obs, action, ret, next_obs, terminated, self.gamma ** len(rewards)))

    def push(self, obs: dict[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray,
             next_obs: dict[str, np.ndarray], terminated: np.ndarray, episode_over: np.ndarray) -> Transitions | None:
        """Add one vector step; ``next_obs`` is s_{t+1} of the same episode (final obs where it ended).

        ``terminated``: the env ended the episode (windows through it do not bootstrap); ``episode_over``:
        terminated or truncated (the rollout's ``StepBatch.dones``: the queue is flushed, and truncated
        windows bootstrap from ``next_obs``). Demo datasets store terminated and truncated, never this.
        """
        out: list = []
        for i, queue in enumerate(self.queues):
            queue.append(({k: v[i] for k, v in obs.items()}, actions[i], float(rewards[i])))
            nxt = {k: v[i] for k, v in next_obs.items()}
            if episode_over[i]:
                while queue:
                    self._emit(queue, nxt, bool(terminated[i]), out)
                    queue.popleft()
            elif len(queue) == self.n:
                self._emit(queue, nxt, False, out)
                queue.popleft()
        if not out:
            return None
        return Transitions(
            obs={k: np.stack([o[0][k] for o in out]) for k in obs},
            actions=np.stack([o[1] for o in out]).astype(np.float32),
            rewards=np.array([o[2] for o in out], np.float32),
            next_obs={k: np.stack([o[3][k] for o in out]) for k in next_obs},
            terminated=np.array([o[4] for o in out], bool),
            discounts=np.array([o[5] for o in out], np.float32),
        )


class ReplayBuffer:
    def __init__(self, capacity: int, num_envs: int, gamma: float, n_step: int = 1, seed: int = 0):
        self.storage = ReplayStorage(capacity)
        self.writer = NStepWriter(num_envs, n_step, gamma)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.storage.size

    def add_step(self, obs, actions, rewards, next_obs, terminated, episode_over) -> None:
        t = self.writer.push(obs, actions, rewards, next_obs, terminated, episode_over)
        if t is not None:
            self.storage.add(t)

    def sample_numpy(self, batch_size: int) -> Transitions:
        if self.storage.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return self.storage.get(self.rng.integers(0, self.storage.size, batch_size))

    def sample(self, batch_size: int, device: torch.device | str = "cpu") -> TransitionBatch:
        t = self.sample_numpy(batch_size)
        to = lambda x: torch.as_tensor(x, device=device)  # noqa: E731
        return TransitionBatch({k: to(v) for k, v in t.obs.items()}, to(t.actions), to(t.rewards),
                               {k: to(v) for k, v in t.next_obs.items()}, to(t.terminated.astype(np.float32)),
                               to(t.discounts))

    def state_dict(self) -> dict:
        # Pending n-step queues are dropped: resume restarts episodes, so they could never be completed.
        return {"storage": self.storage.state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.storage.load_state_dict(state["storage"])
        self.rng.bit_generator.state = state["rng"]
