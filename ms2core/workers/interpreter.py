"""Which Python the simulator workers run on: ``sim_python`` in a config, ``MS2FLOW_SIM_PYTHON``, or this one.

The learner may be any Python with torch (a 3.12 + CUDA host); the simulator
needs SAPIEN 2.2 (Python 3.11). A foreign interpreter is probed once before
workers start, with a stdlib-only script, so that one without the simulator
fails with its path and the missing modules, not with a worker's traceback.
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


def worker_environment() -> dict[str, str]:
    """This process's environment, with ms2flow's source root on PYTHONPATH where it is a checkout."""
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    if root.name != "site-packages":  # never hand the learner's site-packages to another Python
        parts = [str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(root)]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


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
