"""Data-parallel learners on the devices of one host (ManiSkill2-Learn's ``--gpu-ids``): ``run.devices``.

    run:
      devices: [0, 1]     # two learners on cuda:0 and cuda:1 (NCCL)
      devices: 2          # two learners of run.device's kind: on a CPU two processes (gloo), on CUDA cuda:0,1
      devices: [cpu, cpu] # the same as 2 on a CPU

Who does what::

    rank 0 = the calling process          ranks 1..W-1 = spawned interpreters (torch.multiprocessing spawn)
    ├─ simulator (PPO/DAPG rollouts, evaluation)   the same train function, with a Learners of their rank,
    ├─ metrics sink, progress bar                  no files, no sink, no simulator (PPO: a stub with the
    └─ every file: config, metrics, checkpoints    env's spaces), gradients all-reduced with rank 0's

Semantics: the **global batch is kept**. ``train.batch_size`` (BC) and ``ppo.minibatch_size`` are the
sizes of the whole step, split into equal shards, one per rank (each rank reads only its rows of every
global batch); gradients are averaged, so W learners take the same steps as one process with the same seed
(within float summation order). ManiSkill2-Learn instead multiplies its batch sizes by the number of GPUs:
to get that, multiply the batch size yourself. Checkpoints are the single-process format, written by rank 0,
and resume on any number of learners.

Every wait has a timeout (``run.ddp_timeout_s``): the rendezvous, each collective. A rank that raises or dies
stops the run: the others are terminated (no orphans), and the error names the rank and its exception (a
user error of a rank, e.g. TrainingDivergedError, is re-raised as that type).
"""

from __future__ import annotations

import ctypes
import datetime
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ms2core.errors import ConfigError, Ms2Error

HOST = "127.0.0.1"
POLL_S = 0.2
#: how long a finished rank 0 waits for the other ranks to exit, and a terminated rank to die, before SIGKILL
EXIT_GRACE_S = 30.0


class LearnerRankError(RuntimeError):
    """A learner rank failed with an exception that is not a user error (or died without one)."""

    def __init__(self, rank: int, world_size: int, what: str, rank_traceback: str | None = None):
        self.rank, self.world_size, self.rank_traceback = rank, world_size, rank_traceback
        super().__init__(f"learner rank {rank} of {world_size} failed: {what}")
        if rank_traceback:
            self.add_note(f"traceback of rank {rank}:\n{rank_traceback}")


# --------------------------------------------------------------------------- devices
def _device_entry(entry: int | str) -> torch.device:
    if isinstance(entry, int):
        return torch.device("cuda", entry)
    return torch.device(entry)


def learner_devices(run_cfg) -> list[torch.device]:
    """One device per learner rank from ``run.devices`` (None: the single ``run.device``); ConfigError naming
    the value where this host lacks them. The schema (storage_schemas.training.RunBase) checked the form."""
    from ms2core.algos._common import resolve_device

    value = getattr(run_cfg, "devices", None)
    if value is None:
        return [resolve_device(run_cfg.device)]
    if isinstance(value, int):
        base = resolve_device(run_cfg.device)
        devices = [base] * value if base.type == "cpu" else [torch.device("cuda", i) for i in range(value)]
    else:
        devices = [_device_entry(e) for e in value]
    cuda = [d for d in devices if d.type == "cuda"]
    if cuda and not torch.cuda.is_available():
        raise ConfigError(f"run.devices={value!r} asks for CUDA learners but CUDA is not available here",
                          hint=f"use run.devices={len(devices)} with run.device=cpu (CPU learners, gloo), or "
                               "train on a host with GPUs")
    if cuda and (missing := [d for d in cuda if d.index >= torch.cuda.device_count()]):
        raise ConfigError(f"run.devices={value!r}: {missing[0]} does not exist, this host has "
                          f"{torch.cuda.device_count()} GPU(s)",
                          hint=f"use device ids below {torch.cuda.device_count()}")
    return devices


def num_learners(run_cfg) -> int:
    value = getattr(run_cfg, "devices", None)
    return 1 if value is None else value if isinstance(value, int) else len(value)


