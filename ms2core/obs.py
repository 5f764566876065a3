"""Observation processing: raw ManiSkill2 observations -> the flat processed dict datasets store
and policies consume (ManiSkill2-Learn's convert_state / ManiSkill2_ObsWrapper semantics).

Processed observation contract (one step, numpy arrays)::

    state:       {"state": (S,) float32}
    pointcloud:  {"xyz": (N,3) float32, "rgb": (N,3) uint8, ["seg": (N,K) bool], "state": (S,) float32}
    rgbd:        {"rgb": (H,W,3C) uint8, "depth": (H,W,C) float32, ["seg": (H,W,C) bool], "state": (S,) float32}

``state`` is agent qpos, qvel then every ``extra`` entry flattened in key order
(base_pose is left out, like ManiSkill2-Learn's agent state); in ``state`` mode
the env's own flat vector is passed through. With ``obs_frame`` base/ee, points
and extra poses/positions are expressed in the robot base or TCP frame
(``*_to_*_pos`` keys are difference vectors and are only rotated). The C
cameras are stacked in the fixed order hand_camera, base_camera, then the others
sorted by name, so a dataset never depends on a dict order.

``obs_layout: ml2l`` swaps all of this for ManiSkill2-Learn's layout
(``ms2core.obs_ml2l``: its keys, 30/38-entry state, float rgb, channels-first
float16 depth, base-frame "world"); ``state`` mode is the same in both.

Point clouds: points with w == 0 (nothing hit) are dropped, then the ground
(world z < ground_z_m) if asked, then the cloud is downsampled to n_points by a
random subset or farthest-point sampling (fpsample), kept in camera raster order, padded by resampling when
fewer points are visible, and n_goal_points green points drawn in a small cube
around ``extra/goal_pos`` are appended (N = n_points + n_goal_points).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ms2core.errors import UnsupportedModeError
from storage_schemas.dataset import ObsProcessConfig

CAMERA_ORDER = ("hand_camera", "base_camera")
GOAL_POINT_RGB = (0, 255, 0)

__all__ = ["process_observation", "ordered_cameras", "observe_env", "state_layout", "CAMERA_ORDER"]


# -- small rigid-transform helpers (sapien poses: position xyz + quaternion wxyz) ---------------
def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ])


class _Frame:
    """World -> frame transform given the frame's pose in the world."""

    def __init__(self, pose: np.ndarray | None):
        self.identity = pose is None
        if pose is not None:
            pose = np.asarray(pose, np.float64)
            self.t = pose[:3]
            self.q = pose[3:7] / np.linalg.norm(pose[3:7])
            self.r = quat_to_matrix(self.q)

    def points(self, xyz: np.ndarray) -> np.ndarray:
        if self.identity:
            return xyz
        return (xyz - self.t) @ self.r  # == R^T (p - t) per row

    def vectors(self, v: np.ndarray) -> np.ndarray:
        return v if self.identity else v @ self.r

    def pose(self, pose: np.ndarray) -> np.ndarray:
        if self.identity:
            return pose
        q_inv = self.q * np.array([1, -1, -1, -1])
        return np.concatenate([self.points(pose[:3]), quat_multiply(q_inv, pose[3:7])])


def _frame_for(raw: Mapping, cfg: ObsProcessConfig) -> _Frame:
    if cfg.obs_frame == "world":
        return _Frame(None)
    if cfg.obs_frame == "base":
        pose = raw.get("agent", {}).get("base_pose")
        where = "agent/base_pose"
    else:
        pose = raw.get("extra", {}).get("tcp_pose")
        where = "extra/tcp_pose"
    if pose is None:
        raise UnsupportedModeError(
            f"obs_frame {cfg.obs_frame!r} needs {where} in the observation, which this task does not provide",
            hint="use obs_frame: world",
        )
    return _Frame(pose)


def _flatten_in_order(value, out: list) -> None:
    if isinstance(value, Mapping):
        for v in value.values():
            _flatten_in_order(v, out)
    else:
        out.append(np.asarray(value, np.float64).reshape(-1))


