"""Vulkan device selection for SAPIEN 2.2: the NVIDIA GPU where there is one, else lavapipe + the ms2flow layer.

:func:`configure_rendering` (run once per process, before SAPIEN first touches Vulkan) picks the
device: with ``MS2FLOW_RENDER_DEVICE=auto`` (default) an NVIDIA ICD that enumerates a device wins and
the loader is restricted to it (``VK_DRIVER_FILES``), so SAPIEN cannot land on lavapipe when both are
installed; otherwise lavapipe with the layer below. ``gpu`` requires NVIDIA, ``cpu`` forces lavapipe.
A ``VK_DRIVER_FILES`` / ``VK_ICD_FILENAMES`` the user set is respected as is.

SAPIEN needs a Vulkan device even for state observations. On machines without
a GPU, Mesa's lavapipe provides one, but SAPIEN also requests
``VK_KHR_external_semaphore_fd`` (CUDA interop), which lavapipe lacks. The
ms2flow layer (``scripts/vulkan_cpu_layer``, built by ``scripts/setup`` into
``<venv>/share/vulkan/implicit_layer.d``) hides that request. It is an implicit
layer enabled by ``MS2FLOW_VK_CPU_LAYER=1``; on a real GPU it does nothing.

Nothing here imports sapien; :func:`vulkan_devices` talks to the loader
through ctypes so ``ms2 doctor`` can say what is missing without a C++ trace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from ms2core.errors import ConfigError, RenderingUnavailableError

LAYER_NAME = "VK_LAYER_MS2FLOW_cpu"
LAYER_MANIFEST = "ms2flow_cpu_layer.json"
SETUP_HINT = "run scripts/setup (as root) to install libvulkan1, Mesa's lavapipe >= 25 and the ms2flow Vulkan layer"


def layer_data_dir() -> Path:
    """The XDG data dir that holds ``vulkan/implicit_layer.d/ms2flow_cpu_layer.json``."""
    override = os.environ.get("MS2FLOW_VK_LAYER_DATA_DIR")
    return Path(override) if override else Path(sys.prefix) / "share"


def layer_manifest_path() -> Path:
    return layer_data_dir() / "vulkan" / "implicit_layer.d" / LAYER_MANIFEST


def configure_cpu_rendering() -> bool:
    """Enable the ms2flow layer for this process (and its children); idempotent.

    Must run before the Vulkan loader is first used (before sapien renders).
    Returns whether the layer manifest was found.
    """
    manifest = layer_manifest_path()
    if not manifest.exists():
        return False
    os.environ.setdefault("MS2FLOW_VK_CPU_LAYER", "1")
    data_dir = str(layer_data_dir())
    dirs = os.environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
    if data_dir not in dirs.split(":"):
        os.environ["XDG_DATA_DIRS"] = f"{data_dir}:{dirs}"
    return True


@dataclass(frozen=True)
class VulkanDevice:
    name: str
    device_type: str
    api_version: str
    has_external_semaphore_fd: bool
    vendor_id: int = 0
    driver_version: int = 0
    driver_info: str = ""  # VkPhysicalDeviceDriverProperties name + info, e.g. "llvmpipe Mesa 25.2.0 (LLVM 19.1.7)"

    @property
    def vendor(self) -> str:
        return _VENDORS.get(self.vendor_id, hex(self.vendor_id))

    @property
    def driver(self) -> str:
        """The driver and its version: what the driver says (Vulkan 1.2), else decoded from driverVersion."""
        if self.driver_info:
            return self.driver_info
        v = self.driver_version
        if self.vendor_id == NVIDIA_VENDOR_ID:
            return f"NVIDIA {v >> 22}.{(v >> 14) & 0xFF}.{(v >> 6) & 0xFF:02d}"
        return f"{self.vendor} {v >> 22}.{(v >> 12) & 0x3FF}.{v & 0xFFF}"


NVIDIA_VENDOR_ID = 0x10DE
_VENDORS = {NVIDIA_VENDOR_ID: "NVIDIA", 0x10005: "Mesa", 0x1002: "AMD", 0x8086: "Intel"}
# Where NVIDIA's driver (or the container toolkit) puts its Vulkan ICD manifest.
NVIDIA_ICD_PATHS = (
    "/usr/share/vulkan/icd.d/nvidia_icd.json",
    "/etc/vulkan/icd.d/nvidia_icd.json",
    "/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json",
    "/usr/share/vulkan/icd.d/nvidia_icd.x86_64.json",
)
RENDER_DEVICE_CHOICES = ("auto", "gpu", "cpu")
_ICD_VARS = ("VK_DRIVER_FILES", "VK_ICD_FILENAMES")


@dataclass(frozen=True)
class RenderDevice:
    """The Vulkan device this process renders on, as recorded in dataset manifests."""

    name: str
    device_type: str
    driver: str
    api_version: str
    selection: str  # nvidia-icd | lavapipe+layer | user-icd | cpu

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


_DEVICE_TYPES = {0: "other", 1: "integrated-gpu", 2: "discrete-gpu", 3: "virtual-gpu", 4: "cpu"}


class VulkanProbeError(RuntimeError):
    pass


def nvidia_icd() -> Path | None:
    return next((Path(p) for p in NVIDIA_ICD_PATHS if Path(p).is_file()), None)


def lavapipe_icd() -> Path | None:
    return next(iter(sorted(Path("/usr/share/vulkan/icd.d").glob("lvp_icd*.json"))), None)


@lru_cache(maxsize=None)
def configure_rendering() -> RenderDevice | None:
    """Pick this process's Vulkan device (see the module docstring); None when there is none at all."""
    choice = os.environ.get("MS2FLOW_RENDER_DEVICE", "auto")
    if choice not in RENDER_DEVICE_CHOICES:
        raise ConfigError(f"MS2FLOW_RENDER_DEVICE={choice!r} is not a render device choice",
                          hint=f"use one of {', '.join(RENDER_DEVICE_CHOICES)}")
    user_icd = any(os.environ.get(v) for v in _ICD_VARS)
    icd = nvidia_icd() if choice != "cpu" and not user_icd else None
    if icd is not None:
        for var in _ICD_VARS:
            os.environ[var] = str(icd)
        gpus = [d for d in _probe_or_empty() if d.vendor_id == NVIDIA_VENDOR_ID]
        if gpus:
            return _render_device(gpus[0], "nvidia-icd")
        for var in _ICD_VARS:  # an ICD without a usable GPU (a container started without --gpus)
            os.environ.pop(var, None)
    if choice == "gpu":
        raise RenderingUnavailableError(
            "MS2FLOW_RENDER_DEVICE=gpu but no NVIDIA Vulkan device enumerates "
            f"(ICD manifest: {icd or 'none of ' + ', '.join(NVIDIA_ICD_PATHS)})",
            hint="install the NVIDIA driver's Vulkan ICD (containers: NVIDIA_DRIVER_CAPABILITIES must include "
                 "graphics), or set MS2FLOW_RENDER_DEVICE=auto to fall back to lavapipe")
    lavapipe = lavapipe_icd() if choice == "cpu" and not user_icd else None
    if lavapipe is not None:  # with a GPU driver installed too, the loader would otherwise offer both
        for var in _ICD_VARS:
            os.environ[var] = str(lavapipe)
    configure_cpu_rendering()
    devices = _probe_or_empty()
    if not devices:
        return None
    best = sorted(devices, key=lambda d: (d.device_type == "cpu") != (choice == "cpu"))[0]
    if choice == "cpu" and best.device_type != "cpu":
        raise RenderingUnavailableError(
            f"MS2FLOW_RENDER_DEVICE=cpu but no CPU Vulkan device enumerates (found: {best.name})",
            hint="install Mesa's lavapipe (mesa-vulkan-drivers >= 25; scripts/setup does), or set "
                 "MS2FLOW_RENDER_DEVICE=auto to render on the GPU")
    return _render_device(best, "user-icd" if user_icd else ("cpu" if choice == "cpu" else "lavapipe+layer"))


