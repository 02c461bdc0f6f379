"""Frozen-dataclass configs to and from JSON-safe dicts (lists become tuples again, nested configs rebuilt)."""

from __future__ import annotations

import dataclasses
import typing


def config_to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _tupled(value):
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


# the JSON types a field of a plain type may hold (a bool is an int to Python, not to a config)
_PLAIN_TYPES = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}


def _dataclass_of_optional(hint):
    """``X`` for a field typed ``X | None`` where X is a dataclass (an optional nested config); else ``hint``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and dataclasses.is_dataclass(args[0]) else hint


def config_from_dict(cls, data: dict):
    """Rebuild ``cls`` from :func:`config_to_dict` output; unknown fields and a value of the wrong type in a
    field of a plain type (int, float, bool, str) are a ``ValueError`` naming the field: a damaged or edited
    config.json must fail here, not as a shape error deep inside the model."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        hint = _dataclass_of_optional(hints.get(name))
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            kwargs[name] = config_from_dict(hint, value)
        else:
            allowed = _PLAIN_TYPES.get(hint)
            if allowed and (not isinstance(value, allowed) or (hint is not bool and isinstance(value, bool))):
                raise ValueError(f"{cls.__name__}.{name}: expected {hint.__name__}, got {value!r}")
            kwargs[name] = _tupled(value)
    return cls(**kwargs)
