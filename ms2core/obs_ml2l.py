"""The ``ml2l`` observation layout: ManiSkill2-Learn's processed observations, key for key.

ManiSkill2-Learn (ML2L) turns raw ManiSkill2 observations into these (its
``ManiSkill2_ObsWrapper`` followed by its float64 -> float32 cast); this module
reimplements that from a reading of its behaviour, so that ML2L configs,
datasets and checkpoints carry over. One step, numpy arrays::

    pointcloud:  xyz (N,3) float32      points in the obs frame, N = n_points + n_goal_points
                 rgb (N,3) float32      in [0, 1]; goal points (0, 1, 0)
                 frame_related_states (K,3) float32   base_pos, tcp_pos (one per hand), goal_pos,
                                        tcp_to_goal_pos [, gripper_pos, joint_axis, link_pos], obs frame
                 [frame_goal_related_poses (K',7)]    only for tasks with extra/goal_pose
                 to_frames (F,4,4) float32            obs frame -> base, -> each TCP [, -> goal]
                 state (S,) float32     qpos, qvel, frame_related_states.ravel(),
                                        [frame_goal_related_poses.ravel()], then the other extras
    rgbd:        rgb (3C,H,W) uint8     channels first, cameras hand_camera then base_camera
                 depth (C,H,W) float16
                 state (S,) float32     ManiSkill2's flatten_state_dict of {agent, extra} after
                                        extra/tcp_to_goal_pos = goal_pos - tcp_pos (world frame)

PickCube-v0 gives S = 30 for point clouds (9 + 9 + 4x3) and 38 for rgbd
(qpos 9, qvel 9, base_pose 7, tcp_pose 7, goal_pos 3, tcp_to_goal_pos 3).

Quirks kept on purpose (they are what ML2L-trained networks saw):

- ``obs_frame: world`` means the robot *base* frame, as in ML2L (ms2flow's own
  layout uses the true world frame; PickCube's base sits at x = -0.615 m).
- ``tcp_to_goal_pos`` in ``frame_related_states`` is a difference vector but is
  transformed as a point (rotated *and* translated).
- ``gripper_pose`` (tasks that have it) enters the state twice: its position
  among the frame-related states and the whole pose among the other extras.
- Points count as valid where ``xyzw[:, 3] > 0.5``; the ground is dropped at
  world z > 1e-4 (strictly), before the frame change.
- Too few visible points are padded by repeating the visible ones in order
  (0, 1, ..., n-1, 0, 1, ...), not by random resampling.
- rgbd ignores ``obs_frame``: its state stays in the world frame.

Differences that do not change what a network computes: the random subset is
drawn from the renderer's seeded generator and kept in camera raster order
(ML2L shuffles; PointNet max-pools, so order is irrelevant), and a frame with
no visible point gives zeros (ML2L raises). ML2L's image resizing (``img_size``)
is not reproduced: set ``camera_size`` to render at the wanted resolution.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ms2core.errors import UnsupportedModeError
from storage_schemas.dataset import ObsProcessConfig

__all__ = ["process_pointcloud_ml2l", "process_rgbd_ml2l", "pose_matrix"]

ML2L_CAMERA_ORDER = ("hand_camera", "base_camera")
#: extras that become frame-related states (or are left out) instead of being appended to the state.
_FRAME_EXTRAS = ("tcp_pose", "goal_pos", "goal_pose", "tcp_to_goal_pos", "tcp_to_goal_pose", "joint_axis", "link_pos")
#: extras ML2L's rgbd processing removes (goal images, goal points); none of PickCube's.
_RGBD_DROPPED_EXTRAS = ("goal", "target_rgb", "target_depth", "target_points")


def pose_matrix(pose: np.ndarray) -> np.ndarray:
    """4x4 homogeneous matrix of a sapien pose (position xyz, quaternion wxyz)."""
    from ms2core.obs import quat_to_matrix

    pose = np.asarray(pose, np.float64)
    out = np.eye(4)
    out[:3, :3] = quat_to_matrix(pose[3:7])
    out[:3, 3] = pose[:3]
    return out


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Transform points (..., 3) by a 4x4 matrix: rotation and translation."""
    return np.asarray(points, np.float64) @ matrix[:3, :3].T + matrix[:3, 3]


def _tcp_poses(extra: Mapping) -> list[np.ndarray]:
    if "tcp_pose" not in extra:
        return []
    poses = np.asarray(extra["tcp_pose"], np.float64)
    return list(poses.reshape(-1, 7))  # (7,) single hand or (H, 7) several


