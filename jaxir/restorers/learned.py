"""Restorers backed by a jaxir checkpoint directory (converted from PyTorch, or trained here).

Checkpoints are looked up by name under ``$JAXIR_CHECKPOINTS`` (:mod:`jaxir.weights`), or at an explicit path: the
``checkpoint`` setting (``restorer.configure(checkpoint=PATH)``, ``--checkpoint``). A restorer whose directory is
missing is *unavailable*: ``check`` returns the exact command that creates it, the study lists it with that reason,
and nothing crashes. Weights load once per checkpoint, on first use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from jaxir.degradations.pipeline import Degradation
from jaxir.restorers.base import Restorer, deterministic, load_checkpoint, register
from jaxir.weights import missing_reason

# (model, params) → restore function (LQ NHWC in [0, 1], degradation) → HQ NHWC in [0, 1]
RestoreFactory = Callable[[object, object], Callable[[jax.Array, Degradation], jax.Array]]


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
    """``checkpoint``: a name under ``$JAXIR_CHECKPOINTS`` or a path to a converted directory."""

    checkpoint: str


def checkpoint_restorer(name: str, checkpoint: str, make_restore: RestoreFactory, tasks: tuple[str, ...],
                        description: str, how_to_get: str, family: str = "learned") -> Restorer:
    """Register a feed-forward restorer that loads ``checkpoint`` (its default; a name or a path).

    ``how_to_get`` is the command (or download + command) that creates the checkpoint; it is shown verbatim
    when the directory is missing, e.g. ``python -m checkpoints_conversion rrdbnet RealESRGAN_x4plus.pth
    --preset x4plus --out $JAXIR_CHECKPOINTS/realesrgan_x4``.
    """

    def build(settings: CheckpointSettings):
        return deterministic(make_restore(*load_checkpoint(settings.checkpoint)))

    return register(Restorer(name, build, tasks, family, description, settings=CheckpointSettings(checkpoint),
                             check=lambda settings: missing_reason(settings.checkpoint, how_to_get),
                             checkpoints=lambda settings, degradation: (settings.checkpoint,)))
