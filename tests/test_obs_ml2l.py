"""The ml2l observation layout: ManiSkill2-Learn's keys, state vector, dtypes, frames and quirks.

The reference (tests/data/ml2l/ml2l_obs_reference.npz) is what ManiSkill2-Learn's own
ManiSkill2_ObsWrapper returned for the raw observations in raw_obs.npz (fake env and the real
PickCube-v0), written by tests/data/ml2l/make_obs_reference.py in a side environment.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from ms2core import zarr_io
from ms2core.envs import make_env
from ms2core.errors import UnsupportedModeError
from ms2core.obs import process_observation
from pipelines import export, render
from storage_schemas.dataset import ExportConfig, ObsProcessConfig, RenderConfig, RenderOptions
from tests.demo_fixtures import fake_demo_pair

DATA = Path(__file__).resolve().parent / "data" / "ml2l"
BIG = 5000  # more points than any recorded case shows: ML2L then pads by repeating, deterministically
VARIANTS = {"base": ("base", BIG, 0), "world": ("world", BIG, 0), "ee": ("ee", BIG, 0), "ee_goal": ("ee", 64, 50)}
CASES = [(case, variant) for case in ("fake_pointcloud", "pickcube_pointcloud") for variant in VARIANTS] + [
    ("fake_rgbd", "world"), ("pickcube_rgbd", "world")]


def _raw_case(case: str) -> dict:
    raw: dict = {}
    with np.load(DATA / "raw_obs.npz") as data:
        for key in data.files:
            name, path = key.split("|", 1)
            if name == case:
                *parents, leaf = path.split("/")
                node = raw
                for part in parents:
                    node = node.setdefault(part, OrderedDict())
                node[leaf] = data[key]
    return raw


def _reference(case: str, variant: str) -> dict[str, np.ndarray]:
    with np.load(DATA / "ml2l_obs_reference.npz") as data:
        prefix = f"{case}|{variant}|"
        return {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}


def _ml2l(case: str, variant: str) -> dict[str, np.ndarray]:
    obs_mode = "pointcloud" if case.endswith("pointcloud") else "rgbd"
    frame, n, k = VARIANTS[variant] if obs_mode == "pointcloud" else ("world", 1200, 0)
    cfg = ObsProcessConfig(obs_mode=obs_mode, obs_layout="ml2l", obs_frame=frame, n_points=n, n_goal_points=k)
    return process_observation(_raw_case(case), cfg, np.random.default_rng(0))


@pytest.mark.parametrize("case,variant", CASES)
def test_ml2l_layout_equals_maniskill2_learns_own_processing(case, variant):
    ours, theirs = _ml2l(case, variant), _reference(case, variant)
    assert list(ours) == sorted(theirs, key=list(ours).index) and sorted(ours) == sorted(theirs)
    for key, expected in theirs.items():
        got = ours[key]
        assert (got.shape, got.dtype) == (expected.shape, expected.dtype), key
        if variant == "ee_goal" and key in ("xyz", "rgb"):
            continue  # a random subset and random goal points: checked below
        if expected.dtype == np.float32:  # sapien's float32 pose maths vs float64 here: < 1e-6 m
            np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got, expected, err_msg=key)


@pytest.mark.parametrize("case", ["fake_pointcloud", "pickcube_pointcloud"])
def test_random_subset_and_goal_points_are_drawn_as_ml2l_draws_them(case):
    ours, padded = _ml2l(case, "ee_goal"), _reference(case, "ee")
    nearest = np.linalg.norm(ours["xyz"][:64, None, :] - padded["xyz"][None, :, :], axis=-1).min(axis=1)
    assert nearest.max() < 1e-5  # every sampled point is one of the visible points ML2L kept
    goal_in_ee = padded["frame_related_states"][2]
    np.testing.assert_array_equal(ours["rgb"][64:], np.tile([0.0, 1.0, 0.0], (50, 1)).astype(np.float32))
    assert np.linalg.norm(ours["xyz"][64:] - goal_in_ee, axis=1).max() <= np.sqrt(3) * 0.01 + 1e-6
    assert ours["rgb"][:64].min() >= 0.0 and ours["rgb"][:64].max() <= 1.0


def test_keys_shapes_and_dtypes_on_the_fake_env_beside_ms2flows_layout():
    pc_env = make_env("PickCube-v0", "pointcloud", backend="fake")
    raw, _ = pc_env.reset(seed=0)
    ml2l = process_observation(raw, ObsProcessConfig(obs_layout="ml2l", obs_frame="ee", n_goal_points=50))
    assert {k: (v.shape, v.dtype) for k, v in ml2l.items()} == {
        "xyz": ((1250, 3), np.float32), "rgb": ((1250, 3), np.float32), "frame_related_states": ((4, 3), np.float32),
        "to_frames": ((2, 4, 4), np.float32), "state": ((30,), np.float32)}
    own = process_observation(raw, ObsProcessConfig(obs_frame="ee", n_goal_points=50))
    assert {k: (v.shape, v.dtype) for k, v in own.items()} == {
        "xyz": ((1250, 3), np.float32), "rgb": ((1250, 3), np.uint8), "state": ((28,), np.float32)}
    rgbd_env = make_env("PickCube-v0", "rgbd", backend="fake")
    raw, _ = rgbd_env.reset(seed=0)
    ml2l = process_observation(raw, ObsProcessConfig(obs_mode="rgbd", obs_layout="ml2l"))
    assert {k: (v.shape, v.dtype) for k, v in ml2l.items()} == {
        "rgb": ((6, 128, 128), np.uint8), "depth": ((2, 128, 128), np.float16), "state": ((38,), np.float32)}
    own = process_observation(raw, ObsProcessConfig(obs_mode="rgbd"))
    assert own["rgb"].shape == (128, 128, 6) and own["depth"].dtype == np.float32 and own["state"].shape == (28,)
    np.testing.assert_array_equal(ml2l["rgb"], own["rgb"].transpose(2, 0, 1))  # same bytes, channels first


def _hand_raw(points: list[tuple[float, float, float, float]]) -> dict:
    """Base at x = -0.615; TCP at (0.1, 0.2, 0.3) turned 90 degrees about z; goal at (0.4, 0.2, 0.3)."""
    c = np.cos(np.pi / 4)
    xyzw = np.array(points, np.float32)
    return OrderedDict(
        agent=OrderedDict(qpos=np.arange(9, dtype=np.float32), qvel=-np.arange(9, dtype=np.float32),
                          base_pose=np.array([-0.615, 0, 0, 1, 0, 0, 0], np.float32)),
        extra=OrderedDict(tcp_pose=np.array([0.1, 0.2, 0.3, c, 0, 0, c], np.float32),
                          goal_pos=np.array([0.4, 0.2, 0.3])),
        pointcloud=OrderedDict(xyzw=xyzw, rgb=np.full((len(xyzw), 3), 255, np.uint8)),
    )


def test_tcp_to_goal_is_transformed_as_a_point_hand_computed():
    raw = _hand_raw([(0.1, 0.2, 0.5, 1.0)])
    ee = process_observation(raw, ObsProcessConfig(obs_layout="ml2l", obs_frame="ee", n_points=2))
    # ee frame: p -> Rz(-90)(p - tcp), i.e. (x, y, z) -> (y, -x, z) after subtracting (0.1, 0.2, 0.3)
    np.testing.assert_allclose(ee["frame_related_states"], [
        [-0.2, 0.715, -0.3],  # base
        [0.0, 0.0, 0.0],      # tcp
        [0.0, -0.3, 0.0],     # goal
        [-0.2, -0.2, -0.3],   # tcp_to_goal = (0.3, 0, 0) as a POINT; as a vector it would be (0, -0.3, 0)
    ], atol=1e-6)
    np.testing.assert_allclose(ee["state"], np.concatenate([np.arange(9), -np.arange(9),
                                                            ee["frame_related_states"].ravel()]), atol=1e-6)
    np.testing.assert_allclose(ee["xyz"], [[0.0, 0.0, 0.2]] * 2, atol=1e-6)  # the point above the TCP, repeated
    base = process_observation(raw, ObsProcessConfig(obs_layout="ml2l", obs_frame="base", n_points=2))
    np.testing.assert_allclose(base["frame_related_states"], [
        [0, 0, 0], [0.715, 0.2, 0.3], [1.015, 0.2, 0.3], [0.915, 0.0, 0.0]], atol=1e-6)  # (0.3,0,0) + 0.615
    # to_frames: obs frame -> base, obs frame -> TCP; in the ee frame the second is the identity
    np.testing.assert_allclose(ee["to_frames"][1], np.eye(4), atol=1e-6)
    np.testing.assert_allclose(ee["to_frames"][0] @ [0, 0, 0, 1], [0.715, 0.2, 0.3, 1], atol=1e-6)


def test_world_frame_is_the_base_frame_as_in_ml2l():
    raw = _hand_raw([(0.1, 0.2, 0.5, 1.0)])
    world = process_observation(raw, ObsProcessConfig(obs_layout="ml2l", obs_frame="world", n_points=1))
    base = process_observation(raw, ObsProcessConfig(obs_layout="ml2l", obs_frame="base", n_points=1))
    for key in world:
        np.testing.assert_array_equal(world[key], base[key], err_msg=key)
    own_world = process_observation(raw, ObsProcessConfig(obs_frame="world", n_points=1))
    np.testing.assert_allclose(world["xyz"] - own_world["xyz"], [[0.615, 0, 0]], atol=1e-6)


def test_validity_ground_threshold_and_padding_are_ml2ls():
    raw = _hand_raw([(0.1, 0.0, 5e-5, 1.0),   # ground (z <= 1e-4): dropped
                     (0.2, 0.0, 5e-4, 1.0),   # kept by ML2L (z > 1e-4); ms2flow's layout drops it (z < 1e-3)
                     (0.3, 0.0, 0.2, 0.4),    # w <= 0.5: not a hit for ML2L
                     (0.4, 0.0, 0.2, 1.0)])
    out = process_observation(raw, ObsProcessConfig(obs_layout="ml2l", obs_frame="base", n_points=5))
    # two visible points, padded by repeating them in order: a, b, a, b, a (base frame: x + 0.615)
    np.testing.assert_allclose(out["xyz"][:, 0], [0.815, 1.015, 0.815, 1.015, 0.815], atol=1e-6)
    np.testing.assert_allclose(out["rgb"], np.ones((5, 3)))
    own = process_observation(raw, ObsProcessConfig(obs_frame="base", n_points=5))
    assert not np.isclose(own["xyz"][:, 2], 5e-4, atol=1e-7).any()


def test_ml2l_layout_fixes_its_options_and_keeps_old_dataset_versions():
    cfg = ObsProcessConfig(obs_layout="ml2l")
    assert (cfg.ground_z_m, cfg.remove_ground, cfg.downsample) == (1e-4, True, "random")
    assert ObsProcessConfig.model_validate(cfg.model_dump()) == cfg  # the manifest round trip
    for bad in (dict(ground_z_m=1e-3), dict(include_seg=True), dict(downsample="fps"), dict(include_rgb=False)):
        with pytest.raises(ValueError, match=f"obs_layout ml2l fixes {next(iter(bad))}"):
            ObsProcessConfig(obs_layout="ml2l", **bad)
    with pytest.raises(ValueError, match="ignores obs_frame"):
        ObsProcessConfig(obs_mode="rgbd", obs_layout="ml2l", obs_frame="ee")
    assert "obs_layout" not in RenderOptions().model_dump()["obs"]  # default layout: same version as before
    assert RenderOptions(obs=cfg).model_dump()["obs"]["obs_layout"] == "ml2l"


def test_ml2l_layout_needs_the_two_cameras_and_the_base_pose():
    raw = _hand_raw([(0.1, 0.2, 0.5, 1.0)])
    raw["agent"].pop("base_pose")
    with pytest.raises(UnsupportedModeError, match="base_pose"):
        process_observation(raw, ObsProcessConfig(obs_layout="ml2l"))
    rgbd = OrderedDict(agent=OrderedDict(qpos=np.zeros(9)), image=OrderedDict(top=OrderedDict(
        rgb=np.zeros((4, 4, 3), np.uint8), depth=np.zeros((4, 4, 1), np.float32))))
    with pytest.raises(UnsupportedModeError, match="hand_camera"):
        process_observation(rgbd, ObsProcessConfig(obs_mode="rgbd", obs_layout="ml2l"))


@pytest.mark.parametrize("obs", [
    dict(obs_mode="pointcloud", obs_layout="ml2l", obs_frame="ee", n_points=64, n_goal_points=8),
    dict(obs_mode="rgbd", obs_layout="ml2l"),
])
def test_render_and_export_h5_write_the_ml2l_keys(tmp_path, obs):
    demo = fake_demo_pair(tmp_path / "demos" / "pick.h5", n_episodes=2)
    cfg = RenderConfig.model_validate(dict(
        source=str(demo), output_dir=str(tmp_path / "ds"), workers=0, episodes_per_range=2, progress=False,
        options=dict(backend="fake", obs=obs, camera_size=(16, 12), xyz_keep_bits=None)))
    store = render.run(cfg).store
    root = zarr.open_group(store, mode="r")
    stored = {k: (a.shape[1:], a.dtype) for k, a in root["data/obs"].arrays()}
    if obs["obs_mode"] == "pointcloud":
        assert stored == {"xyz": ((72, 3), np.float32), "rgb": ((72, 3), np.float32), "state": ((30,), np.float32),
                          "frame_related_states": ((4, 3), np.float32), "to_frames": ((2, 4, 4), np.float32)}
    else:
        assert stored == {"rgb": ((6, 12, 16), np.uint8), "depth": ((2, 12, 16), np.float16),
                          "state": ((38,), np.float32)}
    out = tmp_path / "ml2l.h5"
    export.run(ExportConfig(store=store, output=str(out)))
    with h5py.File(out) as f:
        group = f["traj_0"]["obs"]
        assert {k: (group[k].shape[1:], group[k].dtype) for k in group} == stored  # as stored: no transposition
        end = int(root["meta/episode_ends"][0])
        for key in group:
            np.testing.assert_array_equal(group[key][()], root[f"data/obs/{key}"][:end], err_msg=key)
        assert f["traj_0"]["rewards"].shape == (end, 1) and f["traj_0"]["episode_dones"].shape == (end, 1)
        assert f["traj_0"]["actions"].shape == (end, 7)  # ML2L's ReplayMemory: per-step scalars are (T, 1)
        # convert_state's keys (ReplayMemory adds worker_indices and is_truncated), and ours: success
        assert set(f["traj_0"]) == {"obs", "actions", "rewards", "dones", "episode_dones", "is_truncated",
                                    "worker_indices", "success"}
        assert f["traj_0"]["worker_indices"].dtype == np.int32 and not f["traj_0"]["worker_indices"][()].any()
    back = zarr.open_group(export.import_h5(str(out), str(tmp_path / "back.zarr")), mode="r")
    for key, array in zarr_io.list_arrays(root["data"]).items():
        np.testing.assert_array_equal(back[f"data/{key}"][:], array[:], err_msg=key)



def test_ms2flow_networks_read_the_ml2l_layout_as_its_own():
    """float rgb in [0, 1] and channels-first images give the same network outputs as ms2flow's layout."""
    import torch

    from ms2core.nn import build_policy
    from storage_schemas.training import NetConfig

    torch.manual_seed(0)
    rgb = torch.randint(0, 256, (2, 16, 3), dtype=torch.uint8)
    own = {"xyz": torch.randn(2, 16, 3), "rgb": rgb, "state": torch.randn(2, 9)}
    ml2l = {**own, "rgb": rgb.float() / 255.0}
    shapes = {k: tuple(v.shape[1:]) for k, v in own.items()}
    pointnet = build_policy(NetConfig(normalize_state=False), "pointcloud", shapes, 7)
    torch.testing.assert_close(pointnet.encoder(ml2l), pointnet.encoder(own))
    images = {"rgb": torch.randint(0, 256, (2, 40, 48, 6), dtype=torch.uint8), "depth": torch.rand(2, 40, 48, 2),
              "state": torch.randn(2, 9)}
    first = {"rgb": images["rgb"].permute(0, 3, 1, 2), "depth": images["depth"].permute(0, 3, 1, 2).half(),
             "state": images["state"]}
    cfg = NetConfig(normalize_state=False)
    last_net = build_policy(cfg, "rgbd", {k: tuple(v.shape[1:]) for k, v in images.items()}, 7)
    first_net = build_policy(cfg, "rgbd", {k: tuple(v.shape[1:]) for k, v in first.items()}, 7)
    assert first_net.encoder.channels_first and not last_net.encoder.channels_first
    first_net.load_state_dict(last_net.state_dict())
    torch.testing.assert_close(first_net.encoder(first), last_net.encoder({**images, "depth": images["depth"].half()}))
