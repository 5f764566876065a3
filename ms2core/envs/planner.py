"""Expert demonstrations by motion planning: mplib screw-motion plans for ManiSkill2's Panda, recorded in pd_joint_pos.

ManiSkill2's official demos were made with mplib and recorded with the
``pd_joint_pos`` controller plus env states; we do the same, so ManiSkill2's
own conversion (``from_pd_joint_pos``) applies to our demos unchanged.

A solution is a sequence of phases (reach above, descend, close the gripper,
carry, release). Each phase plans from the robot's *current* joint positions
with ``mplib.Planner.plan_screw`` (deterministic: no random sampling, unlike
RRT), sampled at the env's control period, so each planned waypoint is one
pd_joint_pos action ``[q_1..q_7, gripper]`` (gripper +1 open, -1 closed).
After the last phase the arm holds still until ``info["success"]`` (PickCube
also requires a static robot), and the episode ends at the first success.

``solve_episode`` also drives the simulator-free fake env with a scripted
reach-the-goal expert, so the generation pipeline is testable without SAPIEN.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ms2core.trajectory import Episode, jsonable_info
from storage_schemas.demos import EpisodeMeta

GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = -1.0
GRIPPER_STEPS = 8  # at most this many control steps to close/open the Panda gripper (20 Hz)
GRIPPER_MIN_STEPS = 2
# The fingers have settled once they move less than this in one control step (a closed grasp stops in
# 2-3 steps). Waiting the full GRIPPER_STEPS after that records several identical static states labelled
# "do nothing" right before the lift that starts from the very same state: a cloned policy learns a fixed
# point there and never lifts (PickCube BC failures were almost all "cube grasped, arm idle on the table").
GRIPPER_SETTLED_M = 5e-4
HOLD_STEPS_MAX = 25  # control steps to wait for success after the last phase
REACH_HEIGHT_M = 0.06  # approach from this far above the grasp
JOINT_VEL_LIMIT_RAD_S = 1.0   # at planner_speed 1; speed s plans with s x these and s^2 x the acceleration
JOINT_ACC_LIMIT_RAD_S2 = 1.0  # (the same path in 1/s of the time, when no limit of the robot is reached)
RECORD_CONTROL_MODE = "pd_joint_pos"

#: Tasks the planner solves (PegInsertionSide-v0 and PlugCharger-v0 need
#: insertion-precision alignment this planner does not attempt).
PLANNED_ENV_IDS = ("PickCube-v0", "LiftCube-v0", "StackCube-v0", "PegInsertionSide-v0")


class PlanningFailed(RuntimeError):
    """The planner found no path (IK/screw failure) or the episode did not succeed."""


@dataclass
class SolveResult:
    seed: int
    success: bool
    episode: Episode | None  # None when not successful
    reason: str = ""
    num_steps: int = 0


class _Recorder:
    """Steps the env with pd_joint_pos actions, keeping actions, env states and success flags."""

    def __init__(self, env, max_steps: int):
        self.env = env
        self.base = env.unwrapped
        self.max_steps = max_steps
        self.actions: list[np.ndarray] = []
        self.states: list[np.ndarray] = [self.base.get_state()]
        self.success: list[bool] = []
        self.info: dict = {}

    @property
    def done(self) -> bool:
        return bool(self.success and self.success[-1]) or len(self.actions) >= self.max_steps

    def step(self, action: np.ndarray) -> None:
        if self.done:
            return
        action = np.asarray(action, np.float32)
        _, _, _, _, info = self.env.step(action)
        self.actions.append(action)
        self.states.append(self.base.get_state())
        self.success.append(bool(info.get("success", False)))
        self.info = info


class PandaScrewPlanner:
    """mplib planner for the env's Panda (URDF/SRDF shipped inside mani_skill2), base pose taken from the scene."""

    def __init__(self, env, action_noise_rad: float = 0.0, speed: float = 1.0):
        import mplib

        base = env.unwrapped
        agent = base.agent
        urdf = agent.urdf_path.format(PACKAGE_ASSET_DIR=_asset_dir())
        robot = agent.robot
        link_names = [link.get_name() for link in robot.get_links()]
        joint_names = [joint.get_name() for joint in robot.get_active_joints()]
        self.planner = mplib.Planner(
            urdf=urdf,
            srdf=urdf.replace(".urdf", ".srdf"),
            user_link_names=link_names,
            user_joint_names=joint_names,
            move_group="panda_hand_tcp",
            joint_vel_limits=np.full(7, JOINT_VEL_LIMIT_RAD_S * speed),
            joint_acc_limits=np.full(7, JOINT_ACC_LIMIT_RAD_S2 * speed**2),
        )
        self.base = base
        self.time_step_s = 1.0 / base.control_freq
        self.action_noise_rad = float(action_noise_rad)
        self.rng = np.random.default_rng(0)

    @property
    def robot(self):
        # Not cached: tasks that rebuild the scene on reset (PegInsertionSide) replace the articulation,
        # and touching the old one crashes SAPIEN.
        return self.base.agent.robot

    def reset(self, seed: int) -> None:
        """After env.reset(seed): the robot's base pose, and the joint-target noise of this seed (so the noise
        of an episode does not depend on which worker solved which seeds before)."""
        pose = self.robot.pose
        self.planner.set_base_pose(np.concatenate([pose.p, pose.q]))
        self.rng = np.random.default_rng(seed)

    def move_to(self, rec: _Recorder, target_pose, gripper: float) -> None:
        """Screw-motion plan from the current qpos to ``target_pose`` (sapien.Pose of the TCP), executed.

        With ``action_noise_rad`` > 0 every arm joint target is perturbed by N(0, sigma^2) (DART-style
        noise injection): the perturbed targets are what drives the robot and what is recorded, and the
        next clean, absolute target pulls the arm back, so the demos contain small deviations followed
        by their corrections, which a cloned policy needs to recover from its own errors.
        """
        goal = np.concatenate([target_pose.p, target_pose.q])
        qpos = self.robot.get_qpos()
        result = self.planner.plan_screw(goal, qpos, time_step=self.time_step_s)
        if result["status"] != "Success":
            raise PlanningFailed(f"mplib: {result['status']} (TCP target at {np.round(target_pose.p, 3).tolist()})")
        for q in result["position"]:
            if self.action_noise_rad > 0:
                q = q + self.rng.normal(0.0, self.action_noise_rad, size=q.shape)
            rec.step(np.concatenate([q, [gripper]]))

    def actuate_gripper(self, rec: _Recorder, gripper: float, max_steps: int = GRIPPER_STEPS) -> None:
        """Hold the arm and drive the gripper until the fingers settle (at least GRIPPER_MIN_STEPS steps)."""
        arm_target = rec.actions[-1][:7] if rec.actions else self.robot.get_qpos()[:7]
        fingers = self.robot.get_qpos()[7:]
        for i in range(max_steps):
            rec.step(np.concatenate([arm_target, [gripper]]))
            now = self.robot.get_qpos()[7:]
            settled = float(np.abs(now - fingers).max()) < GRIPPER_SETTLED_M
            fingers = now
            if rec.done or (i + 1 >= GRIPPER_MIN_STEPS and settled):
                return


