"""Issue 16, demo pairs: outputs are immutable unless --overwrite (which keeps the old pair until the new one is
complete), every consumer (import, replay, render) refuses a pair that fails the demo-pair checks, a full disk
and damaged h5 metadata are clear errors with nothing left behind.

Bad pairs are good pairs written by the real writer (pipelines.demos / ms2core.trajectory), then corrupted with
h5py or by editing the json, so the checks are tested on files as they occur.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import ms2core.trajectory as trajectory
import ms2core.validation.demos as demo_checks
from ms2core.errors import DemoFileError
from ms2core.trajectory import DemoPair, demo_digest, pair_paths
from pipelines import demos, render, replay
from pipelines import validate as validate_stage
from storage_schemas.dataset import RenderConfig
from storage_schemas.demos import GenerateDemosConfig, ImportDemosConfig, MergeDemosConfig, ReplayConfig
from storage_schemas.validation import ValidationConfig


def generate(tmp_path, name="gen", **kw):
    cfg = GenerateDemosConfig(env_id="PickCube-v0", backend="fake", output=str(tmp_path / name), progress=False,
                              **{"num_episodes": 3, **kw})
    return demos.run(cfg)


def convert(path, **kw):
    return replay.run(ReplayConfig(input=str(path), backend="fake", progress=False,
                                   **{"target_control_mode": "pd_ee_delta_pose", **kw}))


def import_(path, **kw):
    return demos.import_demos(ImportDemosConfig(path=str(path), backend="fake", **kw))


def files_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return Path(generate(tmp_path_factory.mktemp("template")).h5_path)


@pytest.fixture
def pair(template, tmp_path) -> Path:
    """A fresh copy of a generated fake PickCube pair (3 episodes, pd_joint_pos, env states)."""
    for src in pair_paths(template):
        shutil.copy(src, tmp_path / src.name.replace("gen", "pick"))
    return tmp_path / "pick.h5"


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MS2FLOW_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def replace_array(h5_path: Path, key: str, change) -> None:
    with h5py.File(h5_path, "a") as f:
        value = change(f[key][()])
        del f[key]
        f[key] = value


def set_value(h5_path: Path, key: str, index, value) -> None:
    def change(a):
        a = a.copy()
        a[index] = value
        return a

    replace_array(h5_path, key, change)


def edit_json(h5_path: Path, change) -> None:
    js = pair_paths(h5_path)[1]
    raw = json.loads(js.read_text())
    change(raw)
    js.write_text(json.dumps(raw))


# --------------------------------------------------------------------------- #
# 1. outputs are immutable unless --overwrite
# --------------------------------------------------------------------------- #
def test_generate_refuses_an_existing_pair_of_other_inputs(tmp_path):
    first = generate(tmp_path, num_episodes=4)
    with pytest.raises(DemoFileError, match=r"(?s)gen\.h5 \(\+ \.json\) already exists.*--overwrite"):
        generate(tmp_path, num_episodes=2)
    with DemoPair(first.h5_path) as kept:
        assert len(kept) == 4 and demo_digest(first.h5_path) == first.digest
    again = generate(tmp_path, num_episodes=4)  # the same inputs: a no-op, not an error
    assert again.skipped and again.digest == first.digest


def test_overwrite_replaces_and_drops_the_stale_validation_report(tmp_path):
    first = generate(tmp_path, num_episodes=4)
    validate_stage.run(ValidationConfig(path=first.h5_path, progress=False))
    stale = tmp_path / "gen.validation.json"
    assert stale.exists()
    second = generate(tmp_path, num_episodes=2, overwrite=True)
    with DemoPair(second.h5_path) as new:
        assert len(new) == 2
    assert not stale.exists() and files_in(tmp_path) == ["gen.h5", "gen.json"]


def test_replay_refuses_an_existing_output_and_overwrite_replaces_it_with_its_report(pair, tmp_path):
    out = tmp_path / "out"
    first = convert(pair, output=str(out), max_episodes=3)
    with pytest.raises(DemoFileError, match="already exists"):
        convert(pair, output=str(out), max_episodes=2)
    assert first.report.num_episodes == 3 and demo_digest(out) == first.digest
    second = convert(pair, output=str(out), max_episodes=2, overwrite=True)
    saved = json.loads((tmp_path / "out.report.json").read_text())
    assert saved["num_episodes"] == 2 and second.report.num_episodes == 2


def test_replay_does_not_take_another_runs_report_for_its_own(pair, tmp_path):
    out = tmp_path / "out"
    first = convert(pair, output=str(out))
    report = tmp_path / "out.report.json"
    report.write_text(report.read_text().replace('"num_workers": 1', '"num_workers": 7'))  # not this pair's report
    again = convert(pair, output=str(out))  # same inputs: redone, not skipped with the wrong report
    assert not again.skipped and first.h5_path == again.h5_path and "\"num_workers\": 1" in report.read_text()


def test_import_and_merge_refuse_an_existing_pair_unless_overwrite(pair, tmp_path, data_dir):
    other = Path(generate(tmp_path, name="other", seed_start=40).h5_path)
    import_(pair, name="official")
    with pytest.raises(DemoFileError, match=r"(?s)already registered with different content.*--overwrite"):
        import_(other, name="official")
    registered = data_dir / "demos/PickCube-v0/official.h5"
    assert demo_digest(registered) == demo_digest(pair)
    import_(other, name="official", overwrite=True)
    assert demo_digest(registered) == demo_digest(other)

    merged = tmp_path / "merged"
    demos.merge(MergeDemosConfig(inputs=[str(pair), str(other)], output=str(merged)))
    with pytest.raises(DemoFileError, match="already exists"):
        demos.merge(MergeDemosConfig(inputs=[str(pair)], output=str(merged)))
    result = demos.merge(MergeDemosConfig(inputs=[str(pair)], output=str(merged), overwrite=True))
    assert result.num_episodes == 3


@pytest.mark.parametrize("die_at", [1, 2, 3, 4])
def test_overwrite_killed_at_any_rename_leaves_a_complete_pair(tmp_path, monkeypatch, die_at):
    """Kill the commit at each of its renames (old json aside, old h5 aside, new h5 in, new json in)."""
    first = generate(tmp_path, num_episodes=4)
    real_replace, calls = os.replace, []

    def replace_then_die(src, dst):
        calls.append((src, dst))
        if len(calls) == die_at:
            raise KeyboardInterrupt  # SIGKILL-like: no cleanup code of commit_pair runs after this point
        return real_replace(src, dst)

    monkeypatch.setattr(trajectory.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, num_episodes=2, overwrite=True)
    monkeypatch.setattr(trajectory.os, "replace", real_replace)
    with DemoPair(first.h5_path) as now:  # the next reader finishes or undoes the interrupted swap
        assert len(now) == 4  # the new json never arrived: the old pair is back, complete
    assert demo_digest(first.h5_path) == first.digest
    assert not [n for n in files_in(tmp_path) if n.endswith(".replaced")]


def test_overwrite_killed_after_the_new_json_keeps_the_new_pair(tmp_path, monkeypatch):
    generate(tmp_path, num_episodes=4)
    monkeypatch.setattr(trajectory, "_unlink_all", lambda paths: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, num_episodes=2, overwrite=True)
    monkeypatch.undo()
    assert any(n.endswith(".replaced") for n in os.listdir(tmp_path))  # the old pair, not yet deleted
    with DemoPair(tmp_path / "gen.h5") as now:
        assert len(now) == 2
    assert files_in(tmp_path) == ["gen.h5", "gen.json"]


# --------------------------------------------------------------------------- #
# 2./3. the demo-pair checks gate import, replay and render
# --------------------------------------------------------------------------- #
def nan_action(h5):
    set_value(h5, "traj_1/actions", (0, 2), np.nan)


def wrong_action_dim(h5):
    replace_array(h5, "traj_1/actions", lambda a: np.concatenate([a, a[:, :1]], axis=1))


def float16_actions(h5):
    replace_array(h5, "traj_1/actions", lambda a: a.astype(np.float16))


def int32_actions(h5):
    replace_array(h5, "traj_1/actions", lambda a: a.astype(np.int32))


def huge_action_nan_state(h5):
    set_value(h5, "traj_1/actions", (0, 0), 3e31)
    set_value(h5, "traj_1/env_states", (1, 0), np.nan)


def huge_gripper(h5):
    set_value(h5, "traj_1/actions", (0, -1), -1.1e32)


def wrong_seed(h5):
    edit_json(h5, lambda raw: raw["episodes"][1].update(episode_seed=999, reset_kwargs={"seed": 999}))


def wrong_env_id(h5):
    edit_json(h5, lambda raw: raw["env_info"].update(env_id="PickCub-v0"))


def unknown_control_mode(h5):
    edit_json(h5, lambda raw: [ep.update(control_mode="pd_teleport") for ep in raw["episodes"]])


BAD_PAIRS = {
    # case: (corruption, check codes the error must name, text it must quote)
    "nan_action": (nan_action, ["non_finite"], "episode 1, key traj_1/actions"),
    "wrong_action_dim": (wrong_action_dim, ["shape"], "episode 1, key traj_1/actions, value [9]"),
    "float16_actions": (float16_actions, ["dtype"], "value 'float16'"),
    "int32_actions": (int32_actions, ["dtype"], "value 'int32'"),
    "huge_action_nan_state": (huge_action_nan_state, ["action_bounds", "non_finite"], "3e+31"),
    "huge_gripper": (huge_gripper, ["action_bounds"], "-1.1e+32"),
    "wrong_seed": (wrong_seed, ["reset_state"], "episode 1, key traj_1/env_states, step 0"),
    "wrong_env_id": (wrong_env_id, ["env_id"], "value 'PickCub-v0'"),
    "unknown_control_mode": (unknown_control_mode, ["control_mode"], "value 'pd_teleport'"),
}


def assert_refusal(exc: DemoFileError, h5: Path, case: str) -> None:
    _, codes, quoted = BAD_PAIRS[case]
    text = str(exc)
    assert str(h5) in text and "fails the demo-pair checks" in text and quoted in text, text
    for code in codes:
        assert code in text, (code, text)
    assert f"ms2 validate {h5}" in text and "--force" in text


@pytest.mark.parametrize("case", sorted(BAD_PAIRS))
def test_import_refuses_a_pair_failing_the_checks(pair, data_dir, case):
    BAD_PAIRS[case][0](pair)
    with pytest.raises(DemoFileError) as info:
        import_(pair)
    assert_refusal(info.value, pair, case)
    assert not data_dir.exists()  # nothing registered


@pytest.mark.parametrize("case", ["huge_gripper", "int32_actions", "wrong_seed"])
def test_replay_refuses_a_pair_failing_the_checks(pair, tmp_path, case):
    BAD_PAIRS[case][0](pair)
    before = files_in(tmp_path)
    with pytest.raises(DemoFileError) as info:
        convert(pair)
    assert_refusal(info.value, pair, case)
    assert files_in(tmp_path) == before


def render_cfg(pair: Path, tmp_path: Path, **kw) -> RenderConfig:
    return RenderConfig(source=str(pair), store=str(tmp_path / "ds.zarr"), workers=0, progress=False,
                        options={"backend": "fake", "obs": {"obs_mode": "state"}}, **kw)


@pytest.mark.parametrize("case", ["nan_action", "wrong_action_dim", "int32_actions", "huge_action_nan_state"])
def test_render_refuses_before_creating_a_store(pair, tmp_path, case):
    BAD_PAIRS[case][0](pair)
    with pytest.raises(DemoFileError) as info:
        render.run(render_cfg(pair, tmp_path))
    assert_refusal(info.value, pair, case)
    assert not (tmp_path / "ds.zarr").exists()


def test_force_is_explicit_and_recorded(pair, tmp_path):
    nan_action(pair)
    record = import_(pair, force=True)
    assert record.demo_checks == "forced" and record.demo_check_errors == ["non_finite"]
    result = render.run(render_cfg(pair, tmp_path, force=True))
    import zarr

    source = zarr.open_group(result.store, mode="r").attrs["ms2flow"]["source"]
    assert source["demo_checks"] == "forced" and source["demo_check_errors"] == ["non_finite"]


def test_a_pair_that_passed_validation_is_not_checked_again(pair, monkeypatch):
    validate_stage.run(ValidationConfig(path=str(pair), progress=False))
    monkeypatch.setattr(demo_checks, "validate_demo_pair", lambda *a, **k: pytest.fail("re-checked"))
    assert demo_checks.require_sound_demos(pair, backend="fake").cached
    nan_action(pair)  # changed since validation: the digest differs, so it is checked (and refused)
    monkeypatch.undo()
    with pytest.raises(DemoFileError, match="non_finite"):
        demo_checks.require_sound_demos(pair, backend="fake")


@pytest.mark.parametrize("case", ["float16_actions", "wrong_env_id", "unknown_control_mode", "wrong_seed"])
def test_validate_fails_what_import_refuses(pair, case):
    BAD_PAIRS[case][0](pair)
    report = validate_stage.run(ValidationConfig(path=str(pair), progress=False)).report
    errors = {f.code for f in report.findings if f.severity == "error"}
    assert report.status == "failed" and set(BAD_PAIRS[case][1]) <= errors, [f.message for f in report.findings]


# --------------------------------------------------------------------------- #
# 5. full disk
# --------------------------------------------------------------------------- #
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_is_a_clear_error_and_leaves_nothing(pair, tmp_path, monkeypatch, data_dir):
    before = files_in(tmp_path)
    monkeypatch.setattr(trajectory, "_write_synced", no_space)
    with pytest.raises(DemoFileError, match=r"(?s)No space left on device.*disk is full.*nothing was written"):
        generate(tmp_path, name="new")
    with pytest.raises(DemoFileError, match="No space left on device"):
        convert(pair)
    with pytest.raises(DemoFileError, match="No space left on device"):
        import_(pair)
    assert [n for n in files_in(tmp_path) if n != "data"] == before  # no temp file, no report, no half pair
    assert not [p for p in data_dir.rglob("*") if p.is_file()]


def test_full_disk_on_overwrite_keeps_the_old_pair(tmp_path, monkeypatch):
    first = generate(tmp_path, num_episodes=4)
    monkeypatch.setattr(trajectory, "_write_synced", no_space)
    with pytest.raises(DemoFileError, match="No space left"):
        generate(tmp_path, num_episodes=2, overwrite=True)
    assert demo_digest(first.h5_path) == first.digest and files_in(tmp_path) == ["gen.h5", "gen.json"]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_full_tmpfs_replay_and_generate_end_in_a_message(pair, tiny_tmpfs):
    """Real ENOSPC (a 64 KiB tmpfs), in a subprocess: h5py used to segfault here (exit 139)."""
    filler = tiny_tmpfs / "filler"
    filler.write_bytes(b"x" * 60_000)  # 4 KiB left: less than any pair below
    for args in (["replay", str(pair), "-t", "pd_ee_delta_pose", "-o", str(tiny_tmpfs / "out"),
                  "--set", "backend=fake", "--set", "progress=false"],
                 ["demos", "generate", "-n", "40", "-o", str(tiny_tmpfs / "gen"), "--set", "backend=fake",
                  "--set", "progress=false"]):
        code, message = ms2(*args)
        assert code == 2, (args, code, message[-2000:])
        assert "No space left on device" in message and "disk is full" in message and "Traceback" not in message
        assert files_in(tiny_tmpfs) == ["filler"]


# --------------------------------------------------------------------------- #
# 6. damaged h5 metadata, listings
# --------------------------------------------------------------------------- #
def corrupt_group_header(h5: Path, group: str = "traj_1") -> None:
    """Flip one byte inside the group's object header: HDF5 then fails its metadata checksum (h5py KeyError)."""
    with h5py.File(h5, "r") as f:
        address = h5py.h5o.get_info(f[group].id).addr
    data = bytearray(h5.read_bytes())
    data[address + 12] ^= 0xFF
    h5.write_bytes(bytes(data))


