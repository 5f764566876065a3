"""Demo transitions for the RL algorithms (DAPG's BC term, GAIL's discriminator, SAC's demo buffer), read
through the one store reader ``ms2core.data.store.DatasetStore`` (committed episodes only, chunks verified).

The layout (written by ``pipelines.render``)::

    <store>/data/obs/<key>      (T_total, ...)   processed observation before action t
    <store>/data/actions        (T_total, A)     float32, in the env's action units
    <store>/data/rewards        (T_total,)       float32, env.step's reward for a_t from s_t
    <store>/data/terminated     (T_total,)       bool, env.step said the episode ended: no bootstrap
    <store>/data/truncated      (T_total,)       bool, the episode was cut after this step: bootstrap
    <store>/meta/episode_ends   (E,)             cumulative transition counts, strictly increasing

Only rows inside committed episodes are read (through ``DatasetStore``). ``demo_replay_transitions``
turns demos into n-step replay transitions (a demo buffer for off-policy learners): windows stop at
terminated steps and bootstrap through truncated ones, never at a mere episode end.
``write_demo_zarr`` writes the same layout through the one writer (``write_dataset``) for test fixtures
and benchmarks.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ms2core.errors import DatasetError
from ms2core.replay_buffer import NStepWriter, Transitions


@dataclass
class DemoTransitions:
    obs: dict[str, np.ndarray]   # (T, ...) per key
    actions: np.ndarray          # (T, A) env units
    episode_ends: np.ndarray     # (E,)
    rewards: np.ndarray | None = None      # (T,) float32   (with_returns=True)
    terminated: np.ndarray | None = None   # (T,) bool
    truncated: np.ndarray | None = None    # (T,) bool

    def __len__(self) -> int:
        return len(self.actions)


def load_demo_transitions(path: str | os.PathLike, obs_keys: list[str], max_episodes: int | None = None,
                          with_returns: bool = False, force: bool = False) -> DemoTransitions:
    """Read every committed transition (they fit in memory for state/point-cloud demos of a few thousand episodes).

    Opening and checking the store is ms2core.data's ``open_demo_store`` (DatasetStore underneath).
    ``with_returns`` also reads rewards, terminated and truncated (what bootstrapping needs).
    """
    from ms2core.data.demo_dataset import open_demo_store

    store = open_demo_store(path, force=force)
    ends = store.dataset.episode_ends
    if max_episodes is not None:
        ends = ends[:max_episodes]
    n = int(ends[-1])
    missing = [k for k in obs_keys if f"obs/{k}" not in store.arrays]
    if missing:
        raise DatasetError(f"demo dataset {path} has no {', '.join(f'data/obs/{k}' for k in missing)}",
                           hint=f"it has data/obs/{{{', '.join(store.obs_keys)}}}")
    obs = {k: store.dataset.read(f"obs/{k}", 0, n) for k in obs_keys}
    demos = DemoTransitions(obs, np.asarray(store.dataset.read("actions", 0, n), np.float32), ends)
    if with_returns:
        absent = [k for k in ("rewards", "terminated", "truncated") if k not in store.dataset.arrays]
        if absent:
            raise DatasetError(f"demo dataset {path} has no {', '.join(f'data/{k}' for k in absent)}",
                               hint="bootstrapping from demos needs the simulator's rewards and episode ends; "
                                    "re-render the demos with `ms2 render`")
        demos.rewards = np.asarray(store.dataset.read("rewards", 0, n), np.float32)
        demos.terminated = np.asarray(store.dataset.read("terminated", 0, n), bool)
        demos.truncated = np.asarray(store.dataset.read("truncated", 0, n), bool)
    return demos


def demo_replay_transitions(demos: DemoTransitions, n_step: int, gamma: float) -> Transitions:
    """The demos as n-step replay transitions ``(s_t, a_t, R_t, s_{t+k}, terminated, gamma^k)``, as SAC's writer
    makes them from rollouts (``ms2core.replay_buffer.NStepWriter``):

    * a terminated step (the env ended the episode there, possibly mid-demo) ends every window through it
      with terminated = True: no bootstrap past it;
    * a truncated last step t = T-1 (cut without termination) has no stored s_T, so it is left out and the
      windows before it end at s_{T-1} with terminated = False: the target bootstraps from s_{T-1}.

    Episode ends are never treated as terminations (that was the ``dones[-1] = True`` bug).
    """
    if demos.rewards is None or demos.terminated is None or demos.truncated is None:
        raise DatasetError("demo transitions were loaded without rewards/terminated/truncated",
                           hint="load them with load_demo_transitions(..., with_returns=True)")
    writer = NStepWriter(1, n_step, gamma)
    parts: list[Transitions] = []
    starts = np.concatenate([[0], demos.episode_ends[:-1]])
    for start, end in zip(starts.tolist(), demos.episode_ends.tolist()):
        cut = bool(demos.truncated[end - 1]) and not bool(demos.terminated[end - 1])
        last = end - 2 if cut else end - 1  # the row whose window flush ends the episode
        for t in range(start, last + 1):
            at_end = t == last
            next_row = t + 1 if t + 1 < end else t  # a terminated last step: next obs is multiplied by 0
            out = writer.push({k: v[t:t + 1] for k, v in demos.obs.items()}, demos.actions[t:t + 1],
                              demos.rewards[t:t + 1], {k: v[next_row:next_row + 1] for k, v in demos.obs.items()},
                              demos.terminated[t:t + 1], np.array([bool(demos.terminated[t]) or at_end]))
            if out is not None:
                parts.append(out)
    if not parts:
        raise DatasetError("the demos hold no transition that can be bootstrapped (every episode has one step "
                           "and was cut)", hint="use longer demos")
    return Transitions(
        obs={k: np.concatenate([p.obs[k] for p in parts]) for k in parts[0].obs},
        actions=np.concatenate([p.actions for p in parts]), rewards=np.concatenate([p.rewards for p in parts]),
        next_obs={k: np.concatenate([p.next_obs[k] for p in parts]) for k in parts[0].next_obs},
        terminated=np.concatenate([p.terminated for p in parts]),
        discounts=np.concatenate([p.discounts for p in parts]))


def check_demo_shapes(demos: DemoTransitions, env_obs_shapes: dict[str, tuple[int, ...]], obs_keys: list[str],
                      action_dim: int, path: str) -> None:
    """The demos must fit the env the agent acts in (same obs keys and shapes, same action dimension)."""
    if demos.actions.ndim != 2 or demos.actions.shape[1] != action_dim:
        raise DatasetError(f"demo dataset {path}: actions have shape {demos.actions.shape[1:]}, the env needs ({action_dim},)",
                           hint="render the demos with the same control mode as rollout.env.control_mode")
    for key in obs_keys:
        if key not in env_obs_shapes:
            raise DatasetError(f"demos.obs_keys names {key!r}, which the env's observations lack",
                               hint=f"the env gives {sorted(env_obs_shapes)}")
        shape = env_obs_shapes[key]
        if tuple(demos.obs[key].shape[1:]) != tuple(shape):
            raise DatasetError(f"demo dataset {path}: obs {key!r} has shape {demos.obs[key].shape[1:]}, the env gives {shape}",
                               hint="render the demos with the same obs mode and options as the rollout")


def check_demo_processing(path: str | os.PathLike, rollout_cfg) -> None:
    """Demos rendered with other observation processing (points, frame, goal points) than the rollouts would
    teach the policy inputs it never sees; the dataset manifest says how the demos were processed."""
    from ms2core.data.store import DatasetStore
    from ms2core.rollout import rollout_obs_processor

    if rollout_cfg.gym_env_id is not None:
        return
    try:
        manifest = DatasetStore.open(str(path), allow_unverified=True).manifest
    except Exception:  # noqa: BLE001 - missing or unreadable store: load_demo_transitions says what is wrong
        return
    demo = manifest.options.obs
    rollout = rollout_obs_processor(rollout_cfg).cfg
    if demo.obs_mode == "state" and rollout.obs_mode == "state":
        return  # the env's flat state vector either way: no options apply
    if demo != rollout:
        differing = {k: (v, getattr(rollout, k)) for k, v in demo if getattr(rollout, k) != v}
        raise DatasetError(
            f"demo dataset {path} was processed differently from the rollouts: "
            + ", ".join(f"{k}={a!r} (rollout: {b!r})" for k, (a, b) in differing.items()),
            hint="set rollout.obs to the dataset's options, e.g. "
            + " ".join(f"--set rollout.obs.{k}={a}" for k, (a, _) in differing.items()))


def write_demo_zarr(path: str | os.PathLike, episodes: list[dict[str, np.ndarray]], env_id: str = "PickCube-v0",
                    control_mode: str = "pd_ee_delta_pose", obs_mode: str = "state") -> Path:
    """Write episodes ``{"obs/<key>": (T, ...), "actions": (T, A), "rewards": (T,), "success": (T,)}`` as a
    committed dataset through the one writer; the manifest says the rows were not rendered from a demo pair.

    Episodes without ``terminated``/``truncated`` get ManiSkill2's: terminated = success (get_done), truncated
    at a last step that is not terminated.
    """
    from ms2core.data.store import synthetic_manifest, write_dataset

    path = Path(path)
    episodes = [_with_episode_ends(ep) for ep in episodes]
    lengths = [len(ep["actions"]) for ep in episodes]
    columns = {key: np.concatenate([ep[key] for ep in episodes]) for key in episodes[0]}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    manifest = synthetic_manifest(env_id, control_mode, obs_mode, lengths, source=f"write_demo_zarr:{path.name}")
    write_dataset(str(tmp), manifest, columns, lengths)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def _with_episode_ends(episode: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(episode["actions"])
    out = dict(episode)
    if "terminated" not in out:
        out["terminated"] = np.asarray(out.get("success", np.zeros(n, bool)), bool).copy()
    if "truncated" not in out:
        out["truncated"] = (np.arange(n) == n - 1) & ~np.asarray(out["terminated"], bool)
    return out
