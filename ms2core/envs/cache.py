"""The env cache: simulator objects (envs, solvers, converters, env slots) kept alive across work items.

Building an env costs seconds (shader compilation, asset loading), so every
simulator worker keeps what it built, keyed by everything that decides it, for
as long as the process lives: the pool's workers (``ms2core.workers``) and the
render stage's Dask workers alike. ``env_cache()`` is the active cache: the
process's own, or, while an in-process pool runs work in this process
(``using``), that pool's, so that closing the pool closes exactly what its work
built.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any


class EnvCache:
    """Objects by key; ``close()`` closes each one that has a ``close`` method, newest first."""

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._items:
                self._items[key] = build()
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            self._items[key] = value
        _close_quietly(old)

    def peek(self, key: Hashable) -> Any:
        return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        with self._lock:
            items = list(self._items.values())[::-1]
            self._items.clear()
        for item in items:
            _close_quietly(item)


def _close_quietly(item) -> None:
    close = getattr(item, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - closing a broken env must not hide the error that broke it
            pass


PROCESS_CACHE = EnvCache()
_ACTIVE: contextvars.ContextVar[EnvCache] = contextvars.ContextVar("ms2flow_env_cache", default=PROCESS_CACHE)


def env_cache() -> EnvCache:
    """The cache work running now should use."""
    return _ACTIVE.get()


@contextlib.contextmanager
def using(cache: EnvCache) -> Iterator[EnvCache]:
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
