"""The one way from a command's options to its config: YAML file, options given on the command line, ``--set``.

Precedence, lowest first: the command's own option defaults, the ``--config`` YAML file, the options the user
actually typed (click's ``get_parameter_source`` tells a typed ``--replay-sample 0`` from the default 0),
then the dotted ``--set`` overrides. An option left at its default never overrides the YAML file.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import typer
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

#: Where a value the user gave comes from (names of click's ParameterSource, which typer vendors privately);
#: DEFAULT and DEFAULT_MAP are the command's own defaults.
GIVEN_SOURCES = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def split_options(ctx: typer.Context, fields: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(defaults, given): each mapped option's value under its dotted config key, split by where it came
    from. ``fields`` maps a command parameter's name to the config key it sets; None values are left out."""
    defaults: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for param, key in fields.items():
        value = ctx.params[param]
        if value is None:
            continue
        source = ctx.get_parameter_source(param)
        (given if source is not None and source.name in GIVEN_SOURCES else defaults)[key] = _plain(value)
    return defaults, given


def _plain(value: Any) -> Any:
    """Paths as strings (config models hold paths and URLs as str), also inside lists."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_from_cli(ctx: typer.Context, model: type[M], config: str | os.PathLike | None, sets: list[str] | None,
                    fields: dict[str, str], fixed: dict[str, Any] | None = None) -> M:
    """Build ``model`` for the running command: option defaults < YAML ``config`` < given options (and
    ``fixed``: values the command computed from its arguments) < ``--set`` ``sets``."""
    from ms2core.config import load_config

    defaults, given = split_options(ctx, fields)
    return load_config(model, config, list(sets or []), values={**given, **(fixed or {})}, defaults=defaults)


def devices_override(text: str) -> str:
    """``--devices 0,1`` / ``--devices 2`` / ``--devices cpu,cpu`` as a ``--set run.devices=...`` override:
    a comma-separated list of learner devices (CUDA ids, cuda:N, cpu), or one number = that many learners
    (storage_schemas.training.RunBase.devices; the config model checks the values)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1 and "[" not in text:
        return f"run.devices={parts[0]}"
    return "run.devices=[" + ", ".join(parts) + "]"
