"""docker-compose.yml validates and describes the scaled-out topology (no Docker engine needed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_docker_compose_config_validates():
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_topology_is_configured_only_through_environment_variables():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"postgres", "prefect-server", "cpu-worker", "dask-worker", "gpu-worker", "mlflow", "minio",
            "minio-buckets", "dashboard"} <= set(services)
    for name in ("cpu-worker", "dask-worker", "gpu-worker", "mlflow", "dashboard"):
        env = services[name]["environment"]
        for var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MS2FLOW_DASK_SCHEDULER", "MS2FLOW_DATA_DIR"):
            assert var in env, (name, var)
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["prefect-server"]
    gpu_device = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu_device["driver"] == "nvidia" and "graphics" in gpu_device["capabilities"]
    # SAPIEN renders through the driver's Vulkan ICD, which the toolkit injects only with `graphics`.
    assert "graphics" in services["gpu-worker"]["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    assert "--allowed-hosts" in services["mlflow"]["command"]
    assert "postgresql" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert set(spec["volumes"]) == {"postgres-data", "minio-data", "ms2data"}
    for name in ("cpu-worker", "dask-worker", "gpu-worker", "dashboard"):
        env = services[name]["environment"]
        # The data directory is a path every worker shares (demo pairs are HDF5 files read by the Dask
        # workers); datasets alone go to the object store.
        assert "://" not in env["MS2FLOW_DATA_DIR"] and "ms2data:/data" in services[name]["volumes"], name
        assert env["MS2FLOW_DATASETS_URL"].startswith("s3://"), name


def test_prefect_yaml_names_every_flow_and_both_work_pools():
    import importlib

    from flows.deployments import build_deployments

    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    entrypoints = {d["entrypoint"] for d in spec["deployments"]}
    pools = {d["work_pool"]["name"] for d in spec["deployments"]}
    assert pools == {"cpu", "gpu"}
    flow_names = set()
    for entry in entrypoints:
        path, name = entry.split(":")
        module = importlib.import_module(path[:-3].replace("/", "."))
        flow_names.add(getattr(module, name).name)
    served = {d.flow_name for d in build_deployments()}
    assert served <= flow_names, served - flow_names


def test_gpu_image_is_one_python_311_with_cuda_torch_sapien_and_the_nvidia_vulkan_icd():
    text = (REPO_ROOT / "docker" / "Dockerfile.gpu").read_text()
    assert "FROM python:3.11" in text  # sapien 2.2.2 has wheels up to 3.11 only
    assert "download.pytorch.org/whl/cu" in text and "torch==" in text
    assert "'.[sim,pipeline]'" in text and "mani_skill2==0.5.3" in text
    assert "libvulkan1" in text and "nvidia_icd.json" in text and "libGLX_nvidia.so.0" in text
    assert "graphics" in text
