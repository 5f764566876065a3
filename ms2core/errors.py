"""Typed errors for users: each names the offending value and says what would be right.

The CLI turns any ``Ms2Error`` into a one-paragraph message and exit code 2,
never a stack trace.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class Ms2Error(Exception):
    """Base of every user-facing ms2flow error."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class ConfigError(Ms2Error, ValueError):
    """A configuration value or key is wrong."""


class UnknownEnvError(ConfigError):
    """The env id is not registered."""


class UnsupportedModeError(ConfigError):
    """An observation, control or reward mode the env does not support."""


class RenderingUnavailableError(Ms2Error, RuntimeError):
    """SAPIEN could not create a Vulkan device (no driver, no layer, no loader)."""


class DemoFileError(Ms2Error, ValueError):
    """A demo pair (h5 + json) is missing, corrupt or inconsistent."""


class DatasetError(Ms2Error, ValueError):
    """A Zarr dataset is missing, corrupt or inconsistent with its manifest."""


class CheckpointError(Ms2Error, ValueError):
    """A training checkpoint is missing, unreadable, not ms2flow's, or does not fit the run resuming from it."""


def closest(value: str, allowed: Iterable[str], n: int = 5) -> list[str]:
    """The allowed names closest to ``value`` (for 'did you mean' hints)."""
    allowed = list(allowed)
    found = difflib.get_close_matches(value, allowed, n=n, cutoff=0.5)
    if not found:
        lowered = value.lower()
        found = [a for a in allowed if lowered[:4] and lowered[:4] in a.lower()][:n]
    return found


def unknown_choice(kind: str, value: str, allowed: Iterable[str], cls=ConfigError) -> Ms2Error:
    """Build the standard 'unknown X' error listing the closest and all allowed values."""
    allowed = sorted(allowed)
    near = closest(value, allowed)
    hint = (f"did you mean {', '.join(near)}? " if near else "") + f"allowed: {', '.join(allowed)}"
    return cls(f"unknown {kind} {value!r}", hint=hint)


class DiskFullError(Ms2Error, OSError):
    """A write ran out of space (ENOSPC); the file it was replacing is unchanged."""


class TrainingDivergedError(Ms2Error, ArithmeticError):
    """A loss or a parameter became NaN/Inf; training stopped and the last good checkpoint was kept."""

    def __init__(self, message: str, hint: str | None = None, step: int | None = None, value: float | None = None):
        super().__init__(message, hint)
        self.step = step
        self.value = value


class SimulatorRuntimeError(Ms2Error, RuntimeError):
    """A packed simulator runtime is missing, corrupt or for another platform, or lacks what a task needs."""
