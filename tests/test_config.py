from __future__ import annotations

import pytest

from ms2core.config import dump_config, load_config
from ms2core.errors import ConfigError
from storage_schemas.env import EnvConfig, StrictModel


class Outer(StrictModel):
    env: EnvConfig = EnvConfig()
    batch_size: int = 256
    extra: dict = {}


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env:\n  env_id: LiftCube-v0\nbatch_size: 64\n")
    cfg = load_config(Outer, path, ["env.obs_mode=pointcloud", "batch_size=32", "extra.a.b=[1, 2]"])
    assert cfg.env.env_id == "LiftCube-v0" and cfg.env.obs_mode == "pointcloud"
    assert cfg.batch_size == 32 and cfg.extra == {"a": {"b": [1, 2]}}
    out = dump_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(Outer, out) == cfg


def test_typo_in_key_names_it_and_the_allowed_keys():
    with pytest.raises(ConfigError, match="'batch_sise'") as exc:
        load_config(Outer, None, ["batch_sise=3"])
    assert "batch_size" in exc.value.hint
    with pytest.raises(ConfigError, match="'obs_mod'") as exc:
        load_config(Outer, None, ["env.obs_mod=state"])
    assert "obs_mode" in exc.value.hint


def test_bad_value_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match=r"env.obs_mode: .*got 'pointclouds'"):
        load_config(Outer, None, ["env.obs_mode=pointclouds"])
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        (tmp_path / "b.yaml").write_text("bogus: 1\n")
        load_config(Outer, tmp_path / "b.yaml")
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(Outer, None, ["batch_size"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")
