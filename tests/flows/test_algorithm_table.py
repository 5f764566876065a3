"""The algorithm table (ms2core.algos.table.ALGORITHMS) is what the CLI, the stage, the flows, ``ms2 run`` and
prefect.yaml offer: an algorithm added to the table but missing in one of them fails here, naming it."""

from pathlib import Path

import pytest
import yaml

from ms2core.algos.table import ALGORITHMS, algorithm
from ms2core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_algorithm_has_its_flow():
    from flows.train import TRAIN_FLOWS

    assert set(TRAIN_FLOWS) == set(ALGORITHMS)
    for name, spec in ALGORITHMS.items():
        assert TRAIN_FLOWS[name].name == spec.flow_name == f"train-{name}"


def test_prefect_yaml_deploys_every_algorithm_on_the_gpu_pool():
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    train = {d["entrypoint"]: d for d in deployments if d["entrypoint"].startswith("flows/train.py:train_")}
    assert set(train) == {f"flows/train.py:train_{name}" for name in ALGORITHMS}, "prefect.yaml vs ALGORITHMS"
    assert all(d["work_pool"]["name"] == "gpu" for d in train.values())


def test_cli_and_ms2_run_offer_every_algorithm():
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.commands.pipeline import FLOW_CONFIGS

    for name, spec in ALGORITHMS.items():
        assert FLOW_CONFIGS[spec.flow_name][1] is spec.config_model
    out = CliRunner().invoke(app, ["train", "--help"]).output
    assert all(name in out for name in ALGORITHMS)


def test_unknown_algorithm_is_a_config_error_naming_the_known_ones():
    from pipelines.train import run

    with pytest.raises(ConfigError, match="unknown algorithm 'ppo2'") as info:
        run({}, algo="ppo2")
    assert "ppo" in info.value.hint
    assert algorithm("dapg").needs_demos and not algorithm("sac").needs_demos and not algorithm("bc").online