def _frame_pose(raw: Mapping, cfg: ObsProcessConfig) -> np.ndarray:
    """Pose (in the world) of the frame points are expressed in; ML2L's 'world' is the base frame."""
    if cfg.obs_frame == "ee":
        hands = _tcp_poses(raw.get("extra", {}))
        if not hands:
            raise UnsupportedModeError("obs_frame 'ee' needs extra/tcp_pose in the observation, which this task "
                                       "does not provide", hint="use obs_frame: base")
        return hands[0]  # the first hand, as ML2L
    base = raw.get("agent", {}).get("base_pose")
    if base is None:
        raise UnsupportedModeError("obs_layout ml2l needs agent/base_pose in the observation (ML2L's frames are "
                                   "relative to the robot base)", hint="use obs_layout: ms2flow for this task")
    return np.asarray(base, np.float64)


def _pad_by_repeating(count: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of n points out of count: a random subset (in raster order), or all repeated in order."""
    if count == 0:
        return np.zeros(0, np.int64)
    if count > n:
        return np.sort(rng.choice(count, n, replace=False))
    return np.resize(np.arange(count), n)  # 0..count-1, 0..count-1, ... cut at n (== ML2L's tiling)


def _visible_points(raw: Mapping, cfg: ObsProcessConfig) -> tuple[np.ndarray, np.ndarray]:
    if "pointcloud" not in raw:
        raise UnsupportedModeError(
            f"obs_mode 'pointcloud' needs a raw observation with a 'pointcloud' key, got keys {sorted(raw)}",
            hint="build the env with obs_mode='pointcloud'",
        )
    pc = raw["pointcloud"]
    xyzw = np.asarray(pc["xyzw"], np.float32)
    keep = xyzw[:, 3] > 0.5
    keep &= xyzw[:, 2] > cfg.ground_z_m  # world z, before the frame change; strictly above, as ML2L
    rgb = np.asarray(pc["rgb"])[keep].astype(np.float64) / 255.0
    return xyzw[keep, :3], rgb


def _frame_related(raw: Mapping, to_obs: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """ML2L's frame_related_states (K,3) in the obs frame and frame_goal_related_poses rows (K',7)."""
    from ms2core.obs import quat_multiply

    agent, extra = raw.get("agent", {}), raw.get("extra", {})
    hands = _tcp_poses(extra)
    goal_pose = np.asarray(extra["goal_pose"], np.float64) if "goal_pose" in extra else None
    goal_pos = np.asarray(extra["goal_pos"], np.float64) if "goal_pos" in extra else (
        goal_pose[:3] if goal_pose is not None else None)
    rows = [np.asarray(agent["base_pose"], np.float64)[:3]] + [hand[:3] for hand in hands]
    if goal_pos is not None:
        rows.append(goal_pos)
        if hands:
            rows.append(goal_pos - hands[0][:3])  # a difference vector, transformed as a point below (ML2L)
    if "gripper_pose" in extra:
        rows.append(np.asarray(extra["gripper_pose"], np.float64)[:3])
    states = [_apply(to_obs, np.stack(rows))]
    if "joint_axis" in extra:  # a direction: rotated only
        states.append((to_obs[:3, :3] @ np.asarray(extra["joint_axis"], np.float64))[None])
    if "link_pos" in extra:
        states.append(_apply(to_obs, np.asarray(extra["link_pos"], np.float64))[None])
    goal_poses = []
    if goal_pose is not None:
        to_obs_q = _matrix_quat(to_obs)
        goal_poses.append(np.concatenate([_apply(to_obs, goal_pose[:3]), quat_multiply(to_obs_q, goal_pose[3:])]))
        goal_m = pose_matrix(goal_pose)
        for hand in hands:
            rel = to_obs @ goal_m @ np.linalg.inv(pose_matrix(hand))
            goal_poses.append(np.concatenate([rel[:3, 3], _matrix_quat(rel)]))
    return np.concatenate(states), goal_poses


def _matrix_quat(matrix: np.ndarray) -> np.ndarray:
    """Quaternion wxyz (w >= 0) of a rotation matrix's upper-left 3x3."""
    r = matrix[:3, :3]
    w = np.sqrt(max(0.0, 1.0 + np.trace(r))) / 2
    if w > 1e-6:
        q = np.array([w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)])
    else:  # 180 degree turn: the largest diagonal entry picks the axis
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        v = np.zeros(3)
        v[i] = np.sqrt(max(0.0, 1.0 + r[i, i] - r[j, j] - r[k, k])) / 2
        v[j] = (r[j, i] + r[i, j]) / (4 * v[i])
        v[k] = (r[k, i] + r[i, k]) / (4 * v[i])
        q = np.array([(r[k, j] - r[j, k]) / (4 * v[i]), *v])
    return q / np.linalg.norm(q)


def _to_frames(raw: Mapping, world_to_obs: np.ndarray) -> np.ndarray:
    """(F,4,4): for each target frame (base, each TCP, goal), the transform from the obs frame to it."""
    extra = raw.get("extra", {})
    targets = [np.asarray(raw["agent"]["base_pose"], np.float64)] + _tcp_poses(extra)
    if "goal_pose" in extra:
        targets.append(np.asarray(extra["goal_pose"], np.float64))
    return np.stack([np.linalg.inv(world_to_obs @ pose_matrix(t)) for t in targets])


