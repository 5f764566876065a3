"""A simulator worker process: ``python -m ms2core.workers.worker --read-fd R --write-fd W --parent-pid P``.

Started by ``ms2core.workers.SimPool`` with any interpreter that has numpy,
pydantic, gymnasium and ms2flow's code (and the simulator for sapien work).
It greets the pool (pid, Python and numpy versions, where it imported ms2flow from), then answers messages on
its two pipe descriptors, one at a time, in the wire format of
``ms2core.workers.wire``:

    {"op": "call", "fn": "module:function", "args": [...]}  ->  {"ok": result} | {"error": {...}}
    {"op": "close"}                                         ->  closes its env cache and exits

Work functions keep envs in ``ms2core.envs.cache.env_cache()`` (this
process's cache), so a worker builds each env once for the pool's lifetime.
An exception in a work function goes back as its type, message and traceback
text; the worker keeps serving.

It never outlives the pool's process: a watchdog thread exits (status 3)
as soon as the parent is gone (``os.getppid()`` changed, or the pool's pid no
longer exists), which covers ``kill -9`` of the parent, and a closed request
pipe (EOF) ends the loop. Ctrl-C is left to the parent, which closes its
workers (SIGINT is ignored here so a worker never dies half-way through a reply).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import threading
import time
import traceback

from ms2core.fileio import pid_alive

PARENT_POLL_S = 0.25


def describe_exception(exc: BaseException) -> dict:
    """Type, message and traceback text of ``exc`` (plus message/hint for ms2flow's typed errors)."""
    cls = type(exc)
    out = {"type": f"{cls.__module__}.{cls.__qualname__}", "name": cls.__name__, "message": str(exc),
           "traceback": "".join(traceback.format_exception(cls, exc, exc.__traceback__))}
    if hasattr(exc, "hint") and hasattr(exc, "message"):
        out["ms2"] = {"ref": f"{cls.__module__}:{cls.__qualname__}", "message": str(exc.message),
                      "hint": None if exc.hint is None else str(exc.hint)}
    return out


def watch_parent(parent_pid: int, interval_s: float = PARENT_POLL_S) -> threading.Thread:
    """Exit this process as soon as the pool's process is gone (re-parented or no longer alive)."""
    start_ppid = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != start_ppid or not pid_alive(parent_pid):
                os._exit(3)
            time.sleep(interval_s)

    thread = threading.Thread(target=watch, name="ms2flow-parent-watchdog", daemon=True)
    thread.start()
    return thread


def serve(read_fd: int, write_fd: int) -> None:
    import numpy as np

    from ms2core.envs.cache import PROCESS_CACHE
    from ms2core.workers.wire import WireError, read_frame, resolve, write_frame

    from ms2core.workers.interpreter import STARTED_WITH, code_root

    write_frame(write_fd, {"op": "hello", "pid": os.getpid(), "python": platform.python_version(),
                           "executable": sys.executable, "numpy": np.__version__, "code_root": code_root(),
                           "source_digest": STARTED_WITH})
    try:
        while True:
            try:
                message = read_frame(read_fd)
            except EOFError:
                return  # the pool closed its end (or died): nothing more to do
            if message.get("op") == "close":
                return
            try:
                reply = {"ok": resolve(message["fn"])(*message.get("args", []))}
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the pool, named
                reply = {"error": describe_exception(exc)}
            try:
                write_frame(write_fd, reply)
            except WireError as exc:
                write_frame(write_fd, {"error": describe_exception(exc)})
    except BrokenPipeError:
        return
    finally:
        PROCESS_CACHE.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ms2core.workers.worker")
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_parent(args.parent_pid)
    # Whatever the simulator prints goes to stderr; the wire has its own descriptors.
    sys.stdout = sys.stderr
    serve(args.read_fd, args.write_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
