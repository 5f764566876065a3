"""`ms2 export-policy` from an MLflow registry alias, then `ms2 evaluate --policy` of the package."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tests.conftest import REPO_ROOT
from tests.flows.conftest import build_fake_dataset


def test_export_from_registry_and_evaluate_the_package(prefect_server, data_dir, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.train import train_bc
    from storage_schemas.training import BCConfig

    store = build_fake_dataset("state", num_episodes=8)
    cfg = BCConfig.model_validate({
        "env": {"backend": "fake"}, "dataset": {"paths": [store], "mode": "ram", "prefetch_batches": 0},
        "train": {"num_steps": 300, "batch_size": 32, "log_every_steps": 100},
        "run": {"device": "cpu", "torch_threads": 1, "run_name": "export"}})
    summary = train_bc(cfg, eval_episodes=5)
    out = tmp_path / "policy"
    runner = CliRunner()
    result = runner.invoke(app, ["export-policy", "models:/ms2-PickCube-v0-bc@champion", "--out", str(out)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {"policy.py", "policy.ts", "policy.json", "vendor", "requirements.txt"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "policy.json").read_text())
    assert meta["env_id"] == "PickCube-v0" and meta["obs_keys"] == ["state"]

    # The package runs without ms2flow on the path: only torch/numpy/pydantic and its vendored files.
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from policy import Policy; "
            "p = Policy('PickCube-v0'); a = p.act(np.zeros(51)); print(p.get_control_mode(), a.shape, "
            "[m for m in sys.modules if m.split('.')[0] in ('prefect', 'mlflow', 'flows', 'pipelines')])")
    isolated = subprocess.run([sys.executable, "-I", "-c", code, str(out)], capture_output=True, text=True,
                              cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert isolated.returncode == 0, isolated.stderr
    assert "pd_ee_delta_pose (7,) []" in isolated.stdout

    evaluated = runner.invoke(app, ["evaluate", "--policy", str(out), "--num", "5", "--backend", "fake"],
                              catch_exceptions=False)
    assert evaluated.exit_code == 0, evaluated.output
    assert "success_once" in evaluated.output
    from ms2core.export import evaluate_exported

    direct = evaluate_exported(out, num_episodes=5, backend="fake")
    assert np.isclose(direct.success_once.mean, summary["success_rate"])  # same policy, same seeds