def _extra_in_frame(extra: Mapping, frame: _Frame) -> dict:
    out = {}
    for key, value in extra.items():
        if isinstance(value, Mapping) or frame.identity:
            out[key] = value
            continue
        value = np.asarray(value, np.float64)
        if key.endswith("_pose") and value.shape == (7,):
            out[key] = frame.pose(value)
        elif key.endswith("_pos") and value.shape == (3,):
            out[key] = frame.vectors(value) if "_to_" in key else frame.points(value)
        else:
            out[key] = value
    return out


def _state_vector(raw: Mapping, frame: _Frame) -> np.ndarray:
    agent = raw.get("agent", {})
    parts: list[np.ndarray] = []
    for key in ("qpos", "qvel"):
        if key in agent:
            parts.append(np.asarray(agent[key], np.float64).reshape(-1))
    _flatten_in_order(_extra_in_frame(raw.get("extra", {}), frame), parts)
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def _flat_size(value) -> int:
    shape = getattr(value, "shape", None)
    return int(np.prod(shape)) if shape is not None else int(np.asarray(value).size)


def state_layout(raw) -> dict[str, slice]:
    """Where each entry of a raw dict observation (or its gym Dict space) lands in the processed ``state``.

    Keys are ``agent/qpos``, ``agent/qvel`` and ``extra/<key>`` (nested extras as
    ``extra/<key>/<sub>``), in the order :func:`_state_vector` concatenates them;
    e.g. PickCube's point-cloud state puts ``extra/tcp_pose`` at ``slice(18, 25)``.
    Networks use it to find poses in the state (FrameMiner's end-effector frame).
    """
    if not isinstance(raw, Mapping):
        raise UnsupportedModeError(
            f"the state layout needs a dict observation (agent/extra), got {type(raw).__name__}",
            hint="use a ManiSkill2 env in pointcloud, rgbd or state_dict obs mode",
        )
    layout: dict[str, slice] = {}
    offset = 0

    def visit(prefix: str, value) -> None:
        nonlocal offset
        if isinstance(value, Mapping):
            for key, sub in value.items():
                visit(f"{prefix}/{key}", sub)
            return
        size = _flat_size(value)
        layout[prefix] = slice(offset, offset + size)
        offset += size

    # .keys(): ``in`` on a gym Dict space asks whether a sample belongs to it, not whether a key exists.
    agent = raw["agent"] if "agent" in raw.keys() else {}
    for key in ("qpos", "qvel"):
        if key in agent.keys():
            visit(f"agent/{key}", agent[key])
    extra = raw["extra"] if "extra" in raw.keys() else {}
    for key in extra.keys():
        visit(f"extra/{key}", extra[key])
    return layout


def ordered_cameras(names) -> list[str]:
    """hand_camera, base_camera (those present), then the other cameras sorted by name."""
    names = list(names)
    return [c for c in CAMERA_ORDER if c in names] + sorted(c for c in names if c not in CAMERA_ORDER)


# -- the three modes ------------------------------------------------------------------------------
def _process_state(raw, cfg: ObsProcessConfig) -> dict[str, np.ndarray]:
    if isinstance(raw, Mapping):  # state_dict: agent qpos/qvel + extra, like the visual modes
        return {"state": _state_vector(raw, _frame_for(raw, cfg))}
    return {"state": np.asarray(raw, np.float32).reshape(-1)}


def _downsample_indices(xyz: np.ndarray, n: int, method: str, rng: np.random.Generator) -> np.ndarray:
    count = xyz.shape[0]
    if count == 0:
        return np.zeros(0, np.int64)
    if count <= n:
        # Too few visible points: keep them all and pad by resampling.
        pad = rng.choice(count, n - count, replace=True) if n > count else np.zeros(0, np.int64)
        idx = np.concatenate([np.arange(count), pad])
    elif method == "fps":
        import fpsample  # lazy: only the fps option needs it

        start = int(rng.integers(count))
        idx = fpsample.bucket_fps_kdline_sampling(np.ascontiguousarray(xyz, np.float32), n, h=7, start_idx=start)
    else:
        idx = rng.choice(count, n, replace=False)
    # Point order carries no meaning for point-cloud networks; keeping the cameras' raster
    # order makes neighbouring rows similar, which is what lets the stored arrays compress.
    return np.sort(np.asarray(idx, np.int64))


