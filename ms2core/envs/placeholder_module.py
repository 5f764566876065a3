"""A stand-in for a package the ms2flow simulator runtime deliberately leaves out (torch, cv2).

``ms2 runtime pack`` copies this file to ``site-packages/torch/__init__.py`` and
``site-packages/cv2/__init__.py`` of the runtime only (never into a project venv). It exists
because importing ``mani_skill2.envs`` imports every task module: the soft-body tasks import
warp_maniskill, whose ``warp.torch`` does ``import torch`` at module level, and SAPIEN's
``sapien.sensor`` (stereo depth) does ``import cv2``. The rigid-body path never calls either.

The placeholder imports, and fails loudly the moment anything is *used*:

- ``torch.anything`` / ``cv2.anything`` raises :class:`PlaceholderUsedError` (an
  ``AttributeError``, so ``hasattr``/``getattr(x, name, default)`` probes answer "absent")
  naming the missing package and what needs it;
- ``import torch.nn`` raises ``ModuleNotFoundError`` with the same message;
- ``isinstance(x, torch.Tensor)`` (scipy's array-API check once ``torch`` is in
  ``sys.modules``) is False: ``Tensor`` is a class nothing is an instance of.

``ms2core.envs.runtime.is_placeholder`` recognises it by ``__ms2flow_placeholder__``;
``make_env`` refuses soft-body env ids up front when ``torch`` is this placeholder.
"""

from __future__ import annotations

import importlib.abc
import sys

__ms2flow_placeholder__ = True
__path__: list[str] = []  # a package, so `import torch.nn` reaches _RefuseSubmodules

_NEEDED_BY = {
    "torch": "ManiSkill2's soft-body tasks (Excavate, Fill, Hang, Pinch, Pour, Write: warp_maniskill) "
             "and mani_skill2.vector's render server",
    "cv2": "SAPIEN's stereo depth sensor (sapien.sensor, mani_skill2's StereoDepthCamera)",
}


def _message(what: str) -> str:
    package = __name__.split(".")[0]
    return (f"{what} was used, but '{package}' in this ms2flow simulator runtime is a placeholder, not the "
            f"real package (the runtime leaves it out to stay small); it is needed by "
            f"{_NEEDED_BY.get(package, 'this code')}. Run this in an interpreter that has the real "
            f"'{package}' (e.g. the project's .venv), or set sim_python / MS2FLOW_SIM_PYTHON to one")


class PlaceholderUsedError(AttributeError):
    """Something used an attribute of a placeholder package."""


class Tensor:
    """Nothing is an instance of this: isinstance(x, torch.Tensor) is False for every x."""

    def __init__(self, *args, **kwargs):
        raise PlaceholderUsedError(_message(f"{__name__}.Tensor(...)"))


def __getattr__(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)  # dunder probes (copy, pickle, inspect) get the normal answer
    raise PlaceholderUsedError(_message(f"{__name__}.{name}"))


class _RefuseSubmodules(importlib.abc.MetaPathFinder):
    def __init__(self, package: str):
        self.package = package

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(self.package + "."):
            raise ModuleNotFoundError(_message(f"import {fullname}"), name=fullname)
        return None


if __name__ != "ms2core.envs.placeholder_module":  # only when installed as torch/ or cv2/
    sys.meta_path.insert(0, _RefuseSubmodules(__name__))
