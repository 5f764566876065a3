"""Vulkan device selection (ms2core/envs/rendering.py): NVIDIA where it enumerates, lavapipe + layer otherwise.

The loader is replaced by a fake enumeration that answers according to VK_DRIVER_FILES, so the
selection logic is exercised here without a GPU; `ms2-sim doctor` on the GPU host is the real check.
"""

from __future__ import annotations

import os

import pytest

from ms2core.envs import rendering
from ms2core.envs.rendering import NVIDIA_VENDOR_ID, VulkanDevice, configure_rendering
from ms2core.errors import ConfigError, RenderingUnavailableError

H200 = VulkanDevice("NVIDIA H200", "discrete-gpu", "1.4.312", True, NVIDIA_VENDOR_ID, (580 << 22) | (95 << 14) | (5 << 6))
LAVAPIPE = VulkanDevice("llvmpipe (LLVM 19.1.7, 256 bits)", "cpu", "1.4.305", False, 0x10005, (25 << 22) | (2 << 12))


@pytest.fixture
def loader(monkeypatch, tmp_path):
    """Fake ICDs: the NVIDIA one enumerates `gpus` when the loader is restricted to it, else lavapipe."""
    icd = tmp_path / "nvidia_icd.json"
    state = {"icd": icd, "gpus": [H200]}
    for var in ("VK_DRIVER_FILES", "VK_ICD_FILENAMES", "MS2FLOW_RENDER_DEVICE", "MS2FLOW_VK_CPU_LAYER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(rendering, "nvidia_icd", lambda: state["icd"])
    monkeypatch.setattr(rendering, "lavapipe_icd", lambda: tmp_path / "lvp_icd.x86_64.json")
    monkeypatch.setattr(rendering, "configure_cpu_rendering", lambda: os.environ.update(MS2FLOW_VK_CPU_LAYER="1"))

    def enumerate_devices():
        if os.environ.get("VK_DRIVER_FILES") == str(icd):
            return list(state["gpus"])
        return [LAVAPIPE] + ([] if os.environ.get("VK_DRIVER_FILES") else list(state["gpus"]))

    monkeypatch.setattr(rendering, "_enumerate_devices", enumerate_devices)
    configure_rendering.cache_clear()
    yield state
    configure_rendering.cache_clear()


def test_nvidia_is_chosen_and_the_loader_restricted_to_it(loader):
    device = configure_rendering()
    assert device.name == "NVIDIA H200" and device.selection == "nvidia-icd"
    assert device.driver == "NVIDIA 580.95.05" and device.device_type == "discrete-gpu"
    assert os.environ["VK_DRIVER_FILES"] == str(loader["icd"]) == os.environ["VK_ICD_FILENAMES"]
    assert "MS2FLOW_VK_CPU_LAYER" not in os.environ  # no lavapipe layer on the GPU path


def test_the_drivers_own_name_wins_over_the_decoded_version():
    import dataclasses

    assert dataclasses.replace(LAVAPIPE, driver_info="llvmpipe Mesa 25.0.7").driver == "llvmpipe Mesa 25.0.7"


def test_an_nvidia_icd_without_a_gpu_falls_back_to_lavapipe_and_the_layer(loader):
    loader["gpus"] = []
    device = configure_rendering()
    assert device.selection == "lavapipe+layer" and device.name.startswith("llvmpipe")
    assert device.driver == "Mesa 25.2.0"
    assert "VK_DRIVER_FILES" not in os.environ and os.environ["MS2FLOW_VK_CPU_LAYER"] == "1"


def test_no_nvidia_icd_means_lavapipe(loader):
    loader["icd"] = None
    loader["gpus"] = []
    assert configure_rendering().selection == "lavapipe+layer"


def test_cpu_forces_lavapipe_even_with_a_gpu(loader, monkeypatch):
    monkeypatch.setenv("MS2FLOW_RENDER_DEVICE", "cpu")
    device = configure_rendering()
    assert device.device_type == "cpu" and device.selection == "cpu"
    assert os.environ["VK_DRIVER_FILES"].endswith("lvp_icd.x86_64.json")


def test_cpu_without_lavapipe_is_refused_not_silently_a_gpu(loader, monkeypatch):
    # Seen on the GPU host: no lavapipe there, so the loader offered only the NVIDIA device.
    monkeypatch.setenv("MS2FLOW_RENDER_DEVICE", "cpu")
    monkeypatch.setattr(rendering, "lavapipe_icd", lambda: None)
    monkeypatch.setattr(rendering, "_enumerate_devices", lambda: [H200])
    with pytest.raises(RenderingUnavailableError, match="MS2FLOW_RENDER_DEVICE=cpu but no CPU Vulkan device"):
        configure_rendering()


def test_gpu_without_nvidia_is_refused_with_the_fix(loader, monkeypatch):
    monkeypatch.setenv("MS2FLOW_RENDER_DEVICE", "gpu")
    loader["gpus"] = []
    with pytest.raises(RenderingUnavailableError, match="MS2FLOW_RENDER_DEVICE=gpu but no NVIDIA Vulkan device") as err:
        configure_rendering()
    assert "graphics" in err.value.hint


def test_a_users_icd_choice_is_respected(loader, monkeypatch):
    monkeypatch.setenv("VK_DRIVER_FILES", "/somewhere/lvp_icd.json")
    device = configure_rendering()
    assert device.selection == "user-icd" and os.environ["VK_DRIVER_FILES"] == "/somewhere/lvp_icd.json"


def test_unknown_choice_is_a_config_error(loader, monkeypatch):
    monkeypatch.setenv("MS2FLOW_RENDER_DEVICE", "nvidia")
    with pytest.raises(ConfigError, match="MS2FLOW_RENDER_DEVICE='nvidia'"):
        configure_rendering()


def test_renderer_is_provenance_not_dataset_identity():
    from ms2core.data.store import DatasetWriter  # noqa: F401  (the real writer builds manifests this way)
    from storage_schemas.dataset import DatasetManifest

    fields = DatasetManifest.model_fields
    assert "renderer" in fields and fields["renderer"].default is None
    import inspect

    from storage_schemas.dataset import identity_payload

    assert "renderer" not in inspect.signature(identity_payload).parameters
