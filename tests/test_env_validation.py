"""make_env validates against ManiSkill2's registry before touching the renderer (no Vulkan needed)."""

from __future__ import annotations

import pytest

from ms2core.envs import make_env, registered_env_ids, supported_control_modes
from ms2core.errors import UnknownEnvError, UnsupportedModeError
from tests.conftest import HAS_SIMULATOR

pytestmark = pytest.mark.skipif(not HAS_SIMULATOR, reason="mani_skill2 not installed")


def test_unknown_env_id_lists_the_closest_valid_ids():
    with pytest.raises(UnknownEnvError) as exc:
        make_env("PickCub-v0")
    assert "'PickCub-v0'" in str(exc.value)
    assert exc.value.hint.startswith("did you mean PickCube-v0")
    assert "StackCube-v0" in exc.value.hint


def test_unknown_obs_mode_lists_allowed():
    with pytest.raises(UnsupportedModeError) as exc:
        make_env("PickCube-v0", obs_mode="pointclouds")
    assert "'pointclouds'" in str(exc.value) and "pointcloud" in exc.value.hint and "rgbd" in exc.value.hint


def test_unknown_control_mode_lists_the_robots_controllers():
    with pytest.raises(UnsupportedModeError) as exc:
        make_env("PickCube-v0", control_mode="ee_delta_pose")
    assert "pd_ee_delta_pose" in exc.value.hint and "pd_joint_pos" in exc.value.hint


def test_registry_and_controllers_come_from_mani_skill2():
    ids = registered_env_ids()
    assert {"PickCube-v0", "LiftCube-v0", "StackCube-v0", "PegInsertionSide-v0"} <= set(ids)
    modes = supported_control_modes("PickCube-v0")
    assert {"pd_ee_delta_pose", "pd_ee_delta_pos", "pd_joint_delta_pos", "pd_joint_pos"} <= set(modes)
