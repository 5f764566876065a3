"""Defects injected into a real demo pair (h5 + json written by ms2core.trajectory) are reported with
the right code, episode and key; structural problems are all listed, not only the first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipelines.validate import run
from storage_schemas.validation import ValidationConfig, ValidationReport
from tests.validate_fixtures import record_fake_demos


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return record_fake_demos(tmp_path_factory.mktemp("demos") / "pick", n_episodes=4)


@pytest.fixture
def demos(template, tmp_path) -> Path:
    for suffix in (".h5", ".json"):
        shutil.copy(template.with_name(template.name + suffix), tmp_path / f"pick{suffix}")
    return tmp_path / "pick"


def validate(path: Path, **kw) -> ValidationReport:
    kw.setdefault("progress", False)
    return run(ValidationConfig(path=str(path), **kw)).report


def only(report: ValidationReport, code: str):
    found = [f for f in report.findings if f.code == code]
    assert found, f"no {code} finding; got {[(f.code, f.key, f.message) for f in report.findings]}"
    return found


def edit_json(path: Path, change) -> None:
    js = path.with_suffix(".json")
    raw = json.loads(js.read_text())
    change(raw)
    js.write_text(json.dumps(raw))


def edit_h5(path: Path, change) -> None:
    with h5py.File(path.with_suffix(".h5"), "r+") as f:
        change(f)


def test_clean_pair_passes_with_replay(demos):
    report = validate(demos, replay_sample=4)
    assert report.status == "passed", [(f.code, f.message) for f in report.findings]
    assert report.kind == "demos" and report.n_episodes == 4 and report.replayed_episodes == [0, 1, 2, 3]
    assert Path(str(demos) + ".validation.json").exists()


def test_h5_and_json_ids_disagree(demos):
    edit_h5(demos, lambda f: f.move("traj_2", "traj_7"))
    found = only(validate(demos), "traj_id")
    assert {(f.episode, f.key) for f in found} == {(2, "traj_2"), (7, "traj_7")}


def test_all_structural_problems_listed(demos):
    def change(f):
        del f["traj_0/actions"]
        f.move("traj_3", "traj_9")

    edit_h5(demos, change)
    report = validate(demos)
    assert only(report, "missing_array")[0].key == "traj_0/actions"
    assert {f.episode for f in only(report, "traj_id")} == {3, 9}
    assert report.n_episodes == 4  # episodes 1 and 2 were still checked
    assert report.n_rows > 0


def test_elapsed_steps_disagree(demos):
    edit_json(demos, lambda raw: raw["episodes"][1].update(elapsed_steps=99))
    found = only(validate(demos), "episode_length")
    assert {(f.episode, f.key) for f in found} >= {(1, "traj_1/actions"), (1, "traj_1/success")}
    assert found[0].expected == 99


def test_json_schema_errors_name_the_episode(demos):
    edit_json(demos, lambda raw: raw["episodes"][2].update(elapsed_steps="many"))
    (f,) = only(validate(demos), "json_schema")
    assert f.episode == 2 and f.key == "episodes.2.elapsed_steps"


def test_json_not_json(demos):
    demos.with_suffix(".json").write_text("{not json")
    assert only(validate(demos), "json_schema")[0].key == "pick.json"


def test_h5_unreadable(demos):
    demos.with_suffix(".h5").write_bytes(b"this is not hdf5")
    report = validate(demos)
    assert only(report, "unreadable")[0].key == "pick.h5" and report.status == "failed"


def test_missing_h5_is_a_finding(demos):
    demos.with_suffix(".h5").unlink()
    assert only(validate(demos), "unreadable")[0].key == "pick.h5"


def test_nan_action(demos):
    def change(f):
        a = f["traj_1/actions"][()]
        a[1, 1] = np.nan
        f["traj_1/actions"][...] = a

    edit_h5(demos, change)
    (f,) = only(validate(demos), "non_finite")
    assert (f.episode, f.key, f.index, f.value) == (1, "traj_1/actions", 1, "nan")


def test_nan_env_state(demos):
    def change(f):
        s = f["traj_0/env_states"][()]
        s[3, 0] = np.inf
        f["traj_0/env_states"][...] = s

    edit_h5(demos, change)
    report = validate(demos)
    (f,) = only(report, "non_finite")
    assert (f.episode, f.key, f.index) == (0, "traj_0/env_states", 3)


def test_action_out_of_bounds(demos):
    def change(f):
        a = f["traj_3/actions"][()]
        a[0, 3] = -1.5
        f["traj_3/actions"][...] = a

    edit_h5(demos, change)
    (f,) = only(validate(demos), "action_bounds")
    assert (f.episode, f.key, f.index, f.value, f.expected) == (3, "traj_3/actions", 0, -1.5, [-1.0, 1.0])


def test_action_dim_of_another_controller(demos):
    edit_json(demos, lambda raw: raw["episodes"][0].update(control_mode="pd_ee_delta_pos"))
    (f,) = only(validate(demos), "shape")
    assert (f.episode, f.key, f.value, f.expected) == (0, "traj_0/actions", [7], [4])


def test_unknown_control_mode_is_an_error(demos):
    edit_json(demos, lambda raw: raw["episodes"][0].update(control_mode="pd_teleport"))
    report = validate(demos)
    (f,) = only(report, "control_mode")
    assert (f.episode, f.value, f.severity, report.status) == (0, "pd_teleport", "error", "failed")


def test_unknown_env_id_is_an_error(demos):
    edit_json(demos, lambda raw: raw["env_info"].update(env_id="PickCub-v0"))
    report = validate(demos)
    (f,) = only(report, "env_id")
    assert (f.value, f.severity, report.status) == ("PickCub-v0", "error", "failed")
    assert "PickCube-v0" in f.message  # the did-you-mean


def test_float16_actions_are_an_error(demos):
    def change(f):
        a = f["traj_1/actions"][()]
        del f["traj_1/actions"]
        f["traj_1/actions"] = a.astype(np.float16)

    edit_h5(demos, change)
    report = validate(demos)
    (f,) = only(report, "dtype")
    assert (f.episode, f.key, f.value, report.status) == (1, "traj_1/actions", "float16", "failed")


def test_last_step_not_success(demos):
    def change(f):
        s = f["traj_2/success"][()]
        s[-1] = False
        f["traj_2/success"][...] = s

    edit_h5(demos, change)
    report = validate(demos)
    (f,) = only(report, "success")
    assert (f.episode, f.key, f.value, f.expected) == (2, "traj_2/success", False, True)
    assert only(report, "success_claim")[0].episode == 2  # json info says it succeeded
    assert "success" not in {f.code for f in validate(demos, success_only=False, recheck=True).findings}


def test_duplicate_episode(demos):
    def change(f):
        del f["traj_3"]
        f.copy("traj_1", "traj_3")

    edit_h5(demos, change)
    edit_json(demos, lambda raw: raw["episodes"][3].update(
        {k: raw["episodes"][1][k] for k in ("episode_seed", "reset_kwargs", "elapsed_steps", "info")}))
    (f,) = only(validate(demos), "duplicate")
    assert (f.episode, f.severity) == (3, "warning")


def test_replay_detects_states_that_do_not_follow(demos):
    def change(f):
        s = f["traj_2/env_states"][()]
        s[2:, 0] += 0.02  # from state 2 on the tcp is elsewhere than the actions put it
        f["traj_2/env_states"][...] = s

    edit_h5(demos, change)
    assert validate(demos).status == "passed"  # plausible values: only replay can tell
    (f,) = only(validate(demos, replay_sample=4, recheck=True), "replay_state")
    assert (f.episode, f.key, f.index) == (2, "traj_2/env_states", 2)


def test_wrong_seed_is_caught_without_and_with_replay(demos):
    edit_json(demos, lambda raw: raw["episodes"][0].update(episode_seed=999, reset_kwargs={"seed": 999}))
    (f,) = only(validate(demos), "reset_state")  # the structural checks reset the first episodes
    assert (f.episode, f.index, f.key) == (0, 0, "traj_0/env_states")
    report = validate(demos, replay_sample=4, recheck=True)
    assert [f.episode for f in report.findings if f.code == "reset_state"] == [0]  # reported once
    assert report.replayed_episodes == [1, 2, 3] and "replay_state" not in {f.code for f in report.findings}


def test_replay_detects_wrong_success_flags(demos):
    def change(f):
        s = f["traj_2/success"][()]
        s[0] = True
        f["traj_2/success"][...] = s

    edit_h5(demos, change)
    (f,) = only(validate(demos, replay_sample=4), "replay_success")
    assert (f.episode, f.key, f.index) == (2, "traj_2/success", 0)