def test_damaged_metadata_is_a_demo_file_error_everywhere(pair, tmp_path, data_dir):
    corrupt_group_header(pair)
    for run in (lambda: import_(pair), lambda: convert(pair), lambda: render.run(render_cfg(pair, tmp_path))):
        with pytest.raises(DemoFileError, match=r"pick\.h5 has damaged HDF5 metadata.*checksum"):
            run()
    assert not (tmp_path / "ds.zarr").exists() and not data_dir.exists()


def test_unlisted_groups_are_listed_with_an_ellipsis(tmp_path):
    generate(tmp_path, num_episodes=6)
    edit_json(tmp_path / "gen.h5", lambda raw: raw.update(episodes=[]))
    with pytest.raises(DemoFileError, match=r"traj_0, traj_1, traj_2, traj_3, traj_4, \.\.\. \(6 in all\) are not "
                                            r"listed in gen\.json \(its episode list is empty\)"):
        DemoPair(tmp_path / "gen.h5")


def ms2(*args: str) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_cli_refusals_are_one_paragraph_with_exit_2(pair, tmp_path):
    huge_gripper(pair)
    code, out = ms2("replay", str(pair), "--set", "backend=fake", "--set", "progress=false")
    assert code == 2 and "Traceback" not in out and "fails the demo-pair checks" in out and "ms2 validate" in out
    good = generate(tmp_path, name="good")
    code, out = ms2("demos", "generate", "-n", "2", "-o", str(tmp_path / "good"), "--set", "backend=fake",
                    "--set", "progress=false")
    assert code == 2 and "already exists" in out and "--overwrite" in out and "Traceback" not in out
    assert demo_digest(good.h5_path) == good.digest