def _process_pointcloud(raw: Mapping, cfg: ObsProcessConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if "pointcloud" not in raw:
        raise UnsupportedModeError(
            f"obs_mode 'pointcloud' needs a raw observation with a 'pointcloud' key, got keys {sorted(raw)}",
            hint="build the env with obs_mode='pointcloud' (or 'pointcloud_robot_seg' for include_seg)",
        )
    pc = raw["pointcloud"]
    xyzw = np.asarray(pc["xyzw"], np.float32)
    keep = xyzw[:, 3] > 0
    if cfg.remove_ground:
        keep &= xyzw[:, 2] >= cfg.ground_z_m
    xyz = xyzw[keep, :3]
    rgb = np.asarray(pc["rgb"])[keep] if cfg.include_rgb else None
    seg = None
    if cfg.include_seg:
        if "robot_seg" not in pc:
            raise UnsupportedModeError(
                "include_seg needs 'pointcloud/robot_seg' in the observation",
                hint="build the env with obs_mode='pointcloud_robot_seg'",
            )
        seg = np.asarray(pc["robot_seg"], bool).reshape(xyzw.shape[0], -1)[keep]

    idx = _downsample_indices(xyz, cfg.n_points, cfg.downsample, rng)
    frame = _frame_for(raw, cfg)
    if idx.size:
        out_xyz = xyz[idx]
        out_rgb = rgb[idx] if rgb is not None else None
        out_seg = seg[idx] if seg is not None else None
    else:  # nothing visible at all: zeros, so every frame keeps the same shape
        out_xyz = np.zeros((cfg.n_points, 3), np.float32)
        out_rgb = np.zeros((cfg.n_points, 3), np.uint8) if rgb is not None else None
        out_seg = np.zeros((cfg.n_points, 1 if seg is None else seg.shape[1]), bool) if seg is not None else None

    if cfg.n_goal_points:
        goal = raw.get("extra", {}).get("goal_pos")
        if goal is None:
            raise UnsupportedModeError(
                f"n_goal_points={cfg.n_goal_points} needs extra/goal_pos, which this task does not provide",
                hint="set n_goal_points: 0",
            )
        k, r = cfg.n_goal_points, cfg.goal_point_radius_m
        goal_xyz = np.asarray(goal, np.float64)[None, :3] + rng.uniform(-r, r, (k, 3))
        out_xyz = np.concatenate([out_xyz, goal_xyz.astype(np.float32)])
        if out_rgb is not None:
            out_rgb = np.concatenate([out_rgb, np.tile(np.array(GOAL_POINT_RGB, np.uint8), (k, 1))])
        if out_seg is not None:
            out_seg = np.concatenate([out_seg, np.zeros((k, out_seg.shape[1]), bool)])

    result = {"xyz": frame.points(out_xyz.astype(np.float64)).astype(np.float32)}
    if out_rgb is not None:
        result["rgb"] = np.ascontiguousarray(out_rgb, np.uint8)
    if out_seg is not None:
        result["seg"] = out_seg
    result["state"] = _state_vector(raw, frame)
    return result


def _process_rgbd(raw: Mapping, cfg: ObsProcessConfig) -> dict[str, np.ndarray]:
    if "image" not in raw:
        raise UnsupportedModeError(
            f"obs_mode 'rgbd' needs a raw observation with an 'image' key, got keys {sorted(raw)}",
            hint="build the env with obs_mode='rgbd' (or 'rgbd_robot_seg' for include_seg)",
        )
    images = raw["image"]
    cams = ordered_cameras(images)
    rgb, depth, seg = [], [], []
    for cam in cams:
        pictures = images[cam]
        if cfg.include_rgb:
            rgb.append(np.asarray(pictures["rgb"], np.uint8))
        if cfg.include_depth:
            depth.append(np.asarray(pictures["depth"], np.float32))
        if cfg.include_seg:
            if "robot_seg" not in pictures:
                raise UnsupportedModeError(
                    f"include_seg needs image/{cam}/robot_seg in the observation",
                    hint="build the env with obs_mode='rgbd_robot_seg'",
                )
            seg.append(np.asarray(pictures["robot_seg"], bool))
    shapes = {np.asarray(images[c]["rgb"] if "rgb" in images[c] else images[c]["depth"]).shape[:2] for c in cams}
    if len(shapes) > 1:
        raise UnsupportedModeError(
            f"cameras {cams} have different resolutions {sorted(shapes)}; rgbd stacks them along channels",
            hint="set one camera_size for every camera",
        )
    result = {}
    if rgb:
        result["rgb"] = np.concatenate(rgb, axis=2)
    if depth:
        result["depth"] = np.concatenate(depth, axis=2)
    if seg:
        result["seg"] = np.concatenate(seg, axis=2)
    result["state"] = _state_vector(raw, _frame_for(raw, cfg))
    return result


def process_observation(raw_obs, cfg: ObsProcessConfig, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """One raw ManiSkill2 observation (env.reset/step output) -> the processed flat dict.

    ``rng`` drives random downsampling and goal points; pass a seeded generator for
    reproducible datasets (the renderer seeds one per episode).
    """
    rng = rng if rng is not None else np.random.default_rng()
    if cfg.obs_mode == "state":
        return _process_state(raw_obs, cfg)
    if not isinstance(raw_obs, Mapping):
        raise UnsupportedModeError(
            f"obs_mode {cfg.obs_mode!r} needs a dict observation, got {type(raw_obs).__name__} "
            f"of shape {getattr(raw_obs, 'shape', None)}",
            hint=f"build the env with obs_mode={cfg.env_obs_mode!r}",
        )
    if cfg.obs_layout == "ml2l":  # ManiSkill2-Learn's keys, state vector, dtypes and frames
        from ms2core.obs_ml2l import process_pointcloud_ml2l, process_rgbd_ml2l

        if cfg.obs_mode == "pointcloud":
            return process_pointcloud_ml2l(raw_obs, cfg, rng)
        return process_rgbd_ml2l(raw_obs, cfg)
    if cfg.obs_mode == "pointcloud":
        return _process_pointcloud(raw_obs, cfg, rng)
    return _process_rgbd(raw_obs, cfg)


def observe_env(env):
    """The observation the env would return now (after set_state), through its observation wrappers.

    ``env.unwrapped.get_obs()`` gives ManiSkill2's raw image textures; the
    ObservationWrappers that ``make`` stacked (RGBD / point cloud / robot seg)
    turn them into what ``step`` returns, so apply them innermost first.
    """
    import gymnasium as gym

    wrappers = []
    layer = env
    while isinstance(layer, gym.Wrapper):
        wrappers.append(layer)
        layer = layer.env
    obs = layer.get_obs()
    for wrapper in reversed(wrappers):
        if isinstance(wrapper, gym.ObservationWrapper):
            obs = wrapper.observation(obs)
    return obs


class ObservationProcessor:
    """Picklable ``raw -> processed`` callable with fixed options and its own seeded RNG.

    Rollout workers and evaluation use it so that policies see observations
    processed exactly as the render stage processed their training data.
    """

    def __init__(self, cfg: ObsProcessConfig, seed: int = 0):
        self.cfg = cfg
        self.seed = seed
        self._rng: np.random.Generator | None = None

    def __call__(self, raw_obs) -> dict[str, np.ndarray]:
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        return process_observation(raw_obs, self.cfg, self._rng)

    def __getstate__(self):
        return {"cfg": self.cfg, "seed": self.seed, "_rng": None}
