"""CPU rendering for SAPIEN 2.2: enable the ms2flow Vulkan layer and diagnose Vulkan.

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
from dataclasses import dataclass
from pathlib import Path

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


_DEVICE_TYPES = {0: "other", 1: "integrated-gpu", 2: "discrete-gpu", 3: "virtual-gpu", 4: "cpu"}


class VulkanProbeError(RuntimeError):
    pass


def vulkan_devices() -> list[VulkanDevice]:
    """Enumerate Vulkan physical devices through the loader (with the layer enabled).

    Raises VulkanProbeError naming the missing piece.
    """
    configure_cpu_rendering()
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
            devices.append(
                VulkanDevice(
                    name=name,
                    device_type=_DEVICE_TYPES.get(dtype, str(dtype)),
                    api_version=f"{api >> 22}.{(api >> 12) & 0x3FF}.{api & 0xFFF}",
                    has_external_semaphore_fd="VK_KHR_external_semaphore_fd" in names,
                )
            )
        return devices
    finally:
        vk.vkDestroyInstance(instance, None)


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