def _render_device(d: VulkanDevice, selection: str) -> RenderDevice:
    return RenderDevice(name=d.name, device_type=d.device_type, driver=d.driver, api_version=d.api_version,
                        selection=selection)


def _probe_or_empty() -> list[VulkanDevice]:
    try:
        return _enumerate_devices()
    except VulkanProbeError:
        return []


def render_device_info() -> dict[str, str] | None:
    device = configure_rendering()
    return device.as_dict() if device else None


def vulkan_devices() -> list[VulkanDevice]:
    """Enumerate the Vulkan physical devices this process can render on (after device selection).

    Raises VulkanProbeError naming the missing piece.
    """
    configure_rendering()
    return _enumerate_devices()


def _enumerate_devices() -> list[VulkanDevice]:
    libname = ctypes.util.find_library("vulkan") or "libvulkan.so.1"
    try:
        vk = ctypes.CDLL(libname)
    except OSError as exc:
        raise VulkanProbeError(f"the Vulkan loader (libvulkan.so.1) is not installed: {exc}") from exc

    class AppInfo(ctypes.Structure):
        _fields_ = [
            ("sType", ctypes.c_int), ("pNext", ctypes.c_void_p),
            ("pApplicationName", ctypes.c_char_p), ("applicationVersion", ctypes.c_uint32),
            ("pEngineName", ctypes.c_char_p), ("engineVersion", ctypes.c_uint32),
            ("apiVersion", ctypes.c_uint32),
        ]

    class InstanceInfo(ctypes.Structure):
        _fields_ = [
            ("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
            ("pApplicationInfo", ctypes.POINTER(AppInfo)),
            ("enabledLayerCount", ctypes.c_uint32), ("ppEnabledLayerNames", ctypes.c_void_p),
            ("enabledExtensionCount", ctypes.c_uint32), ("ppEnabledExtensionNames", ctypes.c_void_p),
        ]

    app = AppInfo(0, None, b"ms2flow-doctor", 1, b"ms2flow", 1, (1 << 22) | (1 << 12))
    info = InstanceInfo(1, None, 0, ctypes.pointer(app), 0, None, 0, None)
    instance = ctypes.c_void_p()
    result = vk.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance))
    if result != 0:
        raise VulkanProbeError(f"vkCreateInstance failed with VkResult {result} (no Vulkan driver installed?)")
    try:
        count = ctypes.c_uint32(0)
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
        handles = (ctypes.c_void_p * max(count.value, 1))()
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), handles)
        devices = []
        for i in range(count.value):
            props = ctypes.create_string_buffer(2048)  # VkPhysicalDeviceProperties is 824 bytes
            vk.vkGetPhysicalDeviceProperties(ctypes.c_void_p(handles[i]), props)
            api = int.from_bytes(props.raw[0:4], "little")
            driver_version = int.from_bytes(props.raw[4:8], "little")
            vendor_id = int.from_bytes(props.raw[8:12], "little")
            dtype = int.from_bytes(props.raw[16:20], "little")
            name = props.raw[20:276].split(b"\0", 1)[0].decode(errors="replace")
            n_ext = ctypes.c_uint32(0)
            vk.vkEnumerateDeviceExtensionProperties(ctypes.c_void_p(handles[i]), None, ctypes.byref(n_ext), None)
            ext_buf = ctypes.create_string_buffer(260 * max(n_ext.value, 1))
            vk.vkEnumerateDeviceExtensionProperties(ctypes.c_void_p(handles[i]), None, ctypes.byref(n_ext), ext_buf)
            names = {
                ext_buf.raw[260 * j: 260 * j + 256].split(b"\0", 1)[0].decode()
                for j in range(n_ext.value)
            }
            driver_info = _driver_info(vk, handles[i]) if api >= (1 << 22) | (2 << 12) else ""
            devices.append(
                VulkanDevice(
                    name=name,
                    device_type=_DEVICE_TYPES.get(dtype, str(dtype)),
                    api_version=f"{api >> 22}.{(api >> 12) & 0x3FF}.{api & 0xFFF}",
                    has_external_semaphore_fd="VK_KHR_external_semaphore_fd" in names,
                    vendor_id=vendor_id, driver_version=driver_version, driver_info=driver_info,
                )
            )
        return devices
    finally:
        vk.vkDestroyInstance(instance, None)


