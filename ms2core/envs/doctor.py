"""``ms2 doctor``: can this machine simulate and render? Versions, Vulkan device, one real frame."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from ms2core.envs.rendering import VulkanProbeError, layer_manifest_path, render_device_info, vulkan_devices
from ms2core.errors import RenderingUnavailableError

PACKAGES = ("ms2flow", "mani_skill2", "sapien", "torch", "numpy", "gymnasium", "zarr", "dask",
            "prefect", "mlflow", "pydantic")


@dataclass
class DoctorReport:
    versions: dict[str, str] = field(default_factory=dict)
    renderer: dict[str, str] | None = None  # the device SAPIEN renders on (rendering.configure_rendering)
    vulkan_devices: list[str] = field(default_factory=list)
    layer_manifest: str = ""
    frame_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds_to_first_frame: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# Distribution -> module, for the packages the simulator runtime replaces with placeholders.
_PLACEHOLDER_DISTS = {"torch": "torch", "opencv-python": "cv2"}


def _versions() -> dict[str, str]:
    from ms2core.envs.runtime import is_placeholder
    from ms2core.numerics import blas_kernel

    out = {"python": platform.python_version(), "openblas_core": blas_kernel()}  # rewards' last bits (ms2core.numerics)
    for dist in PACKAGES:
        if dist in _PLACEHOLDER_DISTS and is_placeholder(_PLACEHOLDER_DISTS[dist]):
            out[dist] = "placeholder (ms2flow simulator runtime: soft-body tasks refused)"
            continue
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def image_stats(rgb: np.ndarray, depth: np.ndarray) -> dict[str, float]:
    depth = depth[depth > 0]
    return dict(
        rgb_mean=float(rgb.mean()),
        rgb_std=float(rgb.std()),
        depth_min_m=float(depth.min()) if depth.size else 0.0,
        depth_max_m=float(depth.max()) if depth.size else 0.0,
    )


def run_doctor(env_id: str = "PickCube-v0", min_rgb_std: float = 5.0) -> DoctorReport:
    from ms2core.envs import make_env

    report = DoctorReport(versions=_versions())
    manifest = layer_manifest_path()
    report.layer_manifest = str(manifest) if manifest.exists() else f"missing ({manifest})"
    for dist in ("mani_skill2", "sapien"):
        if report.versions[dist] == "not installed":
            report.problems.append(f"{dist} is not installed: run scripts/setup")
    try:
        report.renderer = render_device_info()
        report.vulkan_devices = [
            f"{d.name} ({d.device_type}, Vulkan {d.api_version})" for d in vulkan_devices()
        ]
        if not report.vulkan_devices:
            report.problems.append("no Vulkan device: install mesa-vulkan-drivers >= 25 (scripts/setup does)")
    except (VulkanProbeError, RenderingUnavailableError) as exc:
        report.problems.append(str(exc))
    if report.problems:
        return report
    start = time.perf_counter()
    try:
        env = make_env(env_id, obs_mode="rgbd", control_mode="pd_ee_delta_pose")
        obs, _ = env.reset(seed=0)
        env.close()
    except RenderingUnavailableError as exc:
        report.problems.append(str(exc))
        return report
    report.seconds_to_first_frame = time.perf_counter() - start
    for cam, image in obs["image"].items():
        stats = image_stats(image["rgb"], image["depth"])
        report.frame_stats[cam] = stats
        if stats["rgb_std"] < min_rgb_std:
            report.problems.append(
                f"{cam} image is blank (rgb std {stats['rgb_std']:.2f} < {min_rgb_std}): the renderer produced no picture"
            )
    return report
