"""Issue 16, training: run directories never shared, validation gates training, env settings checked
against the data, NaN stops training, a full disk is a clear error, config messages name their source.

Stores come from the real writers on the fake backend (pipelines.demos -> replay -> render -> validate,
tests/train_fixtures.py); CLI cases run ``flows.cli.main`` in-process for the real exit code and message.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from ms2core.algos import bc
from ms2core.checkpoint import load_checkpoint
from ms2core.config import load_config
from ms2core.errors import ConfigError, DatasetError, DiskFullError, TrainingDivergedError
from pipelines import train as stage
from storage_schemas.dataset import MANIFEST_ATTR, DatasetManifest
from storage_schemas.training import BCConfig
from tests.train_fixtures import build_validated_store, copy_store
from tests.validate_fixtures import write_rows

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def template_store(tmp_path_factory):
    return build_validated_store(tmp_path_factory.mktemp("ms2data"), "state", num_episodes=6)


@pytest.fixture
def store(template_store, tmp_path):
    """A private copy (with its report) each test may break."""
    return copy_store(template_store, tmp_path / "data" / "pick.state.zarr")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "ms2data"))
    return tmp_path / "ms2data"


def bc_cfg(store, steps=10, **extra) -> BCConfig:
    train = dict(num_steps=steps, batch_size=8, lr=1e-3, log_every_steps=5, checkpoint_every_steps=5)
    train.update(extra.pop("train", {}))
    net = {"hidden_sizes": [16], **extra.pop("net", {})}
    run = {"device": "cpu", "torch_threads": 1, "run_name": "X", **extra}
    return BCConfig.model_validate(dict(env=dict(backend="fake", max_episode_steps=30), dataset=dict(paths=[store]),
                                        net=net, train=train, run=run))


def cli(capsys, *args) -> tuple[int, str]:
    """``ms2 ...`` through flows.cli.main (exit code and the error paragraph, as a user sees them)."""
    from flows.cli import main

    argv = sys.argv
    sys.argv = ["ms2", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return code, "".join((out.out + out.err).split())  # whitespace dropped: rich wraps long lines


def has(out: str, text: str) -> bool:
    return "".join(text.split()) in out


def bc_cli_args(store, *more):
    return ["train", "bc", "--set", f"dataset.paths=[{store}]", "--set", "env.backend=fake",
            "--set", "train.num_steps=10", "--set", "train.log_every_steps=5", "--set", "train.checkpoint_every_steps=5",
            "--set", "train.batch_size=8", "--set", "run.torch_threads=1", "--set", "net.hidden_sizes=[16]",
            "--device", "cpu", *more]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- 1. run directories
def test_two_runs_with_the_same_run_name_never_share_a_directory(capsys, data_dir, store):
    code, out = cli(capsys, *bc_cli_args(store, "--set", "run.run_name=X"))
    assert code == 0, out
    group = data_dir / "runs" / "bc" / "PickCube-v0" / "X"
    (first,) = group.iterdir()
    before = snapshot(first)
    assert len((first / "metrics.jsonl").read_text().splitlines()) == 2
    code, out = cli(capsys, *bc_cli_args(store, "--set", "run.run_name=X", "--set", "train.lr=5e-4"))
    assert code == 0, out
    second = next(p for p in group.iterdir() if p != first)
    assert snapshot(first) == before  # byte for byte
    assert (second / "checkpoints" / "final.pt").exists() and (second / "train_result.json").exists()
    assert json.loads((second / "train_result.json").read_text())["run_dir"] == str(second)


def test_identical_rerun_returns_the_finished_run_and_a_changed_input_trains_again(data_dir, store, monkeypatch):
    first = stage.run(bc_cfg(store), progress=False)
    again = stage.run(bc_cfg(store), progress=False)
    assert again.skipped and again.run_dir == first.run_dir
    # the same config on re-validated, different data is another training
    root = zarr.open_group(store, mode="r+")
    manifest = DatasetManifest.model_validate(root.attrs[MANIFEST_ATTR])
    manifest.options.seed = 1  # as a re-render with other options would
    root.attrs.put({MANIFEST_ATTR: manifest.model_dump(mode="json")})  # drops the validation record
    from pipelines.validate import run as validate
    from storage_schemas.validation import ValidationConfig

    assert validate(ValidationConfig(path=store, progress=False, recheck=True)).report.status == "passed"
    third = stage.run(bc_cfg(store), progress=False)
    assert not third.skipped and third.run_dir != first.run_dir


def test_explicit_run_dir_holding_a_run_is_refused_unless_overwrite(tmp_path, data_dir, store, monkeypatch):
    run_dir = tmp_path / "myrun"
    stage.run(bc_cfg(store, run_dir=str(run_dir)), progress=False)
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match="already holds a run") as info:
        stage.run(bc_cfg(store, run_dir=str(run_dir), train={"lr": 5e-4}), progress=False)
    assert "--overwrite" in info.value.hint and snapshot(run_dir) == before

    # --overwrite whose new run fails: the old run comes back untouched
    real_train = bc.train

    def failing(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bc, "train", failing)
    with pytest.raises(KeyboardInterrupt):
        stage.run(bc_cfg(store, run_dir=str(run_dir), overwrite=True, train={"lr": 5e-4}), progress=False)
    assert snapshot(run_dir) == before and not list(tmp_path.glob(".myrun*"))
    monkeypatch.setattr(bc, "train", real_train)

    result = stage.run(bc_cfg(store, run_dir=str(run_dir), overwrite=True, train={"lr": 5e-4}), progress=False)
    assert result.run_dir == str(run_dir) and snapshot(run_dir) != before
    assert json.loads((run_dir / "resolved_config.json").read_text())["train"]["lr"] == 5e-4
    assert not list(tmp_path.glob(".myrun.replaced-*"))  # the old run is gone once the new one finished


def test_resume_continues_in_the_checkpoints_run_dir_and_appends_metrics(data_dir, store):
    first = stage.run(bc_cfg(store, steps=10), progress=False)
    metrics = Path(first.run_dir) / "metrics.jsonl"
    before = metrics.read_text()
    resumed = stage.run(bc_cfg(store, steps=20), resume_from=first.final_checkpoint, progress=False)
    assert resumed.run_dir == first.run_dir and resumed.start_update == 10
    after = metrics.read_text()
    assert after.startswith(before) and [json.loads(ln)["step"] for ln in after.splitlines()] == [5, 10, 15, 20]
    assert len(list((data_dir / "runs" / "bc" / "PickCube-v0" / "X").iterdir())) == 1


def test_online_runs_get_new_directories_and_resume_appends(data_dir):
    from storage_schemas.rl import PPOConfig

    cfg = PPOConfig.model_validate(dict(
        rollout=dict(env=dict(backend="fake", control_mode="pd_ee_delta_pos", max_episode_steps=10), num_envs=2),
        net=dict(hidden_sizes=[8]), ppo=dict(rollout_steps=20, minibatch_size=10, critic_warmup_epochs=0),
        run=dict(total_env_steps=40, log_every_steps=20)))
    a = stage.run(cfg, algo="ppo", progress=False)
    b = stage.run(cfg.model_copy(update={"ppo": cfg.ppo.model_copy(update={"lr": 1e-4})}), algo="ppo", progress=False)
    assert a.run_dir != b.run_dir and Path(a.run_dir).parent == Path(b.run_dir).parent
    metrics = Path(a.run_dir) / "metrics.jsonl"
    before = metrics.read_text()
    longer = cfg.model_copy(update={"run": cfg.run.model_copy(update={"total_env_steps": 80})})
    resumed = stage.run(longer, algo="ppo", resume_from=a.final_checkpoint, progress=False)
    assert resumed.run_dir == a.run_dir and resumed.env_steps == 80
    assert metrics.read_text().startswith(before) and len(metrics.read_text()) > len(before)


def test_a_fresh_run_that_fails_before_any_checkpoint_leaves_no_directory(data_dir, store):
    cfg = bc_cfg(store, net={"head": "gaussian", "hidden_sizes": [16]}, train={"standardize_action_loss": True})
    with pytest.raises(ConfigError, match="standardize_action_loss"):
        stage.run(cfg, progress=False)
    assert not list((data_dir / "runs" / "bc" / "PickCube-v0" / "X").iterdir())


@pytest.mark.parametrize("error", [RuntimeError, ConfigError])  # a crash, or a refusal found mid-run
def test_a_run_that_crashes_after_training_keeps_its_metrics_and_says_why(data_dir, monkeypatch, error):
    from ms2core.algos import ppo
    from storage_schemas.rl import PPOConfig

    cfg = PPOConfig.model_validate(dict(
        rollout=dict(env=dict(backend="fake", control_mode="pd_ee_delta_pos", max_episode_steps=10), num_envs=2),
        net=dict(hidden_sizes=[8]), ppo=dict(rollout_steps=20, minibatch_size=10, critic_warmup_epochs=0),
        run=dict(total_env_steps=200, log_every_steps=20, checkpoint_every_steps=0)))  # no checkpoint before the end
    real_update, calls = ppo.ppo_update, []

    def update_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise error("simulated crash in the fourth update")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(ppo, "ppo_update", update_then_crash)
    with pytest.raises(error, match="fourth update"):
        stage.run(cfg, algo="ppo", progress=False)
    (run_dir,) = (data_dir / "runs" / "ppo" / "PickCube-v0" / "seed0").iterdir()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [20, 40, 60]  # what it trained is still on record
    assert "simulated crash" in (run_dir / "failure.json").read_text()
    assert not (run_dir / "train_result.json").exists()


# --------------------------------------------------------------------------- 2. validation gates training
def _set_manifest(store, **changes):
    root = zarr.open_group(store, mode="r+")
    raw = dict(root.attrs[MANIFEST_ATTR])
    raw.update(changes)
    root.attrs.put({MANIFEST_ATTR: raw})  # (drops the validation record, as the renderer does)


def _validate(store):
    from pipelines.validate import run as validate
    from storage_schemas.validation import ValidationConfig

    return validate(ValidationConfig(path=store, progress=False, recheck=True)).report


def test_never_validated_store_is_refused(capsys, data_dir, store):
    _set_manifest(store)
    code, out = cli(capsys, *bc_cli_args(store))
    assert code == 2 and has(out, "dataset.paths[0]") and has(out, "has not been validated")
    assert has(out, f"ms2 validate {store}") and "Traceback" not in out
    assert not (data_dir / "runs").exists()


def test_failed_store_is_refused_with_its_check_codes(capsys, data_dir, store):
    write_rows(store, "data/obs/state", 3, np.nan)  # through the real writer: the inventory stays consistent
    assert _validate(store).status == "failed"
    code, out = cli(capsys, *bc_cli_args(store))
    assert code == 2 and has(out, "failed validation") and has(out, "non_finite") and has(out, f"ms2 validate {store}")


def test_store_changed_since_validation_is_refused(data_dir, store):
    ends = zarr.open_array(f"{store}/meta/episode_ends", mode="r+")
    ends[-1] = ends[-1] - 1
    with pytest.raises(DatasetError, match="changed since it was validated"):
        stage.run(bc_cfg(store), progress=False)


def test_half_rendered_store_is_refused_even_if_validation_passed(data_dir, store):
    root = zarr.open_group(store, mode="r")
    manifest = DatasetManifest.model_validate(root.attrs[MANIFEST_ATTR])
    for ep in manifest.episodes[4:]:
        ep.committed = False
    ends = root["meta/episode_ends"][:]
    manifest.n_committed_episodes, manifest.n_committed_rows, manifest.complete = 4, int(ends[3]), False
    _set_manifest(store, **manifest.model_dump(mode="json"))
    _validate(store)  # passes with an 'incomplete' warning, or fails with the store helper's 'incomplete' error
    with pytest.raises(DatasetError, match="incomplete: 4 of 6 episodes"):
        stage.run(bc_cfg(store), progress=False)


def test_force_trains_and_is_recorded_in_the_run(capsys, data_dir, store):
    write_rows(store, "data/actions", 2, 5.0)  # outside the action bounds (through the real writer)
    assert _validate(store).status == "failed"
    code, out = cli(capsys, *bc_cli_args(store, "--force"))
    assert code == 0 and has(out, "warning: --force") and has(out, "action_bounds"), out
    (run_dir,) = (data_dir / "runs" / "bc" / "PickCube-v0").glob("*/*")
    result = json.loads((run_dir / "train_result.json").read_text())
    assert result["forced_inputs"] and "failed validation" in result["forced_inputs"][0]
    assert json.loads((run_dir / "resolved_config.json").read_text())["run"]["force"] is True


def test_demo_datasets_of_dapg_are_gated_too(data_dir, store):
    from storage_schemas.rl import DAPGConfig

    _set_manifest(store)
    cfg = DAPGConfig.model_validate(dict(rollout=dict(env=dict(backend="fake")), demos=dict(path=store)))
    with pytest.raises(DatasetError, match="training input demos.path .* has not been validated"):
        stage.run(cfg, algo="dapg", progress=False)


# --------------------------------------------------------------------------- 3. env settings vs the data
@pytest.mark.parametrize("override, message", [
    ("env.env_id=PickCub-v0", "unknown env.env_id 'PickCub-v0' hint: did you mean PickCube-v0"),
    ("env.control_mode=pd_ee_delta_poze", "unknown env.control_mode for PickCube-v0 'pd_ee_delta_poze'"),
    ("env.control_mode=pd_ee_delta_pos", "env.control_mode='pd_ee_delta_pos' does not match dataset.paths[0]"),
    ("env.obs_mode=pointcloud", "env.obs_mode='pointcloud' does not match dataset.paths[0]"),
    ("env.env_id=LiftCube-v0", "rendered with env_id 'PickCube-v0'"),
])
def test_env_settings_that_do_not_fit_the_dataset_are_refused(capsys, data_dir, store, override, message):
    code, out = cli(capsys, *bc_cli_args(store, "--set", override))
    assert code == 2 and has(out, message), out
    assert not (data_dir / "runs").exists()


def test_online_rl_checks_env_settings_before_spawning_workers(data_dir, monkeypatch):
    import ms2core.algos.ppo as ppo
    from storage_schemas.rl import PPOConfig

    def no_workers(*a, **k):
        raise AssertionError("workers were spawned")

    monkeypatch.setattr(ppo, "vector_env_from_config", no_workers)
    cfg = load_config(PPOConfig, None, ["rollout.env.backend=fake", "rollout.env.control_mode=pd_ee_delta_poze",
                                        "rollout.num_envs=2", "rollout.num_procs=2"])
    with pytest.raises(ConfigError, match="rollout.env.control_mode"):
        stage.run(cfg, algo="ppo", progress=False)
    with pytest.raises(ConfigError, match="rollout.env.control_mode"):
        ppo.train_ppo(cfg)


# --------------------------------------------------------------------------- 4. NaN stops training
def test_bc_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(data_dir, store, monkeypatch):
    real_loss, calls = bc.bc_loss, {"n": 0}

    def loss_nan_from_step_13(*args, **kwargs):
        calls["n"] += 1
        out = real_loss(*args, **kwargs)
        return bc.BCLoss(out.loss * float("nan"), out.action_mse) if calls["n"] >= 13 else out

    monkeypatch.setattr(bc, "bc_loss", loss_nan_from_step_13)
    with pytest.raises(TrainingDivergedError, match="nan at step 13") as info:
        stage.run(bc_cfg(store, steps=20), progress=False)
    assert "learning rate" in info.value.hint and f"ms2 validate {store} --recheck" in info.value.hint
    (run_dir,) = (data_dir / "runs" / "bc" / "PickCube-v0" / "X").iterdir()
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["ckpt_00000005.pt", "ckpt_00000010.pt"] and "ckpt_00000010.pt" in info.value.hint
    model = load_checkpoint(run_dir / "checkpoints" / "ckpt_00000010.pt")["model"]
    assert all(torch.isfinite(v).all() for v in model.values() if v.is_floating_point())
    failure = json.loads((run_dir / "failure.json").read_text())
    assert failure["status"] == "diverged" and failure["step"] == 13 and not (run_dir / "train_result.json").exists()


def test_bc_huge_learning_rate_is_a_one_paragraph_error(capsys, data_dir, store):
    code, out = cli(capsys, *bc_cli_args(store, "--set", "train.lr=1e30"))
    assert code == 2 and has(out, "training diverged") and has(out, "train.lr=1e+30") and "Traceback" not in out


def _online_cfg(algo, tmp_path, demo_store=None):
    from storage_schemas.rl import DAPGConfig, GAILConfig, PPOConfig, SACConfig

    env = dict(backend="fake", max_episode_steps=10)
    run = dict(total_env_steps=80, log_every_steps=20, checkpoint_every_steps=20, run_dir=str(tmp_path / algo))
    sac = dict(learning_starts=20, batch_size=8, buffer_capacity=200, updates_per_env_step=0.5)
    ppo = dict(rollout_steps=20, minibatch_size=10, critic_warmup_epochs=0)
    common = dict(rollout=dict(env=env, num_envs=2), net=dict(hidden_sizes=[8]), run=run)
    demos = dict(path=demo_store)
    return {"ppo": lambda: PPOConfig.model_validate(dict(**common, ppo=ppo)),
            "dapg": lambda: DAPGConfig.model_validate(dict(**common, ppo=ppo, demos=demos)),
            "sac": lambda: SACConfig.model_validate(dict(**common, sac=sac)),
            "gail": lambda: GAILConfig.model_validate(dict(**common, sac=sac, demos=demos,
                                                           gail=dict(discriminator_batch_size=8, discriminator_updates_per_env_step=1.0)))}[algo]()


@pytest.mark.parametrize("algo, target", [("ppo", "ppo.ppo_policy_loss"), ("dapg", "dapg.demo_nll"),
                                          ("sac", "sac.sac_actor_loss"), ("gail", "gail.discriminator_loss")])
def test_online_nan_loss_stops_and_the_checkpoint_stays_finite(tmp_path, template_store, monkeypatch, algo, target):
    import importlib

    from ms2core.algos._common import load_checkpoint as load_online

    module_name, fn_name = target.split(".")
    module = importlib.import_module(f"ms2core.algos.{module_name}")
    real, calls = getattr(module, fn_name), {"n": 0}

    def nan_later(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 6:
            return (type(out)(out.loss * float("nan"), *list(vars(out).values())[1:])
                    if hasattr(out, "loss") else out * float("nan"))
        return out

    monkeypatch.setattr(module, fn_name, nan_later)
    cfg = _online_cfg(algo, tmp_path, template_store)
    with pytest.raises(TrainingDivergedError, match="is nan") as info:
        getattr(importlib.import_module(f"ms2core.algos.{algo}"), f"train_{algo}")(cfg)
    assert "env steps" in info.value.message and "learning rate" in info.value.hint
    ckpt = tmp_path / algo / "checkpoint.pt"
    if ckpt.exists():  # every checkpoint written is finite
        state = load_online(ckpt, algo)
        weights = state.get("actor") or state["agent"]["actor"]
        assert all(torch.isfinite(v).all() for v in weights.values())


def test_a_checkpoint_with_nan_weights_is_never_written(tmp_path):
    from ms2core.algos._common import save_checkpoint

    good = save_checkpoint(tmp_path / "checkpoint.pt", {"algo": "ppo", "actor": {"w": torch.ones(2)}, "env_steps": 4})
    before = good.read_bytes()
    with pytest.raises(TrainingDivergedError, match="actor.w not finite at step 8"):
        save_checkpoint(good, {"algo": "ppo", "actor": {"w": torch.tensor([1.0, float("inf")])}, "env_steps": 8})
    assert good.read_bytes() == before


# --------------------------------------------------------------------------- 5. full disk
def test_enospc_during_a_checkpoint_write_is_a_clear_error_and_keeps_the_last_checkpoint(data_dir, store,
                                                                                      monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def full_disk_on_second_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk_on_second_save)
    with pytest.raises(DiskFullError, match="no space left on the device writing checkpoint") as info:
        stage.run(bc_cfg(store, steps=20), progress=False)
    assert "free space" in info.value.hint
    (run_dir,) = (data_dir / "runs" / "bc" / "PickCube-v0" / "X").iterdir()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt_00000005.pt"]  # no temp left
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(run_dir / "checkpoints" / "ckpt_00000005.pt")["updates"] == 5
    assert json.loads((run_dir / "failure.json").read_text())["error"] == "DiskFullError"


def test_enospc_on_metrics_is_a_disk_full_error(tmp_path, monkeypatch):
    from ms2core.metrics import JsonlSink

    sink = JsonlSink(tmp_path / "metrics.jsonl")

    class FullFile:
        closed = False

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    sink._file = FullFile()
    with pytest.raises(DiskFullError, match="metrics"):
        sink.log({"loss": 1.0}, 1)


# --------------------------------------------------------------------------- 6. config messages
def test_bad_set_value_is_reported_against_the_set_not_the_yaml(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(BCConfig, REPO / "configs/bc/pickcube_state.yaml", ["train.lr=-1"])
    assert "from --set train.lr=-1" in info.value.message and "pickcube_state.yaml" not in info.value.message


def test_yaml_key_typo_lists_the_allowed_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  num_step: 5\n")
    with pytest.raises(ConfigError, match="unknown key 'train.num_step'") as info:
        load_config(BCConfig, path)
    assert str(path) in info.value.message
    assert "did you mean num_steps" in info.value.hint and "batch_size" in info.value.hint


def test_a_refused_resume_leaves_the_finished_run_untouched(data_dir, store):
    from ms2core.errors import CheckpointError

    first = stage.run(bc_cfg(store, steps=10), progress=False)
    before = snapshot(Path(first.run_dir))
    with pytest.raises(CheckpointError, match="different config"):
        stage.run(bc_cfg(store, steps=20, train={"lr": 5e-4}), resume_from=first.final_checkpoint, progress=False)
    assert snapshot(Path(first.run_dir)) == before  # no failure.json, nothing truncated
