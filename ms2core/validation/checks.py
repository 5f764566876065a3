"""The pure checks: numpy blocks of rows in, findings out. No I/O here, so each check is unit-testable
and the same code runs on a Zarr chunk, an h5 episode or a Dask worker's block.

A *block* is a run of consecutive rows of one time-major array, starting at global row
``start_row``; a :class:`RowLocator` turns a global row into (episode id, step in episode).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ms2core.validation.findings import FindingSink
from storage_schemas.dataset import EPISODE_ENDS

#: dtypes of the processed-observation and dataset contract (data/<key>).
CONTRACT_DTYPES = {
    "actions": "float32", "rewards": "float32", "success": "bool", "terminated": "bool", "truncated": "bool",
    "obs/state": "float32", "obs/xyz": "float32", "obs/rgb": "uint8", "obs/depth": "float32", "obs/seg": "bool",
}
#: other dtypes the contract allows: float16 depth (RenderOptions.depth_dtype, ManiSkill2-Learn's precision).
CONTRACT_ALSO_DTYPES = {"obs/depth": ("float16",)}
#: success / terminated / truncated have ManiSkill2's meaning (terminated: env.step said so; truncated: the
#: last step of an episode the env did not terminate there).
CORE_KEYS = ("actions", "rewards", "success", "terminated", "truncated")
#: the episode-end flag of stores rendered before RENDER_VERSION 2 (success | last step): refused, re-render.
LEGACY_DONES_KEY = "dones"


def expected_obs_keys(obs_mode: str, include_rgb: bool = True, include_depth: bool = True,
                      include_seg: bool = False) -> set[str]:
    """The obs/<key> arrays a dataset of this obs mode holds (ms2core.obs's processed contract)."""
    keys = {"obs/state"}
    if obs_mode == "pointcloud":
        keys |= {"obs/xyz"} | ({"obs/rgb"} if include_rgb else set()) | ({"obs/seg"} if include_seg else set())
    elif obs_mode == "rgbd":
        keys |= ({"obs/rgb"} if include_rgb else set()) | ({"obs/depth"} if include_depth else set())
        keys |= {"obs/seg"} if include_seg else set()
    return keys


@dataclass
class RowLocator:
    """Global row -> (episode id, step). ``ends`` are cumulative (episode_ends); None: unknown."""

    ends: np.ndarray | None
    episode_ids: list[int] | None = None

    def locate(self, row: int) -> tuple[int | None, int | None]:
        if self.ends is None or len(self.ends) == 0:
            return None, None
        e = int(np.searchsorted(self.ends, row, side="right"))
        if e >= len(self.ends):
            return None, None
        start = int(self.ends[e - 1]) if e > 0 else 0
        episode = self.episode_ids[e] if self.episode_ids is not None and e < len(self.episode_ids) else e
        return int(episode), row - start


@dataclass
class ArrayRules:
    """Which value checks apply to one array."""

    key: str
    finite: bool = False
    low: np.ndarray | None = None  # action bounds (broadcast over a row)
    high: np.ndarray | None = None
    bounds_tol: float = 0.0
    non_negative: bool = False  # depth


def rules_for(key: str, dtype: np.dtype, low=None, high=None, bounds_tol: float = 0.0) -> ArrayRules:
    rules = ArrayRules(key=key, finite=np.issubdtype(dtype, np.floating))
    if low is not None and high is not None:  # the caller passes bounds for action arrays only
        rules.low, rules.high, rules.bounds_tol = np.asarray(low, np.float64), np.asarray(high, np.float64), bounds_tol
    if key == "obs/depth":
        rules.non_negative = True
    return rules


def _flat(block: np.ndarray) -> np.ndarray:
    return block.reshape(len(block), -1)


def _report_rows(sink: FindingSink, code: str, key: str, bad_rows: np.ndarray, start_row: int,
                 locator: RowLocator, describe) -> None:
    """Add one finding per bad row, materialising only as many as the sink will list."""
    n_bad = len(bad_rows)
    if n_bad == 0:
        return
    shown = bad_rows[: sink.room(code, key)]
    for local in shown:
        row = start_row + int(local)
        episode, step = locator.locate(row)
        message, value, expected = describe(int(local))
        sink.add(code, message, episode=episode, key=key, index=step, row=row, value=value, expected=expected)
    sink.count_only(code, n_bad - len(shown))


def check_block(sink: FindingSink, rules: ArrayRules, block: np.ndarray, start_row: int,
                locator: RowLocator) -> None:
    """Value checks of one block of rows (NaN/Inf, action bounds, depth sign)."""
    if len(block) == 0:
        return
    flat = None
    if rules.finite:
        flat = _flat(block)
        bad_mask = ~np.isfinite(flat)
        bad_rows = np.flatnonzero(bad_mask.any(axis=1))

        def describe(local: int):
            col = int(np.argmax(bad_mask[local]))
            return (f"{rules.key} row holds {int(bad_mask[local].sum())} non-finite value(s), first at flat "
                    f"component {col}", flat[local, col], "finite")

        _report_rows(sink, "non_finite", rules.key, bad_rows, start_row, locator, describe)
    if rules.low is not None:
        flat = _flat(block) if flat is None else flat
        with np.errstate(invalid="ignore"):
            under = flat < rules.low - rules.bounds_tol
            over = flat > rules.high + rules.bounds_tol
        out = under | over
        bad_rows = np.flatnonzero(out.any(axis=1))

        def describe(local: int):
            col = int(np.argmax(out[local]))
            lo, hi = float(rules.low.reshape(-1)[col] if rules.low.size > 1 else rules.low),\
                float(rules.high.reshape(-1)[col] if rules.high.size > 1 else rules.high)
            return (f"action component {col} = {flat[local, col]:.6g} outside the control mode's bounds",
                    flat[local, col], [lo, hi])

        _report_rows(sink, "action_bounds", rules.key, bad_rows, start_row, locator, describe)
    if rules.non_negative:
        flat = _flat(block) if flat is None else flat
        with np.errstate(invalid="ignore"):
            negative = flat < 0
        bad_rows = np.flatnonzero(negative.any(axis=1))

        def describe(local: int):
            col = int(np.argmax(negative[local]))
            return (f"depth has {int(negative[local].sum())} negative value(s)", flat[local, col], ">= 0")

        _report_rows(sink, "depth", rules.key, bad_rows, start_row, locator, describe)


def check_episode_ends(sink: FindingSink, ends: np.ndarray, n_rows: int | None,
                       key: str = EPISODE_ENDS) -> bool:
    """Strictly increasing, first > 0, last == n_rows. Returns whether ends can locate rows."""
    ok = True
    if ends.ndim != 1:
        sink.add("episode_ends", f"episode_ends must be 1-D, has shape {ends.shape}", key=key,
                 value=list(ends.shape), expected="(E,)")
        return False
    if len(ends) and ends[0] <= 0:
        sink.add("episode_ends", "the first episode ends at a row <= 0 (empty episode)", key=key, index=0,
                 value=ends[0], expected="> 0")
        ok = False
    steps = np.diff(ends)
    bad = np.flatnonzero(steps <= 0)
    for i in bad[: sink.room("episode_ends", key)]:
        sink.add("episode_ends", f"episode_ends not strictly increasing at position {int(i) + 1}", key=key,
                 index=int(i) + 1, value=ends[i + 1], expected=f"> {int(ends[i])}")
    sink.count_only("episode_ends", max(0, len(bad) - sink.room("episode_ends", key)))
    ok = ok and len(bad) == 0
    if n_rows is not None and len(ends) and int(ends[-1]) != n_rows:
        sink.add("episode_ends", f"the last episode end ({int(ends[-1])}) differs from the committed row count",
                 key=key, index=len(ends) - 1, value=ends[-1], expected=n_rows)
    return ok


def actions_digest(actions: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(actions, np.float32).tobytes()).hexdigest()


def check_duplicates(sink: FindingSink, episode_ids: list[int], seeds: list[int | None],
                     digests: list[str | None], key: str = "actions") -> None:
    """Same seed and byte-identical actions = the same episode stored twice."""
    first: dict[tuple, int] = {}
    for episode, seed, digest in zip(episode_ids, seeds, digests):
        if digest is None:
            continue
        ident = (seed, digest)
        if ident in first:
            sink.add("duplicate", f"episode {episode} duplicates episode {first[ident]} (seed {seed}, same actions)",
                     episode=episode, key=key, value=episode, expected=f"unique (duplicate of {first[ident]})")
        else:
            first[ident] = episode


def check_last_steps(sink: FindingSink, episode_ids: list[int], last_success: np.ndarray | None,
                     last_end: tuple[np.ndarray, np.ndarray] | None, lengths: np.ndarray, success_only: bool,
                     claimed_success: list[bool | None] | None = None, success_key: str = "success") -> None:
    """Success-only datasets end every episode in success; every episode's last row is terminated or
    truncated, never both (``last_end`` = (terminated, truncated) at the last rows); per-episode success
    recorded elsewhere (manifest / json info) agrees with the flags.
    ``success_key`` may hold ``{episode}`` (demo pairs: one array per episode)."""
    for i, episode in enumerate(episode_ids):
        last = int(lengths[i]) - 1
        key = success_key.format(episode=episode)
        if last_success is not None:
            if success_only and not bool(last_success[i]):
                sink.add("success", "the last step is not a success in a success-only dataset", episode=episode,
                         key=key, index=last, value=False, expected=True)
            if claimed_success is not None and claimed_success[i] is not None \
                    and bool(claimed_success[i]) != bool(last_success[i]):
                sink.add("success_claim", f"recorded episode success {claimed_success[i]} but the last success "
                         f"flag is {bool(last_success[i])}", episode=episode, key=key, index=last,
                         value=bool(last_success[i]), expected=bool(claimed_success[i]))
        if last_end is not None:
            terminated, truncated = bool(last_end[0][i]), bool(last_end[1][i])
            if terminated == truncated:
                sink.add("dones", f"the episode's last row is {'both' if terminated else 'neither'} terminated "
                         f"{'and' if terminated else 'nor'} truncated", episode=episode, key="truncated",
                         index=last, value=truncated, expected=not terminated)


def check_truncated_rows(sink: FindingSink, truncated: np.ndarray, is_last: np.ndarray, start_row: int,
                         locator: RowLocator) -> None:
    """``truncated`` may be True only at an episode's last row (a block of rows from global ``start_row``)."""
    bad = np.flatnonzero(np.asarray(truncated, bool) & ~np.asarray(is_last, bool))
    for local in bad[: sink.room("dones", "truncated")]:
        episode, index = locator.locate(start_row + int(local))
        sink.add("dones", "truncated is set before the episode's last row", episode=episode, key="truncated",
                 index=index, row=start_row + int(local), value=True, expected=False)
    sink.count_only("dones", max(0, len(bad) - sink.room("dones", "truncated")))
