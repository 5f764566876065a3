"""Validating a demo pair (ManiSkill2 ``NAME.h5`` + ``NAME.json``), one episode in memory at a time.

Every structural problem becomes a finding (the validator does not stop at the first, unlike
``DemoPair.check_structure``): json schema, traj_N ids against json episode ids, per-episode lengths,
NaN/Inf, action bounds of each episode's control mode, success flags, duplicates, and replay of a
sample of episodes from their recorded seeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import h5py
import numpy as np
from pydantic import ValidationError

from ms2core.errors import DemoFileError
from ms2core.trajectory import DemoPair, demo_digest, pair_paths
from ms2core.validation.checks import (
    RowLocator, actions_digest, check_block, check_duplicates, check_last_steps, rules_for,
)
from ms2core.validation.findings import FindingSink
from ms2core.validation.replay import action_bounds, env_error_text, replay_demo_episode, sample_positions
from storage_schemas.demos import TrajectoryJson


@dataclass
class DemoOutcome:
    fingerprint: str
    n_episodes: int = 0
    n_rows: int = 0
    bytes_checked: int = 0
    replayed: list[int] = field(default_factory=list)
    checks_run: list[str] = field(default_factory=list)
    ok_positions: list[int] = field(default_factory=list)  # episodes whose arrays are sound enough to replay


def demo_backend(raw_json: dict, backend: str) -> str:
    """auto: the backend ms2flow's generator recorded in the json, else the real simulator."""
    if backend != "auto":
        return backend
    block = raw_json.get("ms2flow") if isinstance(raw_json, dict) else None
    key = block.get("key") if isinstance(block, dict) else None
    recorded = key.get("backend") if isinstance(key, dict) else None
    return recorded if recorded in ("sapien", "fake") else "sapien"


def validate_demo_pair(path: str, sink: FindingSink, *, replay_sample: int = 0, replay_state_atol: float = 1e-3,
                       backend: str = "auto", success_only: bool = True, action_bounds_tol: float = 1e-5,
                       on_episode: Callable[[int, int], None] | None = None) -> DemoOutcome:
    """``on_episode(done, total)`` is called once per episode checked (progress bars)."""
    h5_path, json_path = pair_paths(path)
    outcome = DemoOutcome(fingerprint="unreadable")
    checks = outcome.checks_run
    checks += ["unreadable", "json_schema"]
    missing = [p for p in (h5_path, json_path) if not p.exists()]
    for p in missing:
        sink.add("unreadable", f"{p} does not exist", key=p.name, expected="NAME.h5 beside NAME.json")
    if missing:
        return outcome
    outcome.fingerprint = demo_digest(path)
    # -- json schema: every pydantic error, not only the first ------------------------------------
    try:
        raw = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        sink.add("json_schema", f"{json_path.name} is not valid JSON: {exc}", key=json_path.name)
        return outcome
    try:
        meta = TrajectoryJson.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors()[:20]:
            loc = [str(p) for p in err["loc"]]
            episode = None
            if len(loc) >= 2 and loc[0] == "episodes" and loc[1].isdigit():
                item = raw["episodes"][int(loc[1])] if isinstance(raw.get("episodes"), list) else None
                episode = item.get("episode_id") if isinstance(item, dict) and isinstance(
                    item.get("episode_id"), int) else None
            sink.add("json_schema", f"{json_path.name}: {'.'.join(loc)}: {err['msg']}", episode=episode,
                     key=".".join(loc), value=repr(err.get("input"))[:200], expected=err["msg"])
        return outcome
    try:
        pair = DemoPair(path, check_episodes=False)
    except DemoFileError as exc:
        sink.add("unreadable", exc.message, key=h5_path.name)
        return outcome
    backend = demo_backend(raw, backend)
    with pair:
        _check_pair(pair, meta, sink, outcome, backend, success_only, action_bounds_tol, on_episode)
        if replay_sample > 0:
            checks += ["replay_state", "replay_success"]
            outcome.replayed = _replay(pair, sink, replay_sample, replay_state_atol, backend, outcome.ok_positions)
    return outcome