def _asset_dir() -> str:
    from mani_skill2 import PACKAGE_ASSET_DIR

    return str(PACKAGE_ASSET_DIR)


def _top_down_grasp(base, actor):
    """TCP pose grasping a z-rotated box at its centre from above, closing along the box side needing least wrist turn."""
    from transforms3d.quaternions import quat2mat

    rot = quat2mat(actor.pose.q)
    approaching = np.array([0.0, 0.0, -1.0])
    tcp_closing = quat2mat(base.tcp.pose.q)[:, 1]
    candidates = []
    for axis in (rot[:, 0], rot[:, 1]):
        horizontal = np.array([axis[0], axis[1], 0.0])
        horizontal /= np.linalg.norm(horizontal)
        for sign in (1.0, -1.0):
            candidates.append(sign * horizontal)
    closing = max(candidates, key=lambda c: float(c @ tcp_closing))
    return base.agent.build_grasp_pose(approaching, closing, actor.pose.p)


def _solve_pick(base, planner: PandaScrewPlanner, rec: _Recorder, actor):
    """Reach, descend, grasp; returns the grasp pose (the carry phases reuse its orientation)."""
    import sapien.core as sapien

    grasp = _top_down_grasp(base, actor)
    reach = sapien.Pose(grasp.p + [0, 0, REACH_HEIGHT_M], grasp.q)
    planner.move_to(rec, reach, GRIPPER_OPEN)
    planner.move_to(rec, grasp, GRIPPER_OPEN)
    planner.actuate_gripper(rec, GRIPPER_CLOSED)
    return grasp


