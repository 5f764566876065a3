"""Which Python the simulator workers run on: ``sim_python`` in a config, ``MS2FLOW_SIM_PYTHON``, or this one.

The learner may be any Python with torch (a 3.12 + CUDA host); the simulator
needs SAPIEN 2.2 (Python 3.11). A foreign interpreter is probed once before
workers start, with a stdlib-only script, so that one without the simulator
fails with its path and the missing modules, not with a worker's traceback.

Which ms2flow code the workers run (the code overlay): when this process imports ms2flow
from a checkout (not from a site-packages), ``worker_environment`` puts that checkout first on
the workers' ``PYTHONPATH``. ``PYTHONPATH`` precedes site-packages in ``sys.path``, so workers
started with a simulator runtime's ``bin/python`` import the checkout's ``ms2core``,
``storage_schemas`` and ``pipelines``, not the copy packed into the runtime: a pure-Python change
needs no new ``ms2 runtime pack``. Each worker reports the code it imported in its greeting
(``code_root``) and the pool refuses a worker whose code is not the parent's (``check_code_root``).
The same rule holds for anything started directly with a runtime's python: with
``PYTHONPATH=<checkout>`` it runs the checkout's code (``ms2-sim doctor`` prints which).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from ms2core.errors import ConfigError

ENV_VAR = "MS2FLOW_SIM_PYTHON"
#: Modules every worker imports (the wire, the env layer, the configs).
BASE_MODULES = ("numpy", "pydantic", "gymnasium", "ms2core", "storage_schemas")
#: What sapien-backend work needs in addition.
SIMULATOR_MODULES = ("sapien", "mani_skill2")
PROBE_TIMEOUT_S = 60.0

_PROBE = (
    "import importlib, json, platform, sys\n"
    "missing = []\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "    except ModuleNotFoundError as exc:\n"
    "        missing.append(name if exc.name == name else f'{name} (needs {exc.name})')\n"
    "    except Exception as exc:\n"
    "        missing.append(f'{name} ({type(exc).__name__}: {exc})')\n"
    "print(json.dumps({'python': platform.python_version(), 'missing': missing}))\n"
)


def resolve_sim_python(configured: str | None = None) -> str | None:
    """The interpreter to start workers with, or None for this one (no config value, no env variable)."""
    value = configured or os.environ.get(ENV_VAR) or None
    if value is None:
        return None
    path = os.path.abspath(os.path.expanduser(value))
    return None if path == os.path.abspath(sys.executable) else path


def requirements(backend: str | None) -> tuple[str, ...]:
    return BASE_MODULES + (SIMULATOR_MODULES if backend in (None, "sapien") else ())


#: threads each simulator worker's BLAS/OpenMP may use (default 1)
SIM_THREADS_ENV = "MS2FLOW_SIM_THREADS"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_environment() -> dict[str, str]:
    """This process's environment, with ms2flow's source root on PYTHONPATH where it is a checkout and
    ``$MS2FLOW_SIM_THREADS`` (default 1) BLAS/OpenMP threads.

    ``PYTHONSAFEPATH=1`` (Python >= 3.11; older ones ignore it): ``python -m`` would otherwise put the
    working directory first on ``sys.path``, so a worker's code would depend on where it was started."""
    env = dict(os.environ)
    env["PYTHONSAFEPATH"] = "1"
    # One simulator per process, the parallelism is the processes': BLAS/OpenMP thread pools sized to the
    # machine in every worker (OpenBLAS threads spin after each call) oversubscribe the cores the other
    # workers step on. The raw-loop baselines of the benchmarks ran with the same limit.
    threads = env.get(SIM_THREADS_ENV, "1")
    for var in THREAD_VARS:
        env[var] = threads
    root = Path(__file__).resolve().parents[2]
    if root.name != "site-packages":  # never hand the learner's site-packages to another Python
        parts = [str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(root)]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def code_root() -> str:
    """The directory this process imports ms2flow's packages from (a checkout, or a site-packages)."""
    return str(Path(__file__).resolve().parents[2])


#: the packages a simulator worker imports from the checkout (their source must be the parent's)
WORKER_PACKAGES = ("ms2core", "storage_schemas")


def source_digest(root: str | None = None) -> str:
    """crc32 over the ``.py`` files (paths and contents) of WORKER_PACKAGES under ``root`` (default: this
    process's code root); a few milliseconds."""
    import zlib

    base = Path(root or code_root())
    crc = 0
    for package in WORKER_PACKAGES:
        for path in sorted((base / package).rglob("*.py")):
            crc = zlib.crc32(str(path.relative_to(base)).encode(), crc)
            try:
                crc = zlib.crc32(path.read_bytes(), crc)
            except OSError:
                crc = zlib.crc32(b"<unreadable>", crc)
    return f"{crc:08x}"


#: this process's source digest, taken when it first imported the worker machinery (before any pool)
STARTED_WITH = source_digest()


def check_code_root(worker_name: str, worker_root: str | None, worker_digest: str | None = None) -> None:
    """Refuse a worker that imported ms2flow from elsewhere than this process (where this is a checkout)."""
    mine = code_root()
    if worker_root is None or Path(mine).name == "site-packages":
        return
    if worker_root != mine:
        raise ConfigError(
            f"{worker_name} imports ms2flow's code from {worker_root}, this process from {mine}: the two sides "
            "would run different code", hint="leave PYTHONPATH to ms2flow (it puts this checkout first for the "
            "workers), or run both from the same checkout or installation")
    if worker_digest is not None and worker_digest != STARTED_WITH:
        raise ConfigError(
            f"ms2flow's source under {mine} changed since this process started (digest {STARTED_WITH}, now "
            f"{worker_digest}: an edit, git pull or checkout during the run): {worker_name} would run other code "
            "than this process", hint="start the command again (a training run continues from its checkpoint "
            "with --resume-from; a render reuses its committed ranges)")


def check_interpreter(python: str, modules: tuple[str, ...] = BASE_MODULES) -> str:
    """Probe ``python``; return its version, or raise ConfigError naming it and what it lacks."""
    return _probe(python, tuple(modules))


@lru_cache(maxsize=None)
def _probe(python: str, modules: tuple[str, ...]) -> str:
    where = f"sim_python {python!r} (from the config's sim_python or ${ENV_VAR})"
    hint = (f"point sim_python / ${ENV_VAR} at an interpreter with ms2flow's simulator packages (the project's "
            ".venv/bin/python, or a simulator runtime's python), or leave both unset to use this one")
    if not os.path.exists(python):
        raise ConfigError(f"{where} does not exist", hint=hint)
    if not os.access(python, os.X_OK):
        raise ConfigError(f"{where} is not executable", hint=hint)
    try:
        done = subprocess.run([python, "-c", _PROBE, *modules], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, env=worker_environment(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{where} could not be run: {exc}", hint=hint) from exc
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (done.stderr or done.stdout).strip()[-400:]
        raise ConfigError(f"{where} is not a Python 3 interpreter ms2flow can use (exit {done.returncode}): {tail}",
                          hint=hint) from None
    if found["missing"]:
        raise ConfigError(f"{where}, Python {found['python']}, cannot run simulator workers: it lacks "
                          + ", ".join(found["missing"]), hint=hint)
    return found["python"]
