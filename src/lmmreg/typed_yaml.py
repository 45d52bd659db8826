"""Parsed YAML into frozen dataclasses, checked against their annotations; errors name the dotted key.

`build(cls, raw, prefix)` checks every key of `raw` against the fields of `cls` (unknown, missing, wrong type),
converts nested dataclasses, lists, dicts, Literals and unions, then calls the instance's `check(key)` if it has
one: each section checks its own ranges with `require`, naming the key under the prefix it was built at. Nothing
here knows the project's sections (`lmmreg.config` does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, Literal


class ConfigError(ValueError):
    """A `params.yaml` problem; the message names the file and the dotted key."""


def join(prefix: str, name: str) -> str:
    """The dotted key of field `name` in the section built at `prefix` ("" at the top level)."""
    return f"{prefix}.{name}" if prefix else name


def require(ok: bool, key: str, message: str) -> None:
    """A section's range check: ConfigError `<key>: <message>` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def at_least(section: Any, key: str, low: float, *names: str) -> None:
    """Each field `names` of `section` (built at `key`) is >= `low`."""
    for name in names:
        value = getattr(section, name)
        require(value >= low, join(key, name), f"must be >= {low}, got {value}")


def in_unit_interval(section: Any, key: str, *names: str) -> None:
    """Each field `names` of `section` (built at `key`) is in [0, 1]."""
    for name in names:
        value = getattr(section, name)
        require(0 <= value <= 1, join(key, name), f"must be in [0, 1], got {value}")


def not_empty(section: Any, key: str, *names: str) -> None:
    """Each list field `names` of `section` (built at `key`) has an item."""
    for name in names:
        require(len(getattr(section, name)) > 0, join(key, name), "empty")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, returning it (dataclasses built recursively)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or type(value) is not type(choices[0]):
            raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)[:1]
        return [convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        _, val_tp = typing.get_args(tp)
        return {str(k): convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return convert(value, arm, key)
            except ConfigError:
                continue
        arms = " | ".join(_type_name(a) for a in typing.get_args(tp))
        raise ConfigError(f"{key}: {value!r} matches none of {arms}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (YAML reads 1e-4 as a string: write 1.0e-4)" if isinstance(value, str) else ""
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}{hint}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    raise ConfigError(f"{key}: unsupported annotation {tp}")  # a bug in the dataclass, not in the YAML


def build(cls: type, raw: dict, prefix: str) -> Any:
    """An instance of the dataclass `cls` from the mapping `raw` found at `prefix`, its own `check` passed."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown key {join(prefix, unknown[0])} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = join(prefix, f.name)
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key {key}")
            continue
        kwargs[f.name] = convert(raw[f.name], hints[f.name], key)
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(prefix)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain JSON-able dict of a config object (for hashing and logging)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def stable_hash(obj: Any, n: int = 16) -> str:
    """Short sha256 of a JSON-able object with sorted keys: equal configs give equal hashes."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
