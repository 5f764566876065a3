"""Which ms2flow code simulator workers run: the parent's checkout, ahead of any copy in their interpreter.

A simulator runtime packs a copy of ms2flow's code; workers started from a checkout must run the
checkout's (a pure-Python change needs no new pack), and a worker that imported other code is refused.
The fast tier uses this interpreter behind wrapper scripts (a different path = "another interpreter");
tests/test_runtime.py checks the same with the real unpacked runtime (sim).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from ms2core.errors import ConfigError
from ms2core.workers import SimPool
from ms2core.workers.interpreter import code_root

CHECKOUT = Path(__file__).resolve().parents[1]


def _wrapper(tmp_path: Path, name: str, pythonpath: str | None = None) -> str:
    """A shell script that runs this interpreter, optionally putting ``pythonpath`` in front of everything."""
    line = f'PYTHONPATH="{pythonpath}"\nexport PYTHONPATH\n' if pythonpath else ""
    path = tmp_path / name
    path.write_text(f'#!/bin/sh\n{line}exec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return str(path)


def test_workers_of_another_interpreter_import_the_parents_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("MS2FLOW_SIM_PYTHON", raising=False)
    assert code_root() == str(CHECKOUT)
    with SimPool(1, python=_wrapper(tmp_path, "python-other")) as pool:
        assert pool.python is not None  # really the other-interpreter path
        assert pool.worker_info[0]["code_root"] == str(CHECKOUT)


def test_a_worker_running_another_copy_of_the_code_is_refused(tmp_path, monkeypatch):
    # What a runtime whose packed copy won over the checkout would look like.
    monkeypatch.delenv("MS2FLOW_SIM_PYTHON", raising=False)
    packed = tmp_path / "packed"
    for pkg in ("ms2core", "storage_schemas"):
        shutil.copytree(CHECKOUT / pkg, packed / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    pool = SimPool(1, python=_wrapper(tmp_path, "python-packed", pythonpath=str(packed)))
    with pytest.raises(ConfigError) as info:
        pool.start()
    assert str(packed) in str(info.value) and str(CHECKOUT) in str(info.value)
    assert pool.worker_pids and all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pool.worker_pids)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
