"""Settings of restorers and pipelines: frozen dataclasses overridden by name, checked before anything runs.

:func:`override` is the one place where a setting given by a user (a Python value, or the text of ``--set
name=value`` and of the CLI's named flags) becomes a field of a settings dataclass: an unknown name, a value of
the wrong type or one outside the field's ``choices`` (``dataclasses.field(metadata={"choices": ...})``) is a
one-line :class:`~jaxir.errors.JaxirInputError` naming the setting and what it accepts. The dataclass's own
``__post_init__`` then checks the combination. :func:`to_json` writes settings as the study records them.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping

from jaxir.errors import JaxirInputError

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _optional(hint) -> tuple[bool, object]:
    """(whether None is allowed, the other type) of ``X | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return True, args[0]
    return False, hint


def _type_text(hint) -> str:
    nullable, inner = _optional(hint)
    if typing.get_origin(inner) is tuple:
        text = "TASK:NAME pairs joined by ',' (or one NAME for every task)"
    else:
        text = getattr(inner, "__name__", str(inner))
    return f"{text} or none" if nullable else text


def _pairs(text: str, current) -> tuple[tuple[str, str], ...]:
    """``task:name,task:name`` → pairs; a bare ``name`` replaces the name of every task in ``current``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) == 1 and ":" not in parts[0]:
        return tuple((task, parts[0]) for task, _ in current)
    pairs = tuple(tuple(p.split(":", 1)) for p in parts)
    if not pairs or any(len(p) != 2 or not all(p) for p in pairs):
        raise ValueError(text)
    return pairs


def _coerce(hint, value, current):
    nullable, inner = _optional(hint)
    if isinstance(value, str) and inner is not str:
        text = value.strip()
        if nullable and text.lower() in ("none", "null", ""):
            return None
        if inner is bool:
            if text.lower() not in TRUE + FALSE:
                raise ValueError(value)
            return text.lower() in TRUE
        if inner is int:
            return int(text)
        if inner is float:
            return float(text)
        if typing.get_origin(inner) is tuple:
            return _pairs(text, current)
        raise ValueError(value)
    if value is None:
        if not nullable:
            raise ValueError(value)
        return None
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if inner is int and isinstance(value, bool):
        raise ValueError(value)
    if typing.get_origin(inner) is tuple:
        if not isinstance(value, (tuple, list)):
            raise ValueError(value)
        return tuple(tuple(v) for v in value)
    if not isinstance(value, inner):
        raise ValueError(value)
    return value


def override(owner: str, settings, overrides: Mapping[str, object], aliases: Mapping[str, str] | None = None):
    """``settings`` with ``overrides`` applied (names may be ``aliases`` of fields); ``owner`` names whose settings
    they are in error messages."""
    if not overrides:
        return settings
    aliases = dict(aliases or {})
    fields = {f.name: f for f in dataclasses.fields(settings)}
    changes = {}
    for given, value in overrides.items():
        name = aliases.get(given, given)
        if name not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise JaxirInputError(f"{owner}: unknown setting {given!r}; its settings: {known}")
        hint = _hints(type(settings))[name]
        choices = fields[name].metadata.get("choices")
        try:
            value = _coerce(hint, value, getattr(settings, name))
        except ValueError:
            allowed = ", ".join(map(str, choices)) if choices else _type_text(hint)
            raise JaxirInputError(f"{owner}: setting {given!r} must be {allowed}, got {value!r}") from None
        if choices is not None and value not in choices:
            raise JaxirInputError(f"{owner}: setting {given!r} must be one of {', '.join(map(str, choices))}, "
                                  f"got {value!r}")
        changes[name] = value
    try:
        return dataclasses.replace(settings, **changes)
    except JaxirInputError as err:
        raise JaxirInputError(f"{owner}: {err}") from None


def to_json(settings) -> dict:
    """A settings dataclass as JSON-ready values (tuples as lists)."""
    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

    return {f.name: plain(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


def parse_assignments(items) -> dict[str, str]:
    """``["name=value", …]`` (``--set``) → ``{name: value}``; values stay text until :func:`override` types them."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise JaxirInputError(f"--set {item!r}: expected NAME=VALUE")
        out[name.strip()] = value
    return out