def process_pointcloud_ml2l(raw: Mapping, cfg: ObsProcessConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    xyz, rgb = _visible_points(raw, cfg)
    idx = _pad_by_repeating(len(xyz), cfg.n_points, rng)
    if idx.size:
        xyz, rgb = xyz[idx].astype(np.float64), rgb[idx]
    else:  # nothing visible: zeros keep every frame the same shape (ML2L would raise)
        xyz, rgb = np.zeros((cfg.n_points, 3)), np.zeros((cfg.n_points, 3))
    extra = raw.get("extra", {})
    if cfg.n_goal_points:
        goal = extra.get("goal_pos", extra.get("goal_pose"))
        if goal is None:
            raise UnsupportedModeError(
                f"n_goal_points={cfg.n_goal_points} needs extra/goal_pos, which this task does not provide",
                hint="set n_goal_points: 0",
            )
        k = cfg.n_goal_points
        goal_xyz = np.asarray(goal, np.float64)[None, :3] + rng.uniform(-1.0, 1.0, (k, 3)) * cfg.goal_point_radius_m
        xyz = np.concatenate([xyz, goal_xyz])
        rgb = np.concatenate([rgb, np.tile([0.0, 1.0, 0.0], (k, 1))])
    world_to_obs = np.linalg.inv(pose_matrix(_frame_pose(raw, cfg)))
    frame_states, goal_poses = _frame_related(raw, world_to_obs)
    agent = raw["agent"]
    state = [np.asarray(agent["qpos"], np.float64).ravel(), np.asarray(agent["qvel"], np.float64).ravel(),
             frame_states.ravel()]
    if goal_poses:
        state.append(np.stack(goal_poses).ravel())
    state += [np.asarray(v, np.float64).ravel() for k, v in extra.items() if k not in _FRAME_EXTRAS]
    out = {
        "xyz": _apply(world_to_obs, xyz).astype(np.float32),
        "rgb": rgb.astype(np.float32),
        "frame_related_states": frame_states.astype(np.float32),
    }
    if goal_poses:
        out["frame_goal_related_poses"] = np.stack(goal_poses).astype(np.float32)
    out["to_frames"] = _to_frames(raw, world_to_obs).astype(np.float32)
    out["state"] = np.concatenate(state).astype(np.float32)
    return out


def _flatten_state_dict(value, out: list) -> None:
    """ManiSkill2's flatten_state_dict order: keys in order, nested dicts depth first, empty ones skipped."""
    if isinstance(value, Mapping):
        for sub in value.values():
            _flatten_state_dict(sub, out)
    else:
        out.append(np.asarray(value, np.float64).ravel())


def _ml2l_cameras(images: Mapping) -> list[str]:
    if not all(c in images for c in ML2L_CAMERA_ORDER):
        raise UnsupportedModeError(
            f"obs_layout ml2l stacks the cameras {list(ML2L_CAMERA_ORDER)} as ML2L does; this observation has "
            f"{sorted(images)}", hint="use obs_layout: ms2flow for tasks with other cameras",
        )
    return list(ML2L_CAMERA_ORDER)


def process_rgbd_ml2l(raw: Mapping, cfg: ObsProcessConfig) -> dict[str, np.ndarray]:
    if "image" not in raw:
        raise UnsupportedModeError(
            f"obs_mode 'rgbd' needs a raw observation with an 'image' key, got keys {sorted(raw)}",
            hint="build the env with obs_mode='rgbd'",
        )
    images = raw["image"]
    cams = _ml2l_cameras(images)
    rgb = np.concatenate([np.asarray(images[c]["rgb"], np.uint8) for c in cams], axis=2)
    depth = np.concatenate([np.asarray(images[c]["depth"], np.float32) for c in cams], axis=2)
    rest = {k: v for k, v in raw.items() if k not in ("image", "camera_param")}
    extra = {k: v for k, v in rest.get("extra", {}).items() if k not in _RGBD_DROPPED_EXTRAS}
    hands = _tcp_poses(extra)
    if hands and "goal_pos" in extra:
        extra["tcp_to_goal_pos"] = np.asarray(extra["goal_pos"], np.float64) - hands[0][:3]  # world frame
    if "extra" in rest:
        rest["extra"] = extra
    parts: list[np.ndarray] = []
    _flatten_state_dict(rest, parts)
    state = np.concatenate(parts) if parts else np.zeros(0)
    return {
        "rgb": np.ascontiguousarray(rgb.transpose(2, 0, 1)),
        "depth": np.ascontiguousarray(depth.astype(np.float16).transpose(2, 0, 1)),
        "state": state.astype(np.float32),
    }