def _h5_ids(pair: DemoPair, sink: FindingSink) -> dict[int, str]:
    ids = {}
    for name in pair._h5.keys():
        if not name.startswith("traj_"):
            continue
        suffix = name[5:]
        if not suffix.isdigit():
            sink.add("traj_id", f"h5 group {name} is not traj_<integer>", key=name, value=name,
                     expected="traj_<episode_id>")
            continue
        ids[int(suffix)] = name
    return ids


def _check_pair(pair: DemoPair, meta: TrajectoryJson, sink: FindingSink, outcome: DemoOutcome, backend: str,
                success_only: bool, bounds_tol: float, on_episode) -> None:
    outcome.checks_run += ["traj_id", "episode_length", "non_finite", "action_bounds", "success", "success_claim",
                           "duplicate"]
    h5_ids = _h5_ids(pair, sink)
    json_ids = [ep.episode_id for ep in meta.episodes]
    seen = set()
    for ep_id in json_ids:
        if ep_id in seen:
            sink.add("traj_id", f"the json lists episode {ep_id} more than once", episode=ep_id, key="episodes",
                     value=ep_id, expected="unique episode ids")
        seen.add(ep_id)
    for extra in sorted(set(h5_ids) - seen):
        sink.add("traj_id", f"h5 group traj_{extra} is not listed in {pair.json_path.name}", episode=extra,
                 key=f"traj_{extra}", expected="an episode in the json")
    outcome.n_episodes = len(meta.episodes)
    ok_positions, ids, seeds, digests, last_success, claimed, lengths = [], [], [], [], [], [], []
    env_id = meta.env_info.env_id
    for position, ep in enumerate(meta.episodes):
        if on_episode is not None:
            on_episode(position + 1, len(meta.episodes))
        name = f"traj_{ep.episode_id}"
        if ep.episode_id not in h5_ids:
            sink.add("traj_id", f"the json lists episode {ep.episode_id} but the h5 has no {name}",
                     episode=ep.episode_id, key=name, expected=f"h5 group {name}")
            continue
        group = pair._h5[name]
        if not isinstance(group, h5py.Group):
            sink.add("traj_id", f"{name} is not a group of arrays", episode=ep.episode_id, key=name)
            continue
        absent = [k for k in ("actions", "success") if k not in group]
        if "env_states" not in group and "env_init_state" not in group:
            absent.append("env_states")
        for key in absent:
            sink.add("missing_array", f"{name} has no {key}", episode=ep.episode_id, key=f"{name}/{key}",
                     expected="ManiSkill2 0.5 trajectory layout")
        if absent:
            continue
        try:
            episode = pair.read_episode(position)
        except DemoFileError as exc:
            sink.add("unreadable", exc.message, episode=ep.episode_id, key=name)
            continue
        outcome.bytes_checked += sum(a.nbytes for a in (episode.actions, episode.success, episode.env_states,
                                                         episode.env_init_state) if a is not None)
        if not _check_episode_arrays(sink, episode, name, env_id, ep.control_mode or meta.control_mode, backend,
                                     bounds_tol):
            continue
        outcome.n_rows += episode.num_steps
        ok_positions.append(position)
        ids.append(ep.episode_id)
        seeds.append(ep.seed)
        digests.append(actions_digest(episode.actions))
        last_success.append(bool(episode.success[-1]) if len(episode.success) else False)
        info = ep.info or {}
        claimed.append(info.get("success") if isinstance(info.get("success"), bool) else None)
        lengths.append(episode.num_steps)
    outcome.ok_positions = ok_positions
    lengths_arr = np.asarray(lengths, np.int64)
    check_last_steps(sink, ids, np.asarray(last_success, bool), None, lengths_arr, success_only, claimed,
                     success_key="traj_{episode}/success")
    check_duplicates(sink, ids, seeds, digests)


