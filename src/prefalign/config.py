"""Configuration: one dataclass tree per command, from YAML + preset + command-line overrides.

Precedence, lowest first: the dataclass defaults, a named preset (the settings of a paper), a YAML
file (``--config run.yaml``), then ``--field value`` flags (nested fields as ``--optim.learning_rate``).
Every field's docstring is its ``--help`` text. A saved ``config.yaml`` is a plain dump of the
dataclass, and loads back to an equal object.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from prefalign.atomic import write_text_atomic

C = TypeVar("C")


class ConfigError(ValueError):
    """A wrong config value or key; the message names the field (and the file, for YAML)."""


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass inside ``X`` or ``X | None``, if any."""
    if _is_dataclass_type(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if _is_dataclass_type(arg):
                return arg
    return None


def from_dict(cls: type[C], data: Mapping[str, Any], *, where: str = "", base: C | None = None) -> C:
    """Build ``cls`` from a (possibly partial) mapping, on top of ``base`` (or the defaults).

    Unknown keys raise ConfigError naming the key and where it came from; values of the wrong
    type are caught by the dataclasses' own ``__post_init__`` checks.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown field(s) {unknown}; valid fields: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        current = getattr(base, f.name) if base is not None else None
        if base is None and f.name in data and f.default_factory is not dataclasses.MISSING:
            current = f.default_factory()  # a partial sub-tree overrides the parent's own default, not the sub-class's
        if f.name not in data:
            if base is not None:
                kwargs[f.name] = current
            continue
        value = data[f.name]
        sub = _dataclass_in(types_[f.name])
        if sub is not None and isinstance(value, Mapping):
            sub_base = current if dataclasses.is_dataclass(current) else None
            value = from_dict(sub, value, where=f"{where}{f.name}.", base=sub_base)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def save_yaml(config: Any, path: str | Path) -> Path:
    """Dump a config dataclass to YAML atomically."""
    return write_text_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts (override wins)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def build_config(
    cls: type[C],
    *,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    preset: str | None = None,
    yaml_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Defaults <- preset <- YAML <- overrides (each a nested mapping)."""
    data: dict[str, Any] = {}
    if preset is not None:
        if not presets or preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; available: {sorted(presets or {})}")
        data = merge(data, presets[preset])
    where = ""
    if yaml_path is not None:
        data = merge(data, load_yaml(yaml_path))
        where = f"{yaml_path}: "
    if overrides:
        data = merge(data, overrides)
    return from_dict(cls, data, where=where)