def _solve_pick_cube(base, planner, rec):
    import sapien.core as sapien

    grasp = _solve_pick(base, planner, rec, base.obj)
    planner.move_to(rec, sapien.Pose(np.asarray(base.goal_pos, np.float64), grasp.q), GRIPPER_CLOSED)


def _solve_lift_cube(base, planner, rec):
    import sapien.core as sapien

    grasp = _solve_pick(base, planner, rec, base.obj)
    target = grasp.p + [0, 0, base.goal_height + 0.02]
    planner.move_to(rec, sapien.Pose(target, grasp.q), GRIPPER_CLOSED)


def _solve_stack_cube(base, planner, rec):
    import sapien.core as sapien

    half = float(base.box_half_size[2])
    grasp = _solve_pick(base, planner, rec, base.cubeA)
    lift = sapien.Pose(grasp.p + [0, 0, 0.08], grasp.q)
    planner.move_to(rec, lift, GRIPPER_CLOSED)
    above_b = np.asarray(base.cubeB.pose.p, np.float64) + [0, 0, 2 * half + 0.04]
    planner.move_to(rec, sapien.Pose(above_b, grasp.q), GRIPPER_CLOSED)
    on_b = np.asarray(base.cubeB.pose.p, np.float64) + [0, 0, 2 * half + 0.002]
    planner.move_to(rec, sapien.Pose(on_b, grasp.q), GRIPPER_CLOSED)
    planner.actuate_gripper(rec, GRIPPER_OPEN)
    planner.move_to(rec, sapien.Pose(on_b + [0, 0, 0.05], grasp.q), GRIPPER_OPEN)


def _solve_peg_insertion_side(base, planner, rec):
    """Grasp the peg's tail half, lift, line it up with the hole just outside it (corrected twice), push in."""
    import sapien.core as sapien
    from transforms3d.quaternions import quat2mat

    peg = base.peg
    length = float(base.peg_half_size[0])
    peg_x = quat2mat(peg.pose.q)[:, 0]
    closing = np.cross([0.0, 0.0, 1.0], peg_x)  # across the peg, horizontal
    closing /= np.linalg.norm(closing)
    if closing @ quat2mat(base.tcp.pose.q)[:, 1] < 0:
        closing = -closing
    centre = peg.pose.transform(sapien.Pose([-0.5 * length, 0, 0])).p  # the tail half: the head must stay free
    grasp = base.agent.build_grasp_pose(np.array([0.0, 0.0, -1.0]), closing, centre)
    planner.move_to(rec, sapien.Pose(grasp.p + [0, 0, REACH_HEIGHT_M], grasp.q), GRIPPER_OPEN)
    planner.move_to(rec, grasp, GRIPPER_OPEN)
    planner.actuate_gripper(rec, GRIPPER_CLOSED)
    planner.move_to(rec, sapien.Pose(grasp.p + [0, 0, 0.1], grasp.q), GRIPPER_CLOSED)
    # goal_pose has the peg head at the hole's centre, ``length`` deep: first hold the head 2 cm before the
    # entry and correct the peg's measured pose error there, integrating it into the TCP target (the held peg
    # sags under PD tracking; the 3 mm clearance needs the steady-state error removed), then push along the axis.
    pre_insert = base.goal_pose * sapien.Pose([-(length + 0.02), 0, 0])
    tcp_target = pre_insert * peg.pose.inv() * base.tcp.pose
    for _ in range(3):
        planner.move_to(rec, tcp_target, GRIPPER_CLOSED)
        tcp_target = pre_insert * peg.pose.inv() * tcp_target
    peg_to_target = pre_insert.inv() * tcp_target
    for depth_m in (-0.5 * length, 0.01):
        planner.move_to(rec, base.goal_pose * sapien.Pose([depth_m, 0, 0]) * peg_to_target, GRIPPER_CLOSED)


_SOLVERS = {
    "PickCube-v0": _solve_pick_cube,
    "LiftCube-v0": _solve_lift_cube,
    "StackCube-v0": _solve_stack_cube,
    "PegInsertionSide-v0": _solve_peg_insertion_side,
}


