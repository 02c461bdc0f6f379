"""Conversion errors: one line each, naming the file (and, for a pair of files, which one) or key at fault."""

from __future__ import annotations

import contextlib
import os

from jaxir.errors import JaxirInputError


class ConversionError(JaxirInputError):
    """A checkpoint cannot be converted as asked (wrong file, wrong model, missing or mismatched tensors)."""


@contextlib.contextmanager
def naming(path: str | os.PathLike, role: str | None = None):
    """Conversion errors raised inside the block start with ``path`` (and ``role``, e.g. ``--controlnet``):
    the key maps see only tensors, and a message about unused or missing tensors is useless to a person who
    passed two files without saying which one holds them. A message that already starts with the path gets
    the role added, not the path twice."""
    label = f"{path} ({role})" if role else str(path)
    try:
        yield
    except ConversionError as err:
        message = str(err).removeprefix(f"{path}: ")
        raise ConversionError(f"{label}: {message}") from None
