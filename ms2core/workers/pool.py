"""SimPool: the one pool of simulator processes (rollout, evaluation, demo generation, replay).

::

    with SimPool(num_workers=4, python=None) as pool:          # 0 workers: the work runs in this process
        pool.call_each("pkg.mod:init", [(args0,), (args1,), ...])   # one call per worker, in lock-step
        for result in pool.imap("pkg.mod:work", items):          # one item per call, results in input order
            ...

Workers are fresh interpreters, ``python -m ms2core.workers.worker`` (the
current one unless ``python`` / ``sim_python`` / ``$MS2FLOW_SIM_PYTHON``
names another), talking over two pipes in the version-independent wire format
of ``ms2core.workers.wire``. Each keeps an env cache
(``ms2core.envs.cache``) for the pool's lifetime; an in-process pool runs the
same functions here with a cache of its own, which ``close()`` closes.

Failure and shutdown:

* a work function's exception comes back as ``WorkerError`` naming the worker,
  the exception's type and message, with the worker's traceback text
  (``worker_traceback``); ms2flow's typed errors (``Ms2Error``) are raised again
  as themselves, so the CLI still prints them as one paragraph;
* a worker that dies (crash, OOM kill) is noticed within ``POLL_S``: every wait
  is a ``poll`` with a timeout followed by a liveness check; start-up has its
  own deadline (``start_timeout_s``), and a call one too where ``call_timeout_s``
  (or ``$MS2FLOW_SIM_CALL_TIMEOUT_S``) is set: a hung worker is then reported
  and the pool closed;
* ``close()`` (also on an exception or Ctrl-C in the ``with`` body) asks each
  worker to exit, then terminates and finally kills what is left;
* the workers watch this process and exit when it dies, even by ``kill -9``.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ms2core.envs.cache import EnvCache, using
from ms2core.errors import ConfigError, Ms2Error
from ms2core.workers import wire
from ms2core.workers.interpreter import (
    BASE_MODULES,
    check_code_root,
    check_interpreter,
    resolve_sim_python,
    worker_environment,
)

POLL_S = 0.5
START_TIMEOUT_S = 300.0  # importing torch/sapien and compiling shaders on a loaded machine takes a while
CLOSE_TIMEOUT_S = 10.0
ABORT_GRACE_S = 1.0  # after a failure or Ctrl-C: workers busy with abandoned work are not waited for long
CALL_TIMEOUT_ENV = "MS2FLOW_SIM_CALL_TIMEOUT_S"  # default per-call limit (unset: none; liveness is still polled)


class WorkerError(RuntimeError):
    """A simulator worker raised, died, or did not answer in time."""

    def __init__(self, message: str, *, worker: int | None = None, pid: int | None = None,
                 exc_type: str | None = None, exc_message: str | None = None, worker_traceback: str = ""):
        super().__init__(message)
        self.worker, self.pid = worker, pid
        self.exc_type, self.exc_message, self.worker_traceback = exc_type, exc_message, worker_traceback


def function_ref(fn: str | Callable) -> str:
    return fn if isinstance(fn, str) else wire.ref_of(fn)


class _Worker:
    """One worker process and its two pipe ends (requests out, replies in)."""

    def __init__(self, index: int, python: str):
        self.index, self.python = index, python
        child_read, self.write_fd = os.pipe()
        self.read_fd, child_write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [python, "-m", "ms2core.workers.worker", "--read-fd", str(child_read), "--write-fd",
                 str(child_write), "--parent-pid", str(os.getpid())],
                pass_fds=(child_read, child_write), stdin=subprocess.DEVNULL, env=worker_environment(),
            )
        finally:
            os.close(child_read)
            os.close(child_write)
        self.info: dict = {}

    @property
    def name(self) -> str:
        return f"simulator worker {self.index} (pid {self.proc.pid}, {self.python})"

    def send(self, message: dict) -> None:
        try:
            wire.write_frame(self.write_fd, message)
        except (BrokenPipeError, OSError) as exc:
            raise self.died(f"could not be sent work ({exc})") from exc

    def died(self, what: str) -> WorkerError:
        code = self.proc.poll()
        how = "is still running" if code is None else (f"was killed by signal {-code}" if code < 0
                                                       else f"exited with status {code}")
        return WorkerError(f"{self.name} {what}; it {how} (its stderr is above)", worker=self.index,
                           pid=self.proc.pid)

    def receive(self) -> Any:
        try:
            return wire.read_frame(self.read_fd)
        except EOFError as exc:
            try:
                self.proc.wait(timeout=CLOSE_TIMEOUT_S)  # so that the error can say how it ended
            except subprocess.TimeoutExpired:
                pass
            raise self.died("closed its pipe") from exc

    def close_fds(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _wait_readable(workers: list[_Worker], deadline: float | None) -> list[_Worker]:
    """Workers with a reply ready; raises WorkerError for a dead worker or a passed deadline."""
    poller = select.poll()  # not select.select: descriptors may be numbered above 1024
    for w in workers:
        poller.register(w.read_fd, select.POLLIN)
    while True:
        timeout = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
        ready = {fd for fd, _ in poller.poll(timeout * 1000)}  # POLLHUP too: receive() then names the death
        if ready:
            return [w for w in workers if w.read_fd in ready]
        for w in workers:
            if w.proc.poll() is not None:
                raise w.died("died before answering")
        if deadline is not None and time.monotonic() >= deadline:
            raise WorkerError(f"no answer from {', '.join(w.name for w in workers)} within the time limit",
                              worker=workers[0].index, pid=workers[0].proc.pid)


def raise_worker_error(worker: _Worker, error: dict):
    """Raise the exception a worker reported: its own typed error for Ms2Error, else WorkerError."""
    trace = error.get("traceback", "")
    ms2 = error.get("ms2")
    if ms2:
        try:
            cls = wire.resolve(ms2["ref"])
        except (ImportError, AttributeError):
            cls = None
        if isinstance(cls, type) and issubclass(cls, Ms2Error):
            try:
                exc = cls(ms2["message"], hint=ms2["hint"])
            except TypeError:
                exc = None
            if exc is not None:
                exc.worker_traceback = trace
                exc.add_note(f"(raised in {worker.name})")
                raise exc
    raise WorkerError(f"{worker.name} failed with {error['name']}: {error['message']}\n"
                      f"--- traceback in the worker ---\n{trace}", worker=worker.index, pid=worker.proc.pid,
                      exc_type=error["type"], exc_message=error["message"], worker_traceback=trace)


class SimPool:
    """``num_workers`` simulator processes (0 = run the work in this process), kept for the pool's lifetime."""

    def __init__(self, num_workers: int, python: str | None = None, requires: Iterable[str] = BASE_MODULES,
                 start_timeout_s: float = START_TIMEOUT_S, call_timeout_s: float | None = None):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.python = resolve_sim_python(python)
        if self.python is not None and num_workers == 0:
            num_workers = 1  # another interpreter cannot run work in this process
        self.num_workers = num_workers
        self.requires = tuple(requires)
        if call_timeout_s is None and os.environ.get(CALL_TIMEOUT_ENV):
            try:
                call_timeout_s = float(os.environ[CALL_TIMEOUT_ENV])
            except ValueError:
                raise ConfigError(f"${CALL_TIMEOUT_ENV}={os.environ[CALL_TIMEOUT_ENV]!r} is not a number of seconds",
                                  hint="e.g. 600, or unset it for no per-call limit") from None
        self.start_timeout_s, self.call_timeout_s = start_timeout_s, call_timeout_s
        self._cache = EnvCache()
        self._workers: list[_Worker] = []
        self._started = self._closed = False

    @property
    def inline(self) -> bool:
        return self.num_workers == 0

    @property
    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    @property
    def worker_info(self) -> list[dict]:
        """What each worker said when it started: pid, python and numpy versions, executable, code_root."""
        return [w.info for w in self._workers]

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> SimPool:
        if self._closed:
            raise WorkerError("this simulator pool is closed (closed by its owner, or after a worker failed); "
                              "work needs a new SimPool")
        if self._started:
            return self
        self._started = True
        if self.inline:
            return self
        python = self.python or sys.executable
        if self.python is not None:
            check_interpreter(python, self.requires)
        try:
            self._workers = [_Worker(i, python) for i in range(self.num_workers)]
            deadline = time.monotonic() + self.start_timeout_s
            waiting = list(self._workers)
            while waiting:
                for w in _wait_readable(waiting, deadline):
                    w.info = w.receive()
                    check_code_root(w.name, w.info.get("code_root"), w.info.get("source_digest"))
                    waiting.remove(w)
        except BaseException:
            self.close(ABORT_GRACE_S)
            raise
        return self

    def close(self, grace_s: float = CLOSE_TIMEOUT_S) -> None:
        """Ask every worker to exit; terminate (then kill) those still running after ``grace_s``."""
        if self._closed:
            return
        self._closed = True
        self._cache.close()
        for w in self._workers:
            try:
                wire.write_frame(w.write_fd, {"op": "close"})
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        for w in self._workers:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.terminate()
                try:
                    w.proc.wait(timeout=CLOSE_TIMEOUT_S / 2)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait(timeout=CLOSE_TIMEOUT_S)
            w.close_fds()

    def __enter__(self) -> SimPool:
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        self.close(CLOSE_TIMEOUT_S if exc_type is None else ABORT_GRACE_S)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # -- work ------------------------------------------------------------------------------------------
    def _deadline(self) -> float | None:
        return None if self.call_timeout_s is None else time.monotonic() + self.call_timeout_s

    def _run_inline(self, fn: str | Callable, args: tuple) -> Any:
        target = wire.resolve(fn) if isinstance(fn, str) else fn
        with using(self._cache):
            return target(*args)

    def call_each(self, fn: str | Callable, args_per_worker: list[tuple]) -> list[Any]:
        """Call ``fn(*args_per_worker[i])`` on worker i, all at once; the results in worker order."""
        self.start()
        if self.inline:
            return [self._run_inline(fn, tuple(a)) for a in args_per_worker]
        if len(args_per_worker) != self.num_workers:
            raise ValueError(f"call_each needs one argument tuple per worker ({self.num_workers}), "
                             f"got {len(args_per_worker)}")
        ref = function_ref(fn)
        try:
            for w, args in zip(self._workers, args_per_worker):
                w.send({"op": "call", "fn": ref, "args": list(args)})
            replies: dict[int, dict] = {}
            deadline = self._deadline()
            while len(replies) < self.num_workers:
                pending = [w for w in self._workers if w.index not in replies]
                for w in _wait_readable(pending, deadline):
                    replies[w.index] = w.receive()
        except BaseException:
            self.close(ABORT_GRACE_S)  # the lock-step is broken: no worker can be trusted to be at the same step
            raise
        for w in self._workers:
            if "error" in replies[w.index]:
                raise_worker_error(w, replies[w.index]["error"])
        return [replies[w.index]["ok"] for w in self._workers]

    def imap(self, fn: str | Callable, items: Iterable[Any]) -> Iterator[Any]:
        """``fn(item)`` for each item, spread over the workers, one item per call; results in input order.

        A work function's error is raised when its item's turn comes (earlier results are yielded first).
        """
        self.start()
        if self.inline:
            for item in items:
                yield self._run_inline(fn, (item,))
            return
        ref = function_ref(fn)
        todo = iter(enumerate(items))
        busy: dict[int, int] = {}        # worker index -> item index
        done: dict[int, dict] = {}       # item index -> reply
        next_out, exhausted = 0, False
        idle = list(self._workers)
        try:
            while True:
                while idle and not exhausted:
                    nxt = next(todo, None)
                    if nxt is None:
                        exhausted = True
                        break
                    w = idle.pop(0)
                    w.send({"op": "call", "fn": ref, "args": [nxt[1]]})
                    busy[w.index] = nxt[0]
                while next_out in done:
                    reply = done.pop(next_out)
                    if "error" in reply:
                        raise_worker_error(self._workers[reply["_worker"]], reply["error"])
                    next_out += 1
                    yield reply["ok"]
                if not busy:
                    if exhausted:
                        return
                    continue
                for w in _wait_readable([self._workers[i] for i in busy], self._deadline()):
                    reply = w.receive()
                    reply["_worker"] = w.index
                    done[busy.pop(w.index)] = reply
                    idle.append(w)
        except GeneratorExit:
            self.close(ABORT_GRACE_S)  # abandoned half-way: items still running are not waited for
            raise
        except BaseException:
            self.close(ABORT_GRACE_S)
            raise
