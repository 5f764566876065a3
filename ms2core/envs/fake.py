"""A simulator-free stand-in with ManiSkill2's PickCube-v0 spaces, for the fast test tier.

Same observation layouts as ManiSkill2 0.5.3 (``state`` flat float64 vector of
51; ``state_dict``; ``rgbd`` with ``image/<camera>/{rgb,depth}`` and
``camera_param``; ``pointcloud`` with ``pointcloud/{xyzw,rgb}``; ``*_robot_seg``
add ``Segmentation``/``robot_seg``), the same action spaces per control mode,
``get_state``/``set_state``, ``evaluate()``, ``info["success"]``, and ``step`` made of BaseEnv.step's parts
(``step_action``, ``get_info``, ``get_reward(obs=, action=, info=)``, ``get_done``: terminated at success).

The dynamics are a toy on purpose: the TCP is a point moved by the first three
action components (0.05 m per unit per step) and success is reaching the goal
within 2.5 cm. A policy that outputs ``clip((goal - tcp) / 0.05)`` solves it,
so learning code can be tested end to end in seconds.
"""

from __future__ import annotations

from collections import OrderedDict

import gymnasium as gym
import numpy as np
from gymnasium import spaces

_PANDA_QLIMITS_LOW = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973, -1.0], np.float32)
_PANDA_QLIMITS_HIGH = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973, 1.0], np.float32)  # gripper is normalised

ACTION_DIMS = {
    "pd_ee_delta_pose": 7,
    "pd_ee_target_delta_pose": 7,
    "pd_ee_delta_pose_align": 7,
    "pd_ee_delta_pos": 4,
    "pd_ee_target_delta_pos": 4,
    "pd_joint_delta_pos": 8,
    "pd_joint_target_delta_pos": 8,
    "pd_joint_vel": 8,
    "pd_joint_pos": 8,
    "pd_joint_pos_vel": 15,
    "pd_joint_delta_pos_vel": 15,
}
STEP_SIZE_M = 0.05
SUCCESS_RADIUS_M = 0.025
CAMERAS = ("base_camera", "hand_camera")
FAKE_STATE_DIM = 10  # tcp(3) goal(3) cube(3) elapsed_steps(1)


def fake_action_space(control_mode: str) -> spaces.Box:
    if control_mode == "pd_joint_pos":
        return spaces.Box(_PANDA_QLIMITS_LOW, _PANDA_QLIMITS_HIGH, dtype=np.float32)
    if control_mode not in ACTION_DIMS:
        raise ValueError(f"fake env has no controller {control_mode!r}; allowed: {sorted(ACTION_DIMS)}")
    dim = ACTION_DIMS[control_mode]
    return spaces.Box(-1.0, 1.0, (dim,), dtype=np.float32)


def _box(shape, dtype=np.float32, low=-np.inf, high=np.inf):
    return spaces.Box(low, high, shape, dtype=dtype)


class FakeManiSkillEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array", "cameras"], "render_fps": 20}

    def __init__(
        self,
        env_id: str = "PickCube-v0",
        obs_mode: str = "state",
        control_mode: str = "pd_ee_delta_pose",
        reward_mode: str = "dense",
        camera_size: tuple[int, int] = (128, 128),
        n_points: int = 32768,
        render_mode: str | None = None,
    ):
        self.env_id = env_id
        self.obs_mode = obs_mode
        self.control_mode = control_mode
        self.reward_mode = reward_mode
        self.render_mode = render_mode
        self.camera_width, self.camera_height = camera_size
        self.n_points = n_points
        self.action_space = fake_action_space(control_mode)
        self._rng = np.random.default_rng(0)
        self._tcp = np.zeros(3)
        self._goal = np.zeros(3)
        self._cube = np.zeros(3)
        self._elapsed_steps = 0
        self._main_seed = None
        self.observation_space = self._build_observation_space()

    # -- spaces ---------------------------------------------------------------
    def _agent_space(self):
        return spaces.Dict(
            OrderedDict(qpos=_box((9,)), qvel=_box((9,)), base_pose=_box((7,)))
        )

    def _extra_space(self, with_state: bool):
        extra = OrderedDict(tcp_pose=_box((7,)), goal_pos=_box((3,), np.float64))
        if with_state:
            extra.update(
                tcp_to_goal_pos=_box((3,)), obj_pose=_box((7,)), tcp_to_obj_pos=_box((3,)),
                obj_to_goal_pos=_box((3,)),
            )
        return spaces.Dict(extra)

    def _build_observation_space(self):
        mode = self.obs_mode
        if mode == "state":
            return _box((51,), np.float64)
        if mode == "none":
            return spaces.Dict()
        base = OrderedDict(agent=self._agent_space(), extra=self._extra_space(mode == "state_dict"))
        if mode == "state_dict":
            return spaces.Dict(base)
        w, h = self.camera_width, self.camera_height
        seg = mode.endswith("robot_seg")
        if mode.startswith("rgbd"):
            params, images = OrderedDict(), OrderedDict()
            for cam in CAMERAS:
                params[cam] = spaces.Dict(
                    OrderedDict(extrinsic_cv=_box((4, 4)), cam2world_gl=_box((4, 4)), intrinsic_cv=_box((3, 3)))
                )
                img = OrderedDict(rgb=_box((h, w, 3), np.uint8, 0, 255), depth=_box((h, w, 1), np.float32, 0))
                if seg:
                    img["robot_seg"] = spaces.Box(0, 1, (h, w, 1), dtype=np.bool_)
                images[cam] = spaces.Dict(img)
            base["camera_param"] = spaces.Dict(params)
            base["image"] = spaces.Dict(images)
            return spaces.Dict(base)
        if mode.startswith("pointcloud"):
            n = self.n_points
            pc = OrderedDict(xyzw=_box((n, 4)), rgb=_box((n, 3), np.uint8, 0, 255))
            if seg:
                pc["robot_seg"] = spaces.Box(0, 1, (n, 1), dtype=np.bool_)
            base["pointcloud"] = spaces.Dict(pc)
            return spaces.Dict(base)
        raise ValueError(f"fake env has no obs mode {mode!r}")

    # -- state ----------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        return np.concatenate([self._tcp, self._goal, self._cube, [self._elapsed_steps]]).astype(np.float32)

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (FAKE_STATE_DIM,):
            raise ValueError(f"fake env state must have shape ({FAKE_STATE_DIM},), got {state.shape}")
        self._tcp, self._goal, self._cube = state[0:3].copy(), state[3:6].copy(), state[6:9].copy()
        self._elapsed_steps = int(state[9])

    @property
    def elapsed_steps(self) -> int:
        return self._elapsed_steps

    def evaluate(self) -> dict:
        dist = float(np.linalg.norm(self._goal - self._tcp))
        return dict(success=dist < SUCCESS_RADIUS_M, tcp_to_goal_dist=dist)

    # -- gym API --------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._main_seed = seed
        self._rng = np.random.default_rng(self._main_seed)
        self._tcp = np.array([0.0, 0.0, 0.2]) + self._rng.uniform(-0.02, 0.02, 3)
        self._cube = np.concatenate([self._rng.uniform(-0.1, 0.1, 2), [0.02]])
        self._goal = np.concatenate([self._rng.uniform(-0.1, 0.1, 2), self._rng.uniform(0.05, 0.3, 1)])
        self._elapsed_steps = 0
        return self.get_obs(), {}

    def step(self, action):
        """ManiSkill2 0.5.3's BaseEnv.step, part for part (ms2core.envs.episode_sim calls the parts without get_obs)."""
        self.step_action(action)
        self._elapsed_steps += 1
        obs = self.get_obs()
        info = self.get_info(obs=obs)
        reward = self.get_reward(obs=obs, action=action, info=info)
        terminated = self.get_done(obs=obs, info=info)
        return obs, reward, terminated, False, info

    def step_action(self, action) -> None:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action shape {action.shape} != action space {self.action_space.shape}")
        move = np.clip(action[:3], -1.0, 1.0) if self.control_mode != "pd_joint_pos" else action[:3] / 3.0
        self._tcp = self._tcp + STEP_SIZE_M * move

    def get_info(self, **kwargs) -> dict:
        info = dict(elapsed_steps=self._elapsed_steps)
        info.update(self.evaluate())
        return info

    def get_done(self, info: dict, **kwargs) -> bool:
        return bool(info["success"])  # ManiSkill2 0.5: the task ends the episode at success

    def get_reward(self, *, info: dict, **kwargs) -> float:
        if self.reward_mode == "sparse":
            return float(info["success"])
        reward = 1.0 - np.tanh(5.0 * info["tcp_to_goal_dist"]) + 5.0 * float(info["success"])
        return reward / 6.0 if self.reward_mode == "normalized_dense" else reward

    # -- observations ---------------------------------------------------------
    def _agent(self):
        qpos = np.zeros(9, np.float32)
        qpos[:3] = self._tcp
        qpos[7:] = 0.04
        return OrderedDict(
            qpos=qpos, qvel=np.zeros(9, np.float32),
            base_pose=np.array([-0.615, 0, 0, 1, 0, 0, 0], np.float32),
        )

    def _extra(self, with_state: bool):
        tcp_pose = np.concatenate([self._tcp, [1, 0, 0, 0]]).astype(np.float32)
        extra = OrderedDict(tcp_pose=tcp_pose, goal_pos=self._goal.astype(np.float64))
        if with_state:
            extra.update(
                tcp_to_goal_pos=(self._goal - self._tcp).astype(np.float32),
                obj_pose=np.concatenate([self._cube, [1, 0, 0, 0]]).astype(np.float32),
                tcp_to_obj_pos=(self._cube - self._tcp).astype(np.float32),
                obj_to_goal_pos=(self._goal - self._cube).astype(np.float32),
            )
        return extra

    def get_obs(self):
        mode = self.obs_mode
        if mode == "none":
            return OrderedDict()
        if mode == "state":
            agent, extra = self._agent(), self._extra(True)
            return np.concatenate([*agent.values(), *extra.values()]).astype(np.float64)
        obs = OrderedDict(agent=self._agent(), extra=self._extra(mode == "state_dict"))
        if mode.startswith("rgbd"):
            obs["camera_param"] = OrderedDict(
                (cam, OrderedDict(extrinsic_cv=np.eye(4, dtype=np.float32), cam2world_gl=np.eye(4, dtype=np.float32),
                                  intrinsic_cv=np.eye(3, dtype=np.float32)))
                for cam in CAMERAS
            )
            obs["image"] = OrderedDict((cam, self._picture(i, mode.endswith("robot_seg"))) for i, cam in enumerate(CAMERAS))
        elif mode.startswith("pointcloud"):
            obs["pointcloud"] = self._pointcloud(mode.endswith("robot_seg"))
        return obs

    def _pixel(self, xyz):
        u = int(np.clip((xyz[0] + 0.3) / 0.6 * (self.camera_width - 1), 0, self.camera_width - 1))
        v = int(np.clip((0.4 - xyz[2]) / 0.5 * (self.camera_height - 1), 0, self.camera_height - 1))
        return u, v

    def _picture(self, camera_index: int, with_seg: bool):
        h, w = self.camera_height, self.camera_width
        rgb = np.full((h, w, 3), 90 + 20 * camera_index, np.uint8)
        rgb[h // 2:, :, :] = (120, 110, 100)  # table
        depth = np.linspace(0.5, 2.0, h, dtype=np.float32)[:, None, None].repeat(w, 1)
        seg = np.zeros((h, w, 1), bool)
        for xyz, colour in ((self._cube, (200, 30, 30)), (self._goal, (30, 200, 30)), (self._tcp, (30, 30, 200))):
            u, v = self._pixel(xyz)
            rgb[max(v - 3, 0):v + 4, max(u - 3, 0):u + 4] = colour
            depth[max(v - 3, 0):v + 4, max(u - 3, 0):u + 4] = 0.6
        u, v = self._pixel(self._tcp)
        seg[max(v - 3, 0):v + 4, max(u - 3, 0):u + 4] = True
        out = OrderedDict(rgb=rgb, depth=depth)
        if with_seg:
            out["robot_seg"] = seg
        return out

    def _pointcloud(self, with_seg: bool):
        n = self.n_points
        rng = np.random.default_rng(self._elapsed_steps)
        xyz = np.empty((n, 3), np.float32)
        n_obj = n // 8
        xyz[:-3 * n_obj] = np.column_stack(
            [rng.uniform(-0.5, 0.5, n - 3 * n_obj), rng.uniform(-0.5, 0.5, n - 3 * n_obj), np.zeros(n - 3 * n_obj)]
        )
        rgb = np.full((n, 3), 110, np.uint8)
        seg = np.zeros((n, 1), bool)
        for k, (centre, colour) in enumerate(((self._cube, 200), (self._goal, 60), (self._tcp, 30))):
            sl = slice(n - (3 - k) * n_obj, n - (2 - k) * n_obj)
            xyz[sl] = centre + rng.normal(0, 0.01, (n_obj, 3))
            rgb[sl] = colour
            if k == 2:
                seg[sl] = True
        out = OrderedDict(xyzw=np.column_stack([xyz, np.ones(n, np.float32)]), rgb=rgb)
        if with_seg:
            out["robot_seg"] = seg
        return out

    def render(self):
        return self._picture(0, False)["rgb"]
