"""The one way from CLI options to a config (flows/commands/_options.py): option defaults < YAML file <
options given on the command line < --set, the same in every command. Each stage's ``run`` is replaced by
one that records the config it was given, so these tests check exactly what a command would run."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows.cli import app
from ms2core.errors import ConfigError


class Captured(Exception):
    def __init__(self, cfg):
        self.cfg = cfg


def _capture(*args, **kwargs):
    raise Captured(args[0])


def run_cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, Captured):
        return result.exception.cfg
    raise AssertionError(f"the stage was not reached: {result.exception!r}\n{result.output}")


@pytest.fixture
def yaml_file(tmp_path):
    def write(text: str):
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return str(path)
    return write


def test_validate_flag_equal_to_its_default_overrides_the_yaml(monkeypatch, yaml_file, tmp_path):
    """The bug of issue 17 item 7: --replay-sample 0 was dropped because 0 is the default."""
    monkeypatch.setattr("pipelines.validate.run", _capture)
    config = yaml_file("replay_sample: 5\nworkers: 2\nsuccess_only: false\n")
    store = str(tmp_path / "d.zarr")
    assert run_cli("validate", store, "--config", config).replay_sample == 5
    cfg = run_cli("validate", store, "--config", config, "--replay-sample", "0", "--success-only")
    assert cfg.replay_sample == 0 and cfg.success_only is True and cfg.workers == 2 and cfg.path == store
    assert run_cli("validate", store, "-c", config, "-k", "0", "--set", "replay_sample=3").replay_sample == 3
    assert run_cli("validate", store).replay_sample == 0  # no YAML: the option's default


def test_render_options_reach_nested_keys_and_beat_the_yaml(monkeypatch, yaml_file, tmp_path):
    monkeypatch.setattr("pipelines.render.run", _capture)
    config = yaml_file("workers: 3\noverwrite: true\noptions:\n  max_episodes: 4\n  obs:\n    n_points: 64\n")
    source = str(tmp_path / "demo.h5")
    cfg = run_cli("render", source, "-c", config)
    assert (cfg.source, cfg.workers, cfg.overwrite, cfg.options.max_episodes) == (source, 3, True, 4)
    cfg = run_cli("render", source, "-c", config, "--workers", "0", "--obs-mode", "state", "--no-overwrite")
    assert (cfg.workers, cfg.overwrite, cfg.options.obs.obs_mode, cfg.options.obs.n_points) == (0, False, "state", 64)
    assert run_cli("render", source, "--workers", "0", "--set", "workers=2").workers == 2


def test_demos_and_replay_share_the_precedence(monkeypatch, yaml_file, tmp_path):
    monkeypatch.setattr("pipelines.demos.run", _capture)
    config = yaml_file("env_id: LiftCube-v0\nnum_episodes: 7\nnum_workers: 2\n")
    cfg = run_cli("demos", "generate", "-c", config, "-n", "3")
    assert (cfg.env_id, cfg.num_episodes, cfg.num_workers) == ("LiftCube-v0", 3, 2)
    monkeypatch.setattr("pipelines.replay.run", _capture)
    config = yaml_file(f"input: {tmp_path / 'a.h5'}\ntarget_control_mode: pd_ee_delta_pos\nmax_episodes: 9\n")
    cfg = run_cli("replay", str(tmp_path / "b.h5"), "-c", config, "--count", "2")
    assert (cfg.input, cfg.target_control_mode, cfg.max_episodes) == (str(tmp_path / "b.h5"), "pd_ee_delta_pos", 2)


def test_evaluate_reads_a_yaml_and_its_given_defaults_win(monkeypatch, yaml_file, tmp_path):
    monkeypatch.setattr("pipelines.evaluate.run", _capture)
    config = yaml_file(f"checkpoint: {tmp_path / 'final.pt'}\nnum_episodes: 5\nseed: 7\n")
    cfg = run_cli("evaluate", "-c", config)
    assert (cfg.checkpoint, cfg.num_episodes, cfg.seed) == (str(tmp_path / "final.pt"), 5, 7)
    cfg = run_cli("evaluate", "-c", config, "--num", "100", "--seed", "0", "--checkpoint", str(tmp_path / "b.pt"))
    assert (cfg.checkpoint, cfg.num_episodes, cfg.seed) == (str(tmp_path / "b.pt"), 100, 0)
    assert run_cli("evaluate", "--checkpoint", "x.pt").num_episodes == 100  # the option's default, no YAML


def test_a_bad_value_names_its_origin(monkeypatch, yaml_file, tmp_path):
    monkeypatch.setattr("pipelines.validate.run", _capture)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "d.zarr"), "--set", "replay_sample=-1"])
    assert isinstance(result.exception, ConfigError) and "from --set replay_sample=-1" in str(result.exception)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "d.zarr"), "-c", yaml_file("replay_sampel: 1\n")])
    assert isinstance(result.exception, ConfigError) and "replay_sampel" in str(result.exception)
