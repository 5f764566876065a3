"""Validating a demo pair (ManiSkill2 ``NAME.h5`` + ``NAME.json``), one episode in memory at a time.

Every structural problem becomes a finding (the validator does not stop at the first, unlike
``DemoPair.check_structure``): json schema, traj_N ids against json episode ids, per-episode lengths,
NaN/Inf, action bounds of each episode's control mode, success flags, duplicates, and replay of a
sample of episodes from their recorded seeds.

:func:`require_sound_demos` is the gate that import, replay and render call first: the same checks
without replay (plus a reset of the first episodes with their seeds), refusing a failing pair.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from pydantic import ValidationError

from ms2core.errors import DemoFileError, closest
from ms2core.trajectory import DemoPair, demo_digest, pair_paths
from ms2core.validation.checks import (
    RowLocator, actions_digest, check_block, check_duplicates, check_last_steps, rules_for,
)
from ms2core.validation.findings import FindingSink
from ms2core.validation.replay import (
    EXACT_STATE_ATOL, action_bounds, check_reset, env_error_text, replay_demo_episode, sample_positions,
)
from storage_schemas.demos import TrajectoryJson
from storage_schemas.validation import severity_of


#: ManiSkill2's RecordEpisode and ms2flow's writer store float32; float64 holds the same values exactly.
#: float16 rounds a joint target by up to ~1e-3 rad and integers are not actions at all.
ACTION_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Episodes whose seed is checked against the recorded initial state by the structural checks.
RESET_CHECK_EPISODES = 3


@dataclass
class DemoOutcome:
    fingerprint: str
    n_episodes: int = 0
    n_rows: int = 0
    bytes_checked: int = 0
    replayed: list[int] = field(default_factory=list)
    checks_run: list[str] = field(default_factory=list)
    ok_positions: list[int] = field(default_factory=list)  # episodes whose arrays are sound enough to replay
    reset_failed: set[int] = field(default_factory=set)  # positions whose seed does not give their initial state


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
                       on_episode: Callable[[int, int], None] | None = None,
                       reset_check: int = RESET_CHECK_EPISODES) -> DemoOutcome:
    """``on_episode(done, total)`` is called once per episode checked (progress bars).

    ``reset_check``: how many sound episodes (the first ones) are reset with their recorded seed and
    compared with their recorded initial state (one env reset each, no stepping).
    """
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
        bad_modes = _check_env_info(meta, sink, backend)  # None: the env id is wrong or no simulator
        outcome.checks_run += ["env_id", "control_mode"]
        _check_pair(pair, meta, sink, outcome, backend if bad_modes is not None else None, success_only,
                    action_bounds_tol, on_episode, bad_modes or set())
        if bad_modes is not None and reset_check > 0:
            outcome.checks_run.append("reset_state")
            checkable = [i for i in outcome.ok_positions if meta.episodes[i].episode_id not in bad_modes]
            outcome.reset_failed = _check_resets(pair, sink, backend, checkable[:reset_check])
        if replay_sample > 0:
            checks += ["replay_state", "replay_success"]
            recorded_here = isinstance(raw.get("ms2flow"), dict)
            positions = [i for i in outcome.ok_positions if i not in outcome.reset_failed]
            outcome.replayed = _replay(pair, sink, replay_sample, replay_state_atol, backend, positions,
                                       recorded_here)
    return outcome


def _check_env_info(meta: TrajectoryJson, sink: FindingSink, backend: str) -> set[int] | None:
    """The json's env id is a registered task and every episode's control mode one its robot supports.

    Returns the ids of episodes with a wrong control mode; None when no episode can be checked against
    the env (wrong env id, or no simulator here).
    """
    from ms2core.envs import registered_env_ids, supported_control_modes

    env_id = meta.env_info.env_id
    try:
        known = registered_env_ids(backend)
        modes = supported_control_modes(env_id, backend) if env_id in known else []
    except Exception as exc:  # noqa: BLE001 - no simulator installed: say so, check the rest
        sink.add("env_unavailable", f"cannot list {backend} tasks: {env_error_text(exc)}", key="env_info")
        return None
    if env_id not in known:
        near = closest(env_id, known)
        sink.add("env_id", f"env_info.env_id {env_id!r} is not a registered {backend} task"
                 + (f" (did you mean {', '.join(near)}?)" if near else ""), key="env_info.env_id", value=env_id,
                 expected=near or "a ManiSkill2 env id")
        return None
    bad = set()
    for ep in meta.episodes:
        mode = ep.control_mode or meta.control_mode
        if mode is None or (modes and mode not in modes):
            what = "has no control_mode (episodes or env_info.env_kwargs)" if mode is None else \
                f"has control mode {mode!r}, which {env_id}'s robot does not support"
            sink.add("control_mode", f"episode {ep.episode_id} {what}",
                     episode=ep.episode_id, key=f"episodes.{ep.episode_id}.control_mode", value=mode,
                     expected=modes)
            bad.add(ep.episode_id)
    return bad


def _check_resets(pair: DemoPair, sink: FindingSink, backend: str, positions: list[int]) -> set[int]:
    """Reset with each recorded seed and compare the env state with the recorded initial one (no stepping).

    A fresh reset reproduces a seed's initial state to float32 rounding, so the tolerance is exact
    (EXACT_STATE_ATOL); a different state means the seed (or the task's version) is not the one recorded.
    """
    from ms2core.envs import make_env

    envs: dict[str, object] = {}
    failed: set[int] = set()
    info = pair.env_info
    env_kwargs = {} if backend == "fake" else {
        k: v for k, v in info.env_kwargs.items() if k not in ("obs_mode", "control_mode", "reward_mode")}
    try:
        for position in positions:
            meta = pair.episodes[position]
            episode = pair.read_episode(position)
            init = episode.env_states[0] if episode.env_states is not None else episode.env_init_state
            mode = meta.control_mode or pair.meta.control_mode
            if init is None or meta.seed is None:
                continue
            if mode not in envs:
                try:
                    envs[mode] = make_env(info.env_id, "none", mode, "dense", backend=backend, **env_kwargs)
                except Exception as exc:  # noqa: BLE001
                    sink.add("env_unavailable", f"cannot build {info.env_id} ({mode}, {backend}) to check seeds: "
                             f"{env_error_text(exc)}", key="env_info")
                    return failed
            try:
                if not check_reset(envs[mode], episode, sink, f"traj_{meta.episode_id}"):
                    failed.add(position)
            except Exception as exc:  # noqa: BLE001 - the simulator refusing the seed is a finding
                sink.add("replay_failed", f"resetting with seed {meta.seed} failed: {env_error_text(exc)}",
                         episode=meta.episode_id, key=f"traj_{meta.episode_id}")
                failed.add(position)
    finally:
        for env in envs.values():
            env.close()
    return failed


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
                success_only: bool, bounds_tol: float, on_episode, bad_modes: set[int]) -> None:
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
        try:
            group = pair._h5[name]
            names = set(group.keys()) if isinstance(group, h5py.Group) else set()
        except (KeyError, OSError, RuntimeError) as exc:  # h5py: a damaged object header or checksum
            sink.add("unreadable", f"{name} cannot be read (damaged HDF5 metadata?): {exc}", episode=ep.episode_id,
                     key=name)
            continue
        if not isinstance(group, h5py.Group):
            sink.add("traj_id", f"{name} is not a group of arrays", episode=ep.episode_id, key=name)
            continue
        absent = [k for k in ("actions", "success") if k not in names]
        if "env_states" not in names and "env_init_state" not in names:
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
        if not _check_episode_arrays(sink, episode, name, env_id, ep.control_mode or meta.control_mode,
                                     None if ep.episode_id in bad_modes else backend, bounds_tol):
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
    if episode.actions.dtype not in ACTION_DTYPES or episode.actions.ndim != 2:
        sink.add("dtype", f"{name}/actions is {episode.actions.dtype} {episode.actions.shape}", episode=ep_id,
                 key=f"{name}/actions", value=str(episode.actions.dtype), expected="float32 (T, A)")
        return False
    if episode.success.dtype != np.bool_:
        sink.add("dtype", f"{name}/success is {episode.success.dtype}", episode=ep_id, key=f"{name}/success",
                 value=str(episode.success.dtype), expected="bool")
    locator = RowLocator(np.asarray([len(episode.actions)]), [ep_id])
    bounds = None
    if backend is None or control_mode is None:
        pass  # the env id or control mode is wrong: reported once for the pair by _check_env_info
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
        if states.dtype not in ACTION_DTYPES:
            sink.add("dtype", f"{name}/{key} is {states.dtype}", episode=ep_id, key=f"{name}/{key}",
                     value=str(states.dtype), expected="float32")
            ok = False
        elif np.issubdtype(states.dtype, np.floating):
            check_block(sink, rules_for(f"{name}/{key}", states.dtype), states, 0,
                        RowLocator(np.asarray([len(states)]), [ep_id]))
    return ok


def _replay(pair: DemoPair, sink: FindingSink, k: int, atol: float, backend: str, ok_positions: list[int],
            recorded_here: bool) -> list[int]:
    """Replay k evenly spread sound episodes, each in a fresh env (see replay_demo_episode for why).

    Pairs recorded by ms2flow (generated or converted here) are compared exactly (EXACT_STATE_ATOL);
    pairs from elsewhere (other simulator builds) with the calibrated ``atol``.
    """
    from ms2core.envs import make_env

    info = pair.env_info
    env_kwargs = {} if backend == "fake" else {
        k_: v for k_, v in info.env_kwargs.items() if k_ not in ("obs_mode", "control_mode", "reward_mode")}
    reward_mode = info.env_kwargs.get("reward_mode", "dense")
    replayed = []
    for i in sample_positions(len(ok_positions), k):
        position = ok_positions[i]
        meta = pair.episodes[position]
        mode = meta.control_mode or pair.meta.control_mode
        try:
            env = make_env(info.env_id, "none", mode, reward_mode, backend=backend, **env_kwargs)
        except Exception as exc:  # noqa: BLE001
            sink.add("replay_skipped", f"cannot build {info.env_id} ({mode}, {backend}) to replay: "
                     f"{env_error_text(exc)}", key="env_info")
            break
        try:
            replay_demo_episode(env, pair.read_episode(position), min(atol, EXACT_STATE_ATOL) if recorded_here
                                else atol, sink, f"traj_{meta.episode_id}")
        finally:
            env.close()
        replayed.append(meta.episode_id)
    return replayed


# --------------------------------------------------------------------------- #
# The gate every consumer of a pair calls first (import, replay, render)
# --------------------------------------------------------------------------- #
@dataclass
class DemoCheck:
    """What :func:`require_sound_demos` decided about a pair."""

    h5_path: str
    digest: str
    passed: bool
    error_codes: list[str] = field(default_factory=list)
    cached: bool = False  # a passed NAME.validation.json of this very content was reused
    forced: bool = False  # failed, but the caller forced it through

    def provenance(self) -> dict:
        """What a consumer records about its input's checks (json ms2flow extra, dataset manifest)."""
        return {"demo_checks": "passed" if self.passed else "forced", "demo_check_errors": self.error_codes}


def demo_report_path(path) -> Path:
    """``NAME.validation.json`` beside the pair: where ``ms2 validate`` writes a pair's report."""
    from ms2core.trajectory import derived_paths

    return derived_paths(path)[0]


def _cached_pass(path, digest: str) -> bool:
    from storage_schemas.validation import CHECKER_VERSION, ValidationReport

    try:
        report = ValidationReport.model_validate_json(demo_report_path(path).read_text())
    except (OSError, ValueError):
        return False
    return report.status == "passed" and report.fingerprint == digest and report.checker_version == CHECKER_VERSION


def require_sound_demos(path, *, backend: str = "auto", force: bool = False) -> DemoCheck:
    """Run the demo-pair checks of ``ms2 validate PAIR.h5`` (no replay) and refuse a pair that fails them.

    A pair whose ``NAME.validation.json`` passed for its current digest is not checked again. A
    failing pair raises a DemoFileError naming the file, the first errors (episode, key, value) and
    the check codes, unless ``force`` (then the result says so, for the caller to record).
    """
    h5_path, _ = pair_paths(path)
    DemoPair(path).close()  # layout first: missing files, damaged h5, another ManiSkill version's layout
    digest = demo_digest(path)
    if _cached_pass(path, digest):
        return DemoCheck(str(h5_path), digest, passed=True, cached=True)
    sink = FindingSink(max_per_check=5)
    validate_demo_pair(str(h5_path), sink, backend=backend, success_only=False)
    codes = sorted(code for code, n in sink.total.items() if n and severity_of(code) == "error")
    if not codes:
        return DemoCheck(str(h5_path), digest, passed=True)
    if force:
        return DemoCheck(str(h5_path), digest, passed=False, error_codes=codes, forced=True)
    first: dict[str, object] = {}  # the first finding of each failing check
    for f in sink.sorted_findings():
        if f.severity == "error":
            first.setdefault(f.code, f)
    shown = "; ".join(_describe(f) + (f" (and {sink.total[code] - 1} more)" if sink.total[code] > 1 else "")
                      for code, f in list(first.items())[:3]) + ("; ..." if len(first) > 3 else "")
    raise DemoFileError(
        f"{h5_path} fails the demo-pair checks ({sink.n_errors} error(s): {', '.join(codes)}): {shown}",
        hint=f"run `ms2 validate {h5_path}` for the full report; regenerate or fix the pair, or pass --force "
             "to use it anyway (recorded in the output)",
    )


def _describe(f) -> str:
    where = ", ".join(x for x in (f"episode {f.episode}" if f.episode is not None else "",
                                  f"key {f.key}" if f.key else "",
                                  f"step {f.index}" if f.index is not None else "") if x)
    value = f", value {f.value!r}" if f.value is not None else ""
    expected = f" (expected {f.expected})" if f.expected is not None and len(str(f.expected)) < 400 else ""
    # no [brackets]: the CLI prints through rich, which reads them as markup
    return f"{f.code} ({where}{value}): {f.message}{expected}"
