"""Load stage and training configs: YAML file -> dotted ``--set a.b=c`` overrides -> pydantic model.

Unknown keys and bad values raise ConfigError naming the key, the value and
what is allowed (ManiSkill2-Learn's ``--cfg-options``, with validation).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ms2core.errors import ConfigError, unknown_choice

M = TypeVar("M", bound=BaseModel)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value", hint="e.g. --set train.batch_size=256")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key part", hint="e.g. --set train.batch_size=256")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _allowed_keys(model: type[BaseModel] | None, path: list[str]) -> list[str] | None:
    """Field names at ``path`` inside ``model`` (None when the path leaves typed models)."""
    for part in path:
        if model is None or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return list(model.model_fields) if model is not None else None


def _set_path(data: dict, keys: list[str], value: Any, model: type[BaseModel] | None) -> None:
    """Set ``data[k0][k1]...`` to ``value`` (copying the dicts on the way), refusing keys the model lacks."""
    node = data
    for depth, part in enumerate(keys):
        allowed = _allowed_keys(model, keys[:depth])
        if allowed is not None and part not in allowed:
            where = ".".join(keys[:depth]) or "the config"
            raise unknown_choice(f"key in {where}:", part, allowed)
        if depth == len(keys) - 1:
            node[part] = value
        else:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child


def _renamed(model: type[BaseModel] | None) -> dict[str, str]:
    """old dotted key -> new one, for models whose keys were renamed (``RENAMED_KEYS``, e.g. BCConfig)."""
    return getattr(model, "RENAMED_KEYS", None) or {}


def _refuse_renamed(found: list[tuple[str, str]], where: str) -> None:
    if found:
        from storage_schemas.training import renamed_keys_message

        raise ConfigError(f"{where}: {renamed_keys_message(found)}",
                          hint="; ".join(f"write {new} instead of {old}" for old, new in found))


def apply_overrides(data: dict, overrides: list[str], model: type[BaseModel] | None = None) -> dict:
    data = dict(data)
    renamed = _renamed(model)
    for item in overrides:
        keys, value = parse_override(item)
        _refuse_renamed([(old, new) for old, new in renamed.items()
                         if ".".join(keys) == old or ".".join(keys).startswith(old + ".")][-1:], f"--set {item}")
        _set_path(data, keys, value, model)
    return data


def apply_values(data: dict, values: dict[str, Any], model: type[BaseModel] | None = None) -> dict:
    """Dotted key -> Python value (typed command-line options: no YAML parsing of the value)."""
    data = dict(data)
    for key, value in values.items():
        _set_path(data, key.split("."), os.fspath(value) if isinstance(value, os.PathLike) else value, model)
    return data


def _override_for(loc: tuple, overrides: list[str]) -> str | None:
    """The last ``--set`` that wrote the key at ``loc`` (or a parent or child of it), if any."""
    key = ".".join(str(p) for p in loc)
    found = None
    for item in overrides:
        set_key = item.split("=", 1)[0].strip()
        if key == set_key or key.startswith(set_key + ".") or set_key.startswith(key + "."):
            found = item
    return found


def _format_validation_error(exc: ValidationError, source: str, model: type[BaseModel] | None = None,
                             overrides: list[str] | None = None, given: dict[str, Any] | None = None) -> ConfigError:
    """Each problem names its key, the value and where it came from (the YAML file or the ``--set``);
    an unknown key lists the allowed keys at its level."""
    lines, hints = [], []
    for err in exc.errors()[:5]:
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        override = _override_for(loc, overrides or [])
        flag = _override_for(loc, list(given or {}))
        origin = f" (from --set {override})" if override else (" (from a command-line option)" if flag else "")
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}{origin}")
            allowed = _allowed_keys(model, [str(p) for p in loc[:-1]]) if model is not None else None
            if allowed:
                where = ".".join(str(p) for p in loc[:-1]) or "the top level"
                hints.append(f"at {where}: " + unknown_choice("key", str(loc[-1]), allowed).hint)
        else:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r}){origin}")
    from_file = any(_override_for(tuple(e["loc"]), [*(overrides or []), *(given or {})]) is None
                    for e in exc.errors()[:5])
    where = source if from_file else "(command-line options)"
    return ConfigError(f"invalid config {where}: " + "; ".join(lines), hint="; ".join(hints) or None)


def load_config(model: type[M], path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                *, values: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None) -> M:
    """Build ``model`` from, lowest precedence first: ``defaults`` (a command's own option defaults), the
    optional YAML file, ``values`` (options given on the command line; dotted key -> value) and the
    dotted ``--set`` overrides, validating everything."""
    data: dict = apply_values({}, defaults or {}, model)
    source = "(defaults)"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top, got {type(loaded).__name__}")
        from storage_schemas.training import renamed_keys_in

        _refuse_renamed(renamed_keys_in(loaded, _renamed(model)), f"config file {path}")
        data = _merge(data, loaded)
    data = apply_values(data, values or {}, model)
    data = apply_overrides(data, overrides or [], model)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _format_validation_error(exc, source, model, overrides or [], values) from exc


def _merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``, nested mappings merged key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def dump_config(cfg: BaseModel, path: str | os.PathLike) -> Path:
    """Save the fully resolved config as YAML (atomically)."""
    from ms2core.fileio import write_text_atomic

    return write_text_atomic(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
