"""Where converted and shipped checkpoints live, and how a missing one is made.

Named checkpoints are directories under ``$JAXIR_CHECKPOINTS`` (default ``~/.cache/jaxir/checkpoints``), each made
by ``python -m checkpoints_conversion`` from a released PyTorch file; the models jaxir trains itself ship inside the
package (:data:`SHIPPED`). Every "this file is missing, here is how to get it" message is built here, by
:func:`how_to_get`, so the study, ``jaxir restorers`` and the metrics say the same thing.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINTS_ENV = "JAXIR_CHECKPOINTS"
SHIPPED = Path(__file__).resolve().parent / "restorers" / "weights"
SHIPPED_PREFIX = "shipped:"   # a checkpoint setting naming a shipped model, the same on every installation
CONVERT = "python -m checkpoints_conversion"


def checkpoints_home() -> Path:
    """Where named checkpoints live: ``$JAXIR_CHECKPOINTS`` or ``~/.cache/jaxir/checkpoints``."""
    return Path(os.environ.get(CHECKPOINTS_ENV) or Path.home() / ".cache" / "jaxir" / "checkpoints")


def checkpoint_path(name_or_path: str | os.PathLike) -> Path:
    """``shipped:NAME`` → the model jaxir ships as NAME; an existing or absolute path as given; else
    ``checkpoints_home() / name``."""
    if str(name_or_path).startswith(SHIPPED_PREFIX):
        return SHIPPED / str(name_or_path)[len(SHIPPED_PREFIX):]
    path = Path(name_or_path)
    return path if path.is_absolute() or path.exists() else checkpoints_home() / path


def how_to_get(downloads: str | tuple[str, ...], convert_args: str, checkpoint: str) -> str:
    """``download URL[ and URL], then run: python -m checkpoints_conversion ARGS --out $JAXIR_CHECKPOINTS/NAME``."""
    urls = (downloads,) if isinstance(downloads, str) else downloads
    return f"download {' and '.join(urls)}, then run: {CONVERT} {convert_args} --out ${CHECKPOINTS_ENV}/{checkpoint}"


def missing_reason(checkpoint: str | os.PathLike, how: str) -> str | None:
    """None when ``checkpoint`` (a name or path) holds a whole converted model, else why not and how to make it.
    A damaged checkpoint is found here, before a run starts, without reading its parameters
    (:func:`jaxir.checkpoints.verify`), so a study lists its restorer as not run instead of failing mid-run."""
    from jaxir.checkpoints import verify
    from jaxir.errors import JaxirInputError

    path = checkpoint_path(checkpoint)
    if not (path / "config.json").is_file():
        return f"no checkpoint at {path}; create it with: {how}"
    try:
        verify(path)
    except JaxirInputError as err:
        return f"damaged checkpoint: {err}; delete it and create it again with: {how}"
    return None


def filename(url: str) -> str:
    return url.rsplit("/", 1)[-1]
