"""``ms2 doctor`` renders a real frame, and names the missing piece when rendering cannot work."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.sim


def _ms2(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=300,
    )


def test_doctor_renders_a_frame():
    result = _ms2("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "llvmpipe" in result.stdout or "GPU" in result.stdout
    assert "base_camera" in result.stdout and "rgb mean" in result.stdout
    assert "ok: simulation and rendering work" in result.stdout


def test_doctor_without_the_layer_says_what_is_missing(tmp_path):
    env = {"MS2FLOW_VK_LAYER_DATA_DIR": str(tmp_path), "MS2FLOW_VK_CPU_LAYER": "", "XDG_DATA_DIRS": "/usr/share"}
    result = _ms2("doctor", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "ms2flow Vulkan layer is not built" in result.stderr
    assert "scripts/setup" in result.stderr


def test_setup_is_idempotent_and_fast():
    if os.path.realpath(sys.prefix) != os.path.realpath(REPO_ROOT / ".venv"):
        pytest.skip("tests are not running from this checkout's .venv")
    if os.geteuid() != 0:
        pytest.skip("scripts/setup checks system packages as root")
    stamp = REPO_ROOT / ".venv" / ".ms2flow-install-stamp"
    before = stamp.stat().st_mtime
    start = time.perf_counter()
    result = subprocess.run(["bash", "scripts/setup"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < 30, f"second set-up took {elapsed:.1f} s"
    assert "Python packages up to date" in result.stdout
    assert stamp.stat().st_mtime == before