def _driver_info(vk, handle) -> str:
    """driverName + driverInfo from VkPhysicalDeviceDriverProperties (core in Vulkan 1.2), "" if unavailable."""
    import struct

    driver = ctypes.create_string_buffer(544)  # sType, pNext, driverID, driverName[256], driverInfo[256], conformance
    struct.pack_into("<i", driver, 0, 1000196000)  # VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES
    props2 = ctypes.create_string_buffer(16 + 2048)  # sType, pNext, VkPhysicalDeviceProperties
    struct.pack_into("<i", props2, 0, 1000059001)  # VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2
    struct.pack_into("<Q", props2, 8, ctypes.addressof(driver))  # pNext (8-byte aligned)
    try:
        vk.vkGetPhysicalDeviceProperties2(ctypes.c_void_p(handle), props2)
    except AttributeError:
        return ""
    name = driver.raw[20:276].split(b"\0", 1)[0].decode(errors="replace")
    info = driver.raw[276:532].split(b"\0", 1)[0].decode(errors="replace")
    return " ".join(x for x in (name, info) if x)


def diagnose_rendering() -> str:
    """One sentence naming why SAPIEN cannot render here, with the fix."""
    if not layer_manifest_path().exists():
        layer = f"the ms2flow Vulkan layer is not built ({layer_manifest_path()} is missing)"
    else:
        layer = None
    try:
        devices = vulkan_devices()
    except VulkanProbeError as exc:
        return f"{exc}; {SETUP_HINT}"
    if not devices:
        return f"no Vulkan device found (no driver: install mesa-vulkan-drivers >= 25); {SETUP_HINT}"
    if layer and not any(d.has_external_semaphore_fd for d in devices):
        return f"{layer}, and the driver lacks VK_KHR_external_semaphore_fd that SAPIEN requests; {SETUP_HINT}"
    names = ", ".join(f"{d.name} ({d.device_type})" for d in devices)
    return f"Vulkan devices found ({names}) but SAPIEN could not use them; {SETUP_HINT}"
