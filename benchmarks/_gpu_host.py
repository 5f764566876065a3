"""What the learner-side GPU benchmarks share: no simulator in this process, a description of the host, results.

On the GPU host the learner runs in the host's Python (3.12 + CUDA torch), where sapien and
mani_skill2 cannot be installed; every simulator step happens in workers started with
``sim_python`` (the simulator runtime). ``forbid_simulator_imports`` makes that a checked fact here
too: an import of sapien or mani_skill2 in this process raises at once, naming the module.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import platform
import sys
import time
from pathlib import Path

SIMULATOR_MODULES = ("sapien", "mani_skill2", "mplib", "warp")

# Learner-only packages carried as wheels (gpu_campaign.sh): on this process's sys.path, not on PYTHONPATH,
# which the simulator workers (another Python) inherit.
if os.environ.get("MS2FLOW_HOST_SITE") and os.environ["MS2FLOW_HOST_SITE"] not in sys.path:
    sys.path.insert(0, os.environ["MS2FLOW_HOST_SITE"])


class SimulatorImportError(ImportError):
    pass


class _Forbid(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SIMULATOR_MODULES:
            raise SimulatorImportError(f"{name} was imported in the learner's process; on the GPU host only the "
                                       "simulator workers (sim_python) may import it")
        return None


def forbid_simulator_imports() -> None:
    loaded = [m for m in SIMULATOR_MODULES if m in sys.modules]
    if loaded:
        raise SimulatorImportError(f"already imported in the learner's process: {loaded}")
    sys.meta_path.insert(0, _Forbid())


def host_info() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return dict(python=platform.python_version(), executable=sys.executable, torch=torch.__version__,
                cuda_device=torch.cuda.get_device_name(0) if cuda else None, cpu_count=os.cpu_count(),
                sim_python=os.environ.get("MS2FLOW_SIM_PYTHON"),
                call_timeout_s=os.environ.get("MS2FLOW_SIM_CALL_TIMEOUT_S"))


def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path
