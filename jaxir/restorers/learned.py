"""Restorers backed by a jaxir checkpoint directory (converted from PyTorch, or trained here).

Checkpoints are looked up by name under ``$JAXIR_CHECKPOINTS`` (default ``~/.cache/jaxir/checkpoints``), or at
an explicit path. A restorer whose directory is missing is *unavailable*: ``check`` returns the exact command
that creates it, the study lists it with that reason, and nothing crashes. Weights load once, on first use.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import jax

from jaxir.degradations.pipeline import Degradation
from jaxir.restorers.base import Restorer, register

CHECKPOINTS_ENV = "JAXIR_CHECKPOINTS"

# (model, params) → restore function (LQ NHWC in [0, 1], degradation) → HQ NHWC in [0, 1]
RestoreFactory = Callable[[object, object], Callable[[jax.Array, Degradation], jax.Array]]


def checkpoints_home() -> Path:
    """Where named checkpoints live: ``$JAXIR_CHECKPOINTS`` or ``~/.cache/jaxir/checkpoints``."""
    return Path(os.environ.get(CHECKPOINTS_ENV) or Path.home() / ".cache" / "jaxir" / "checkpoints")


def checkpoint_path(name_or_path: str | os.PathLike) -> Path:
    """An existing path as given, else ``checkpoints_home() / name``."""
    path = Path(name_or_path)
    return path if path.is_absolute() or path.exists() else checkpoints_home() / path


def checkpoint_restorer(name: str, checkpoint: str, make_restore: RestoreFactory, tasks: tuple[str, ...],
                        description: str, how_to_get: str, family: str = "learned") -> Restorer:
    """Register a restorer that loads ``checkpoint`` (a name under :func:`checkpoints_home` or a path).

    ``how_to_get`` is the command (or download + command) that creates the checkpoint; it is shown verbatim
    when the directory is missing, e.g. ``python -m checkpoints_conversion rrdbnet RealESRGAN_x4plus.pth
    --preset x4plus --out $JAXIR_CHECKPOINTS/realesrgan_x4``.
    """

    @functools.cache
    def restore_fn():
        from jaxir.checkpoints import load

        model, params = load(checkpoint_path(checkpoint))
        return make_restore(model, params)

    def check() -> str | None:
        path = checkpoint_path(checkpoint)
        if (path / "config.json").is_file():
            return None
        return f"no checkpoint at {path}; create it with: {how_to_get}"

    return register(Restorer(name, lambda lq, degradation: restore_fn()(lq, degradation), tasks, family,
                             description, check=check))