def shard_rows(global_size: int, rank: int, world_size: int, what: str) -> slice:
    """Rank ``rank``'s rows of a global batch of ``global_size``: equal shards, so the mean of the shards'
    means is the global batch's mean. ConfigError naming ``what`` when the batch does not split evenly."""
    if global_size % world_size:
        raise ConfigError(f"{what}={global_size} does not split over {world_size} learners (run.devices)",
                          hint=f"use a multiple of {world_size}: the batch size is the global one, split "
                               "over the learners")
    size = global_size // world_size
    return slice(rank * size, (rank + 1) * size)


# --------------------------------------------------------------------------- the group of one rank
@dataclass
class Learners:
    """This process's place in the data-parallel group; every method is a collective (all ranks call it)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, global_size: int, what: str) -> slice:
        """This rank's rows of a global batch of ``global_size`` (see :func:`shard_rows`)."""
        return shard_rows(global_size, self.rank, self.world_size, what)

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The average of ``tensor`` over the ranks (a new tensor; detached)."""
        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Scalar statistics averaged over the ranks (same keys on every rank)."""
        keys = sorted(stats)
        values = self.mean(torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=self.device))
        return dict(zip(keys, values.cpu().tolist()))

    def sync_gradients(self, parameters) -> None:
        """Average the gradients of ``parameters`` over the ranks in one flat all-reduce (what DDP's reducer does,
        for update steps with several forward passes or parameters some steps leave unused: PPO's critic-only
        epochs, DAPG's demo term). Parameters without a gradient are skipped; the control flow is the same on
        every rank, so they are the same everywhere."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; the others pass None)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def broadcast_parameters(self, *modules: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers into every rank's modules (one start for all)."""
        with torch.no_grad():
            for module in modules:
                for tensor in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(tensor.data, src=0)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` under DistributedDataParallel (gradients averaged during backward, bucketed)."""
        from torch.nn.parallel import DistributedDataParallel

        import inspect

        ids = [self.device.index] if self.device.type == "cuda" else None
        # buffers (the state normaliser) are equal on every rank after DDP's start: no sync per forward
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else "broadcast_buffers")
        return DistributedDataParallel(module, device_ids=ids, **{no_sync: False})


def broadcast_parameters(learners: Learners | None, *modules: torch.nn.Module) -> None:
    if learners is not None and learners.world_size > 1:
        learners.broadcast_parameters(*modules)


# --------------------------------------------------------------------------- PPO: one simulator, on rank 0
class _MainEnv:
    """Rank 0's VectorEnv: it sends its spaces at start and every reset's observations to the other ranks."""

    def __init__(self, vec, learners: Learners):
        self._vec, self._learners = vec, learners
        learners.broadcast(_env_spaces(vec))

    def reset(self):
        return self._learners.broadcast(self._vec.reset())

    def __getattr__(self, name):
        return getattr(self._vec, name)


def _env_spaces(vec) -> dict:
    return dict(num_envs=vec.num_envs, raw_observation_space=vec.raw_observation_space, action_low=vec.action_low,
                action_high=vec.action_high, action_dim=vec.action_dim)


class FollowerEnv:
    """What a rank > 0 knows of rank 0's envs: their spaces and reset observations; it never steps."""

    def __init__(self, learners: Learners):
        self._learners = learners
        self.__dict__.update(learners.broadcast())

    def reset(self):
        return self._learners.broadcast()

    def to_policy_action(self, env_actions):
        from ms2core.rollout import VectorEnv

        return VectorEnv.to_policy_action(self, env_actions)

    def step(self, actions):
        raise RuntimeError("the envs live on learner rank 0; rank > 0 receives its rollouts")

    def close(self) -> None:
        pass


def vector_env(make: Callable, rollout_cfg, seed: int, learners: Learners | None):
    """The rollout envs ``make(rollout_cfg, seed)`` where the simulator runs (one process, or rank 0, which sends
    their spaces and observations to the others), a FollowerEnv with those spaces on every other rank."""
    if learners is None or learners.world_size == 1:
        return make(rollout_cfg, seed)
    if not learners.is_main:
        return FollowerEnv(learners)
    vec = make(rollout_cfg, seed)
    try:
        return _MainEnv(vec, learners)
    except BaseException:
        vec.close()
        raise


def shared_rollout(learners: Learners | None, collect: Callable, *args, episodes_out: list):
    """``collect(*args, episodes_out)`` on rank 0 (the simulator); its result and episodes on every rank."""
    if learners is None or learners.world_size == 1:
        return collect(*args, episodes_out)
    if learners.is_main:
        result = collect(*args, episodes_out)
        learners.broadcast((result, episodes_out))
        return result
    result, episodes = learners.broadcast()
    episodes_out.extend(episodes)
    return result


def follower_config(cfg):
    """The config of ranks > 0: no run directory (no files), no evaluation (rank 0 evaluates)."""
    quiet = {k: v for k, v in dict(run_dir=None, eval_episodes=0, eval_every_steps=0).items()
             if k in type(cfg.run).model_fields}
    return cfg.model_copy(update={"run": cfg.run.model_copy(update=quiet)})


# --------------------------------------------------------------------------- launch
@dataclass(frozen=True)
class _RankSpec:
    rank: int
    world_size: int
    device: str
    backend: str
    port: int
    timeout_s: float


def launch(entry: Callable, cfg, *, follower_cfg=None, main_only: dict | None = None, **shared) -> Any:
    """Run ``entry(cfg, learners=..., **shared)`` on every learner of ``cfg.run.devices`` and return rank 0's
    result: rank 0 in this process (also given ``main_only``, e.g. the metrics sink), ranks 1.. in spawned
    interpreters (given ``follower_cfg`` when set). ``entry`` and ``shared`` must pickle."""
    devices = learner_devices(cfg.run)
    world = len(devices)
    backend = "nccl" if devices[0].type == "cuda" else "gloo"
    timeout_s = float(cfg.run.ddp_timeout_s)
    store = dist.TCPStore(HOST, 0, world, is_master=True, timeout=datetime.timedelta(seconds=timeout_s),
                          wait_for_workers=False)  # port 0: the OS picks a free one, no race
    ctx = mp.get_context("spawn")
    supervisor = _Supervisor(world, ctx.SimpleQueue())
    try:
        for rank in range(1, world):
            spec = _RankSpec(rank, world, str(devices[rank]), backend, store.port, timeout_s)
            process = ctx.Process(target=_follower_main, name=f"ms2-learner-rank{rank}",
                                  args=(entry, follower_cfg or cfg, shared, spec, supervisor.errors))
            process.start()
            supervisor.processes[rank] = process
        supervisor.wait_until_ready(store, timeout_s)
        learners = _init_group(store, _RankSpec(0, world, str(devices[0]), backend, store.port, timeout_s))
        supervisor.start()
        try:
            result = entry(cfg, learners=learners, **shared, **(main_only or {}))
        except BaseException as exc:
            cause = supervisor.rank_failure(exc)
            if cause is not None:
                raise cause from exc
            raise
        supervisor.join_all(EXIT_GRACE_S)
        return result
    finally:
        supervisor.stop()
        if dist.is_initialized():
            dist.destroy_process_group()


def _init_group(store, spec: _RankSpec) -> Learners:
    device = torch.device(spec.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(spec.backend, store=store, rank=spec.rank, world_size=spec.world_size,
                            timeout=datetime.timedelta(seconds=spec.timeout_s))
    return Learners(spec.rank, spec.world_size, device)


def _follower_main(entry: Callable, cfg, shared: dict, spec: _RankSpec, errors) -> None:
    """A spawned rank: rendezvous, run ``entry``, report any exception to rank 0's supervisor."""
    _die_with_parent()
    # torchrun's variables, for code that reads them
    os.environ.update(MASTER_ADDR=HOST, MASTER_PORT=str(spec.port), RANK=str(spec.rank),
                      WORLD_SIZE=str(spec.world_size), LOCAL_RANK=str(spec.rank))
    try:
        store = dist.TCPStore(HOST, spec.port, spec.world_size, is_master=False,
                              timeout=datetime.timedelta(seconds=spec.timeout_s))
        store.set(f"ms2/ready/{spec.rank}", "1")
        learners = _init_group(store, spec)
        entry(cfg, learners=learners, **shared)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to rank 0, which names it
        errors.put(_failure_report(spec.rank, exc))
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _die_with_parent() -> None:
    """SIGTERM this rank when rank 0's process dies, however it dies (Linux; elsewhere rank 0's exit kills it)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        os._exit(1)


def _failure_report(rank: int, exc: BaseException) -> dict:
    try:
        pickled = pickle.dumps(exc)
        pickle.loads(pickled)
    except Exception:  # noqa: BLE001 - an exception that does not travel: its text does
        pickled = None
    return dict(rank=rank, what=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(), pickled=pickled)


class _Supervisor:
    """Rank 0's view of the other ranks: rendezvous with a timeout, a watchdog thread that notices a rank that
    died, the error a failed rank reported, and no process left behind."""

    def __init__(self, world_size: int, errors):
        self.world_size, self.errors = world_size, errors
        self.processes: dict[int, Any] = {}
        self.reports: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _collect_reports(self) -> None:
        while not self.errors.empty():
            report = self.errors.get()
            self.reports.setdefault(report["rank"], report)

    def failed(self) -> LearnerRankError | Ms2Error | None:
        """The first failed rank's error (its report, or its exit code where it died without one)."""
        self._collect_reports()
        for rank in sorted(self.processes):
            process = self.processes[rank]
            if rank in self.reports:
                return self._error(self.reports[rank])
            if process.exitcode not in (None, 0):
                code = process.exitcode
                what = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                return LearnerRankError(rank, self.world_size, f"its process {what} (pid {process.pid})")
        return None

    def _error(self, report: dict) -> LearnerRankError | Ms2Error:
        exc = pickle.loads(report["pickled"]) if report["pickled"] is not None else None
        rank = report["rank"]
        if isinstance(exc, Ms2Error):  # a user error: the same type, naming the rank
            Ms2Error.__init__(exc, f"learner rank {rank} of {self.world_size}: {exc.message}", exc.hint)
            return exc
        return LearnerRankError(rank, self.world_size, report["what"], report["traceback"])

    def wait_until_ready(self, store, timeout_s: float) -> None:
        """Every spawned rank connected to the store, or the error of one that failed first."""
        keys = [f"ms2/ready/{rank}" for rank in self.processes]
        deadline = time.monotonic() + timeout_s
        while not store.check(keys):
            if (error := self.failed()) is not None:
                raise error
            if time.monotonic() > deadline:
                raise LearnerRankError(min(self.processes), self.world_size,
                                       f"it did not start within run.ddp_timeout_s={timeout_s:g} s")
            time.sleep(POLL_S)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="ms2-learner-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            if any(p.exitcode not in (None, 0) for p in self.processes.values()):
                _abort_collectives()  # rank 0 may be blocked in a collective with the dead rank
                return

    def rank_failure(self, exc: BaseException) -> LearnerRankError | Ms2Error | None:
        """The failure of another rank that made rank 0 fail with ``exc`` (None: rank 0's own failure).
        A user error of rank 0 is its own; a communication error waits briefly for the rank that caused it."""
        if isinstance(exc, Ms2Error):
            return None
        deadline = time.monotonic() + 5.0
        while (error := self.failed()) is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return error

    def join_all(self, timeout_s: float) -> None:
        """Rank 0 finished: the others exit too (they ran the same steps); any failure is raised."""
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
        if (error := self.failed()) is not None:
            raise error
        if alive := [rank for rank, p in self.processes.items() if p.is_alive()]:
            raise LearnerRankError(alive[0], self.world_size, f"it did not exit {timeout_s:g} s after rank 0 finished")

    def stop(self) -> None:
        """Terminate every rank still running (SIGTERM, then SIGKILL) and reap them all."""
        self._stop.set()
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + EXIT_GRACE_S
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


def _abort_collectives() -> None:
    """Unblock a collective waiting for a dead rank (NCCL would wait for its timeout; gloo notices the closed
    socket by itself). Best effort: private API of torch.distributed."""
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    if abort is None or not dist.is_initialized() or dist.get_backend() != "nccl":
        return
    try:
        abort()
    except Exception:  # noqa: BLE001 - the collective's own timeout still applies
        pass
