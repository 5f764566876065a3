"""The layer contract of DESIGN.md, enforced by import-linter, plus the no-simulator-at-import rule."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_import_linter_contracts_hold():
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: " in result.stdout and " broken" in result.stdout
    assert "0 broken" in result.stdout


def test_nothing_imports_the_simulator_at_import_time():
    import pkgutil

    packages = ["storage_schemas", "ms2core", "pipelines", "flows", "dashboards"]
    modules = []
    for pkg in packages:
        mod = __import__(pkg)
        modules.append(pkg)
        modules += [m.name for m in pkgutil.walk_packages(mod.__path__, prefix=f"{pkg}.")]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sapien', 'mani_skill2'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"simulator imported at import time: {result.stdout}{result.stderr}"