def _solve_fake(env, rec: _Recorder) -> None:
    """Scripted expert for the fake env: move the TCP point straight to the goal (pd_joint_pos scale 1/3)."""
    base = env.unwrapped
    while not rec.done:
        step = np.clip((base._goal - base._tcp) / 0.05, -1.0, 1.0) * 3.0
        action = np.zeros(env.action_space.shape, np.float32)
        action[:3] = step
        # inside the action space (Panda joint limits), as the demo-pair checks require of every action
        rec.step(np.clip(action, env.action_space.low, env.action_space.high).astype(np.float32))


class EpisodeSolver:
    """One per worker process: keeps the env (and planner) alive across seeds."""

    def __init__(self, env_id: str, backend: str = "sapien", max_episode_steps: int | None = None,
                 action_noise_rad: float = 0.0, speed: float = 1.0):
        from ms2core.envs import make_env

        if backend == "sapien" and env_id not in _SOLVERS:
            from ms2core.errors import UnsupportedModeError, unknown_choice

            raise unknown_choice("env id for the demo generator:", env_id, _SOLVERS, cls=UnsupportedModeError)
        self.env_id = env_id
        self.backend = backend
        self.env = make_env(env_id, obs_mode="none", control_mode=RECORD_CONTROL_MODE, reward_mode="dense",
                            max_episode_steps=max_episode_steps, backend=backend)
        self.max_episode_steps = int(self.env._max_episode_steps)
        self.planner = PandaScrewPlanner(self.env, action_noise_rad, speed) if backend == "sapien" else None

    @property
    def env_kwargs(self) -> dict:
        return {"obs_mode": "none", "control_mode": RECORD_CONTROL_MODE, "reward_mode": "dense"}

    def solve(self, seed: int) -> SolveResult:
        # a fresh physics scene for every seed, as replay and render simulate an episode: in a reused scene the
        # seeds this worker solved before changed the planned actions (~1e-4 in half the episodes)
        from ms2core.envs.episode_sim import reset_fresh

        reset_fresh(self.env, seed)
        rec = _Recorder(self.env, self.max_episode_steps)
        try:
            if self.planner is None:
                _solve_fake(self.env, rec)
            else:
                self.planner.reset(seed)
                _SOLVERS[self.env_id](self.env.unwrapped, self.planner, rec)
                hold = rec.actions[-1].copy() if rec.actions else None
                for _ in range(HOLD_STEPS_MAX):
                    if rec.done or hold is None:
                        break
                    rec.step(hold)
        except PlanningFailed as exc:
            return SolveResult(seed, False, None, reason=str(exc), num_steps=len(rec.actions))
        if not (rec.success and rec.success[-1]):
            why = "time limit reached" if len(rec.actions) >= self.max_episode_steps else "task not solved"
            return SolveResult(seed, False, None, reason=f"{why} after {len(rec.actions)} steps",
                               num_steps=len(rec.actions))
        n = len(rec.actions)
        meta = EpisodeMeta(episode_id=0, episode_seed=seed, reset_kwargs={"seed": seed},
                           control_mode=RECORD_CONTROL_MODE, elapsed_steps=n, info=jsonable_info(rec.info))
        episode = Episode(meta=meta, actions=np.stack(rec.actions).astype(np.float32),
                          success=np.asarray(rec.success, bool), env_states=np.stack(rec.states).astype(np.float32))
        return SolveResult(seed, True, episode, num_steps=n)

    def close(self) -> None:
        self.env.close()


@dataclass(frozen=True)
class SolveTask:
    env_id: str
    backend: str
    max_episode_steps: int | None
    seed: int
    action_noise_rad: float = 0.0
    speed: float = 1.0


def solve_in_worker(task: SolveTask) -> SolveResult:
    """Pool entry point: one solver (env + planner) per worker's env cache, reused across seeds."""
    from ms2core.envs.cache import env_cache

    key = ("ms2core.planner", replace(task, seed=0))  # every field but the seed: a new option cannot be left out
    solver = env_cache().get(key, lambda: EpisodeSolver(task.env_id, task.backend, task.max_episode_steps,
                                                        task.action_noise_rad, task.speed))
    return solver.solve(task.seed)


def registered_max_episode_steps(env_id: str) -> int | None:
    from ms2core.envs import import_mani_skill2

    import_mani_skill2()
    from mani_skill2.utils.registration import REGISTERED_ENVS

    return REGISTERED_ENVS[env_id].max_episode_steps
