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


def config_from_dict(cls, data: dict):
    """Rebuild ``cls`` from :func:`config_to_dict` output; unknown fields are an error."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            kwargs[name] = config_from_dict(hint, value)
        else:
            kwargs[name] = _tupled(value)
    return cls(**kwargs)
