"""The simulator worker pool: its wire, workers in another interpreter, errors, and no orphans."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ms2core.errors import ConfigError
from ms2core.obs import ObservationProcessor
from ms2core.rollout import EnvFactory, VectorEnv
from ms2core.workers import SimPool, WorkerError, check_interpreter
from ms2core.workers import wire
from storage_schemas.dataset import ObsProcessConfig
from storage_schemas.env import EnvConfig
from tests.conftest import REPO_ROOT


# --------------------------------------------------------------------------- work functions (module level: importable)
def square(x):
    return {"x": x, "squares": np.arange(x, dtype=np.int64) ** 2}


def raise_value_error(x):
    raise ValueError(f"bad item {x}")


def raise_config_error(x):
    raise ConfigError(f"item {x} is wrong", hint="use another item")


def die(x):
    os._exit(7)


def sleep_long(x):
    time.sleep(600)


def cached_counter(x):
    from ms2core.envs.cache import env_cache

    counter = env_cache().get("counter", lambda: [0])
    counter[0] += 1
    return os.getpid(), counter[0]


@dataclasses.dataclass(frozen=True)
class _Frozen:
    name: str
    values: tuple


# --------------------------------------------------------------------------- the wire
def _frame_round_trip(value):
    read_fd, write_fd = os.pipe()
    try:
        wire.write_frame(write_fd, value)
        return wire.read_frame(read_fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_wire_round_trips_arrays_bit_for_bit_and_objects_by_name():
    nan_payload = np.array([np.nan, -0.0, np.inf], np.float32)
    nan_payload.view(np.uint32)[0] |= 0x1234  # a NaN with a payload: only a byte copy keeps it
    value = {
        "f32": nan_payload, "f16": np.arange(6, dtype=np.float16).reshape(2, 3), "u8": np.arange(5, dtype=np.uint8),
        "bool": np.array([True, False]), "big_endian": np.arange(3, dtype=">i4"), "empty": np.zeros((0, 3)),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "scalar": np.float32(1.5),
        "tuple": (1, "a", None), 7: "int key", "path": Path("/tmp/x"), "fn": square, "bytes": b"\x00\xff",
        "model": EnvConfig(env_id="LiftCube-v0", backend="fake", camera_size=(32, 32)),
        "dataclass": _Frozen("n", (1, 2)), "rng": np.random.default_rng(3),
        "processor": ObservationProcessor(ObsProcessConfig(obs_mode="pointcloud"), seed=4),
    }
    out = _frame_round_trip(value)
    for key in ("f32", "f16", "u8", "bool", "big_endian", "empty", "fortran"):
        assert out[key].dtype == value[key].dtype and out[key].shape == value[key].shape
        assert out[key].tobytes() == np.ascontiguousarray(value[key]).tobytes()
    assert out["scalar"] == np.float32(1.5) and out["scalar"].dtype == np.float32
    assert out["tuple"] == (1, "a", None) and out[7] == "int key" and out["path"] == Path("/tmp/x")
    assert out["fn"] is square and out["bytes"] == b"\x00\xff"
    assert out["model"] == value["model"] and out["dataclass"] == _Frozen("n", (1, 2))
    assert out["rng"].random() == np.random.default_rng(3).random()
    assert isinstance(out["processor"], ObservationProcessor) and out["processor"].cfg == value["processor"].cfg


def test_wire_frames_larger_than_the_pipe_with_more_buffers_than_one_writev_round_trip():
    import threading

    rng = np.random.default_rng(0)
    value = {"big": rng.standard_normal((700, 1000)).astype(np.float32),  # 2.8 MB: many partial pipe writes
             "many": [rng.integers(0, 255, size=int(n), dtype=np.uint8) for n in rng.integers(0, 40, size=1500)]}
    read_fd, write_fd = os.pipe()
    try:
        writer = threading.Thread(target=wire.write_frame, args=(write_fd, value))
        writer.start()
        out = wire.read_frame(read_fd)
        writer.join(timeout=30)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert out["big"].tobytes() == value["big"].tobytes() and out["big"].flags.writeable
    assert len(out["many"]) == 1500 and all(a.tobytes() == b.tobytes() for a, b in zip(out["many"], value["many"]))


def test_wire_header_is_plain_json_not_pickle():
    import json

    read_fd, write_fd = os.pipe()
    wire.write_frame(write_fd, {"a": np.ones(2, np.float32)})
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as stream:
        data = stream.read()
    (length,) = wire.HEADER.unpack(data[:4])
    header = json.loads(data[4:4 + length])
    assert header == {"body": {"a": {"~a": [0, "<f4", [2]]}}, "sizes": [8]}
    assert data[4 + length:] == np.ones(2, np.float32).tobytes()


def test_wire_refuses_what_has_no_import_path():
    with pytest.raises(wire.WireError, match="no import path"):
        wire.encode(lambda x: x, [])
    with pytest.raises(wire.WireError, match="dtype object"):
        wire.encode(np.array([object()]), [])


# --------------------------------------------------------------------------- the pool
def test_imap_keeps_input_order_and_each_worker_keeps_its_cache():
    with SimPool(2) as pool:
        assert [r["x"] for r in pool.imap(square, range(7))] == list(range(7))
        np.testing.assert_array_equal(list(pool.imap(square, [5]))[0]["squares"], np.arange(5) ** 2)
        counts = list(pool.imap(cached_counter, range(6)))
        assert {pid for pid, _ in counts} <= set(pool.worker_pids)
        per_worker = {}
        for pid, n in counts:
            per_worker.setdefault(pid, []).append(n)
        assert all(ns == list(range(1, len(ns) + 1)) for ns in per_worker.values())  # one cache per worker, kept
        assert {info["numpy"] for info in pool.worker_info} == {np.__version__}


def test_in_process_pool_closes_its_own_cache():
    pool = SimPool(0)
    with pool:
        assert list(pool.imap(cached_counter, range(3)))[-1] == (os.getpid(), 3)
    assert len(pool._cache) == 0
    from ms2core.envs.cache import PROCESS_CACHE

    assert PROCESS_CACHE.peek("counter") is None  # the pool's work did not touch the process's cache


def test_worker_exception_is_named_with_its_traceback():
    with SimPool(2) as pool:
        with pytest.raises(WorkerError, match=r"simulator worker \d \(pid \d+, .*\) failed with ValueError: "
                                              r"bad item 3") as info:
            list(pool.imap(raise_value_error, [3]))
    err = info.value
    assert err.exc_type == "builtins.ValueError" and err.exc_message == "bad item 3"
    assert "in raise_value_error" in err.worker_traceback and "Traceback (most recent call last)" in err.worker_traceback


def test_typed_errors_come_back_as_themselves():
    with SimPool(1) as pool, pytest.raises(ConfigError, match="item 2 is wrong") as info:
        list(pool.imap(raise_config_error, [2]))
    assert info.value.hint == "use another item" and "raise_config_error" in info.value.worker_traceback


def test_a_worker_that_dies_is_reported_not_waited_for():
    with SimPool(2) as pool, pytest.raises(WorkerError, match="exited with status 7"):
        pool.call_each(die, [(0,), (1,)])


def test_a_hung_worker_is_reported_when_a_call_limit_is_set(monkeypatch):
    monkeypatch.setenv("MS2FLOW_SIM_CALL_TIMEOUT_S", "0.5")
    pool = SimPool(1)
    with pool, pytest.raises(WorkerError, match="no answer from simulator worker 0"):
        list(pool.imap(sleep_long, [0]))
    assert pool._closed and all(w.proc.poll() is not None for w in pool._workers)


def test_rollout_worker_crash_names_the_exception():
    factory = EnvFactory(EnvConfig(env_id="PickCube-v0", backend="fake"), obs_processor=_exploding_processor)
    with pytest.raises(WorkerError, match="failed with KeyError: 'no_such_key'"):
        VectorEnv(factory, num_envs=2, num_procs=2).reset()


def _exploding_processor(raw):
    raise KeyError("no_such_key")


# --------------------------------------------------------------------------- another interpreter
@pytest.fixture
def other_python_path():
    """This interpreter under another path (a sibling symlink in the venv): the pool treats it as foreign."""
    here = Path(sys.executable)
    for name in ("python3", "python3.11", "python"):
        candidate = here.with_name(name)
        if candidate.exists() and os.path.abspath(candidate) != os.path.abspath(here):
            return str(candidate)
    pytest.skip("no second path to this interpreter")


def _rollout_trace(num_procs, sim_python=None, steps=12):
    factory = EnvFactory(EnvConfig(env_id="PickCube-v0", obs_mode="pointcloud", control_mode="pd_ee_delta_pos",
                                   max_episode_steps=5, backend="fake"))
    rng = np.random.default_rng(0)
    out = []
    with VectorEnv(factory, num_envs=3, num_procs=num_procs, seed=11, sim_python=sim_python) as vec:
        out.append(vec.reset())
        for _ in range(steps):
            batch = vec.step(rng.uniform(-1, 1, (3, vec.action_dim)))
            out.append((batch.obs, batch.next_obs, batch.rewards, batch.terminated, batch.truncated,
                        [dataclasses.astuple(e) for e in batch.episodes]))
        spaces = (vec.raw_observation_space, vec.action_low, vec.action_high, vec.num_procs)
    return out, spaces


def _assert_identical(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_identical(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_identical(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    else:
        assert a == b


def test_rollouts_in_another_interpreter_are_bit_identical_to_in_process(other_python_path):
    inline, inline_spaces = _rollout_trace(0)
    foreign, foreign_spaces = _rollout_trace(0, sim_python=other_python_path)
    workers, _ = _rollout_trace(2)
    assert foreign_spaces[3] == 1 and inline_spaces[3] == 0  # another interpreter: one worker holds the envs
    assert any(step[5] for step in inline[1:])  # episodes finished, so their statistics are compared too
    _assert_identical(inline, foreign)
    _assert_identical(inline, workers)
    assert inline_spaces[0] == foreign_spaces[0]
    _assert_identical(inline_spaces[1:3], foreign_spaces[1:3])


def test_evaluation_in_another_interpreter_matches_in_process(tmp_path, other_python_path):
    from ms2core.evaluation import evaluate
    from storage_schemas.training import EvalConfig
    from tests.test_eval import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "c.pt", head="gaussian")
    runs = [evaluate(EvalConfig(checkpoint=str(ckpt), num_episodes=3, seed=5, sample_mode="sample",
                                output_dir=str(tmp_path / name), **kw), progress=False)
            for name, kw in [("here", {}), ("there", dict(sim_python=other_python_path))]]
    # num_procs=1 with another interpreter: the episodes run in one worker process, not here
    assert [e.model_dump(exclude={"video"}) for e in runs[0].episodes] == \
           [e.model_dump(exclude={"video"}) for e in runs[1].episodes]


def test_an_interpreter_without_the_simulator_is_named(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    python = str(bare / "bin" / "python")
    with pytest.raises(ConfigError, match=rf"sim_python '{python}'.*Python 3\.\d+.*lacks numpy") as info:
        check_interpreter(python, ("numpy", "ms2core", "sapien"))
    assert "sapien" in info.value.message and "MS2FLOW_SIM_PYTHON" in info.value.hint
    with pytest.raises(ConfigError, match="lacks numpy"):
        VectorEnv(EnvFactory(EnvConfig(env_id="PickCube-v0", backend="fake")), num_envs=1, sim_python=python)
    with pytest.raises(ConfigError, match="does not exist"):
        SimPool(1, python=str(tmp_path / "no-such-python")).start()


def test_sim_python_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MS2FLOW_SIM_PYTHON", str(tmp_path / "missing-python"))
    with pytest.raises(ConfigError, match="missing-python.*does not exist"):
        VectorEnv(EnvFactory(EnvConfig(env_id="PickCube-v0", backend="fake")), num_envs=1)


def thread_limits():
    return [os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")]


def test_workers_get_one_blas_thread_unless_told(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # the learner's setting must not reach the simulator workers
    monkeypatch.delenv("MS2FLOW_SIM_THREADS", raising=False)
    with SimPool(1) as pool:
        assert pool.call_each(thread_limits, [()]) == [["1", "1", "1"]]
    monkeypatch.setenv("MS2FLOW_SIM_THREADS", "3")
    with SimPool(1) as pool:
        assert pool.call_each(thread_limits, [()]) == [["3", "3", "3"]]


def test_source_digest_follows_the_packages_contents(tmp_path):
    from ms2core.workers.interpreter import source_digest

    for package in ("ms2core", "storage_schemas"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "a.py").write_text("x = 1\n")
    before = source_digest(str(tmp_path))
    (tmp_path / "ms2core" / "notes.txt").write_text("not code")
    assert source_digest(str(tmp_path)) == before
    (tmp_path / "storage_schemas" / "a.py").write_text("x = 2\n")
    assert source_digest(str(tmp_path)) != before


def test_a_worker_started_after_the_source_changed_is_refused(monkeypatch):
    from ms2core.workers import interpreter

    # as if this process had imported ms2flow before an edit / git pull that the new worker now imports
    monkeypatch.setattr(interpreter, "STARTED_WITH", "00000000")
    with pytest.raises(ConfigError, match=r"source under .* changed since this process started") as err:
        SimPool(1).start()
    assert "--resume-from" in err.value.hint


# --------------------------------------------------------------------------- no orphans
_OWNER = textwrap.dedent("""
    import sys, time
    from ms2core.workers import SimPool
    with SimPool(2) as pool:
        print(" ".join(map(str, pool.worker_pids)), flush=True)
        time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], limit_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and any(map(_alive, pids)):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_no_worker_outlives_its_parent(how):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # SIGINT at its default in the owner: a suite started as a background job of a non-interactive shell
    # inherits SIGINT ignored (POSIX), and the owner would sleep through the signal
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], stdout=subprocess.PIPE, text=True, env=env,
                             cwd=REPO_ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2 and all(map(_alive, pids))
        owner.send_signal(how)
        owner.wait(timeout=60)
        assert _wait_gone(pids) == [], f"workers {pids} outlived their parent after signal {how!r}"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=30)