def _check_episode_arrays(sink: FindingSink, episode, name: str, env_id: str, control_mode: str | None,
                          backend: str, bounds_tol: float) -> bool:
    """Lengths, dtypes, finiteness and bounds of one episode; False when it cannot be checked further."""
    ep_id = episode.meta.episode_id
    n = episode.meta.elapsed_steps
    ok = True
    lengths = {"actions": len(episode.actions), "success": len(episode.success)}
    if episode.env_states is not None:
        lengths["env_states"] = len(episode.env_states) - 1
    for key, got in lengths.items():
        if got != n:
            shown = got + 1 if key == "env_states" else got
            want = n + 1 if key == "env_states" else n
            sink.add("episode_length", f"{name}/{key} has {shown} rows, json elapsed_steps={n} means {want}",
                     episode=ep_id, key=f"{name}/{key}", value=shown, expected=want)
            ok = False
    if n == 0:
        sink.add("episode_length", f"{name} has no steps", episode=ep_id, key=f"{name}/actions", value=0,
                 expected="> 0")
        return False
    if not np.issubdtype(episode.actions.dtype, np.floating) or episode.actions.ndim != 2:
        sink.add("dtype", f"{name}/actions is {episode.actions.dtype} {episode.actions.shape}", episode=ep_id,
                 key=f"{name}/actions", value=str(episode.actions.dtype), expected="float32 (T, A)")
        return False
    if episode.success.dtype != np.bool_:
        sink.add("dtype", f"{name}/success is {episode.success.dtype}", episode=ep_id, key=f"{name}/success",
                 value=str(episode.success.dtype), expected="bool")
    locator = RowLocator(np.asarray([len(episode.actions)]), [ep_id])
    bounds = None
    if control_mode is None:
        sink.add("env_unavailable", f"{name} has no control_mode: action bounds not checked", episode=ep_id,
                 key=f"{name}/actions")
    else:
        try:
            bounds = action_bounds(env_id, control_mode, backend)
        except Exception as exc:  # noqa: BLE001
            sink.add("env_unavailable", f"cannot build {env_id} ({control_mode}, {backend}): {env_error_text(exc)}",
                     episode=ep_id, key=f"{name}/actions")
    if bounds is not None and episode.actions.shape[1:] != bounds.shape:
        sink.add("shape", f"{name}/actions rows have {list(episode.actions.shape[1:])} components, "
                 f"{control_mode} takes {list(bounds.shape)}", episode=ep_id, key=f"{name}/actions",
                 value=list(episode.actions.shape[1:]), expected=list(bounds.shape))
        bounds = None
        ok = False
    rules = rules_for(f"{name}/actions", episode.actions.dtype, None if bounds is None else bounds.low,
                      None if bounds is None else bounds.high, bounds_tol)
    check_block(sink, rules, episode.actions, 0, locator)
    for key, states in (("env_states", episode.env_states), ("env_init_state", episode.env_init_state)):
        if states is None:
            continue
        states = np.atleast_2d(states)
        if np.issubdtype(states.dtype, np.floating):
            check_block(sink, rules_for(f"{name}/{key}", states.dtype), states, 0,
                        RowLocator(np.asarray([len(states)]), [ep_id]))
    return ok


def _replay(pair: DemoPair, sink: FindingSink, k: int, atol: float, backend: str, ok_positions: list[int]) -> list[int]:
    """Replay k evenly spread sound episodes; one env per control mode, kept alive across episodes."""
    from ms2core.envs import make_env

    info = pair.env_info
    env_kwargs = {} if backend == "fake" else {
        k_: v for k_, v in info.env_kwargs.items() if k_ not in ("obs_mode", "control_mode", "reward_mode")}
    reward_mode = info.env_kwargs.get("reward_mode", "dense")
    envs: dict[str | None, object] = {}
    replayed = []
    try:
        for i in sample_positions(len(ok_positions), k):
            position = ok_positions[i]
            meta = pair.episodes[position]
            mode = meta.control_mode or pair.meta.control_mode
            if mode not in envs:
                try:
                    envs[mode] = make_env(info.env_id, "none", mode, reward_mode, backend=backend, **env_kwargs)
                except Exception as exc:  # noqa: BLE001
                    sink.add("replay_skipped", f"cannot build {info.env_id} ({mode}, {backend}) to replay: "
                             f"{env_error_text(exc)}", key="env_info")
                    envs[mode] = None
            if envs[mode] is None:
                continue
            replay_demo_episode(envs[mode], pair.read_episode(position), atol, sink, f"traj_{meta.episode_id}")
            replayed.append(meta.episode_id)
    finally:
        for env in envs.values():
            if env is not None:
                env.close()
    return replayed
