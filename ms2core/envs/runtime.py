"""The simulator side of the packed runtime (ms2core/runtime.py): placeholders, soft-body refusal, ``ms2-sim``.

``<runtime>/bin/ms2-sim`` runs ``python -m ms2core.envs.runtime`` inside the runtime:

    ms2-sim doctor [--env-id PickCube-v0] [--json]   versions, the Vulkan device chosen, one real frame
    ms2-sim bench --obs-mode pointcloud --seconds 10  control steps/s of one env with random actions, and
                                                      of mani_skill2's own env (gym.make) in the same run

It uses argparse and prints plain text: the runtime carries no typer/rich.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from ms2core.errors import Ms2Error, SimulatorRuntimeError

#: ManiSkill2's soft-body (MPM) tasks live here; they need warp_maniskill, which needs real torch.
SOFT_BODY_PACKAGE = "mani_skill2.envs.mpm"
_PLACEHOLDER_SOURCE = Path(__file__).with_name("placeholder_module.py")


def is_placeholder(module: str) -> bool:
    """Is ``module`` (torch, cv2) the runtime's placeholder? Never imports a real package to find out."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        return bool(getattr(loaded, "__ms2flow_placeholder__", False))
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return False
    return Path(spec.origin).read_bytes() == _PLACEHOLDER_SOURCE.read_bytes()


def refuse_without_torch(env_id: str, env_cls: type) -> None:
    """Soft-body tasks cannot run where torch is the placeholder: say so before anything is built."""
    if env_cls.__module__.startswith(SOFT_BODY_PACKAGE) and is_placeholder("torch"):
        raise SimulatorRuntimeError(
            f"{env_id} is a soft-body task (warp_maniskill needs torch), and this interpreter "
            f"({sys.executable}) is the ms2flow simulator runtime, whose torch is a placeholder",
            hint="run soft-body tasks with an interpreter that has torch and sapien (e.g. the project's .venv: "
                 "sim_python / MS2FLOW_SIM_PYTHON); rigid-body tasks such as PickCube-v0 run in the runtime")


def runtime_info() -> dict | None:
    """The manifest this interpreter was unpacked from (``<prefix>/ms2flow-runtime.json``), if any."""
    path = Path(sys.prefix) / "ms2flow-runtime.json"
    return json.loads(path.read_text()) if path.is_file() else None


def code_root() -> str:
    from ms2core.workers.interpreter import code_root as root

    return root()


def code_origin() -> str:
    """Where this process's ms2flow code comes from: the runtime's packed copy, or a checkout on PYTHONPATH."""
    root = Path(code_root())
    if root.name != "site-packages":
        return "checkout (PYTHONPATH overlay)" if runtime_info() else "checkout"
    return "packed copy in the runtime" if runtime_info() else "installed package"


def doctor_lines(env_id: str) -> tuple[list[str], list[str], dict]:
    from ms2core.envs.doctor import run_doctor

    report = run_doctor(env_id)
    info = runtime_info()
    data = dict(versions=report.versions, renderer=report.renderer, vulkan_devices=report.vulkan_devices,
                layer_manifest=report.layer_manifest, frame_stats=report.frame_stats,
                seconds_to_first_frame=report.seconds_to_first_frame, problems=report.problems,
                runtime=None if info is None else dict(prefix=sys.prefix, python=info.get("python"),
                                                       created_at=info.get("created_at"),
                                                       platform=info.get("platform")),
                code_root=code_root(), code_origin=code_origin())
    lines = [f"{k:<24} {v}" for k, v in report.versions.items()]
    lines.append(f"{'runtime':<24} {sys.prefix if info else 'not a packed runtime'} (python {sys.executable})")
    lines.append(f"{'ms2flow code':<24} {data['code_root']} ({code_origin()})")
    r = report.renderer
    lines.append(f"{'render device':<24} " + (f"{r['name']} ({r['device_type']}, {r['driver']}, Vulkan "
                                             f"{r['api_version']}, selected: {r['selection']})" if r else "none"))
    lines.append(f"{'vulkan devices':<24} " + ("; ".join(report.vulkan_devices) or "none"))
    lines.append(f"{'ms2flow vulkan layer':<24} {report.layer_manifest}")
    for cam, stats in report.frame_stats.items():
        lines.append(f"{env_id + ' ' + cam:<24} rgb mean {stats['rgb_mean']:.1f} std {stats['rgb_std']:.1f}, "
                     f"depth {stats['depth_min_m']:.2f}-{stats['depth_max_m']:.2f} m")
    if report.seconds_to_first_frame is not None:
        lines.append(f"{'first frame':<24} {report.seconds_to_first_frame:.1f} s")
    return lines, report.problems, data


def _step_for(env, seconds: float, seed: int) -> tuple[int, float]:
    """Random-action control steps (resets included) for ``seconds``; the first step (shader compile) untimed."""
    import time

    env.reset(seed=seed)
    env.action_space.seed(seed)
    env.step(env.action_space.sample())
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps, time.perf_counter() - start


def bench(env_id: str, obs_mode: str, seconds: float, seed: int = 0, raw: bool = True) -> dict:
    """Control steps/s of one env through ``make_env``, and of mani_skill2's own env in the same run."""
    from ms2core.envs import import_mani_skill2, make_env
    from ms2core.envs.rendering import render_device_info

    out = dict(env_id=env_id, obs_mode=obs_mode, control_mode="pd_ee_delta_pose")
    env = make_env(env_id, obs_mode=obs_mode, control_mode="pd_ee_delta_pose")
    steps, elapsed = _step_for(env, seconds, seed)
    env.close()
    out.update(steps=steps, seconds=round(elapsed, 3), steps_per_s=round(steps / elapsed, 2))
    if raw:  # the baseline: mani_skill2's env without ms2flow's validation and wrappers, same process
        import gymnasium as gym

        import_mani_skill2()
        env = gym.make(env_id, obs_mode=obs_mode, control_mode="pd_ee_delta_pose")
        steps, elapsed = _step_for(env, seconds, seed)
        env.close()
        out.update(raw_steps_per_s=round(steps / elapsed, 2), ratio_to_raw=round(out["steps_per_s"] * elapsed / steps, 3))
    out["renderer"] = render_device_info()
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="ms2-sim", description="ms2flow simulator runtime tools")
    sub = parser.add_subparsers(dest="cmd", required=True)
    doc = sub.add_parser("doctor", help="versions, the Vulkan device chosen, one real frame")
    doc.add_argument("--env-id", default="PickCube-v0")
    doc.add_argument("--json", action="store_true")
    ben = sub.add_parser("bench", help="control steps/s of one env with random actions")
    ben.add_argument("--env-id", default="PickCube-v0")
    ben.add_argument("--obs-mode", default="pointcloud")
    ben.add_argument("--seconds", type=float, default=10.0)
    ben.add_argument("--no-raw", action="store_true", help="skip the raw mani_skill2 baseline")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "bench":
            print(json.dumps(bench(args.env_id, args.obs_mode, args.seconds, raw=not args.no_raw)))
            return 0
        lines, problems, data = doctor_lines(args.env_id)
    except Ms2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(data, indent=1) if args.json else "\n".join(lines))
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if not problems and not args.json:
        print("ok: simulation and rendering work with this interpreter")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
