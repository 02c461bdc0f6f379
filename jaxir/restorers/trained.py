"""Restorers that jaxir trains itself and ships inside the package (``jaxir/restorers/weights/``).

``jaxir_cnn``: the residual CNN of :mod:`jaxir.models.restorer_cnn`, one checkpoint per training task — SR ×2,
SR ×4 and Gaussian deblurring at σ = 2 — trained on procedural dead-leaves images only (:mod:`jaxir.train.restorer`;
each checkpoint's ``provenance.json`` holds the command that reproduces it). SR inputs use the ×2 model at α = 2
and the ×4 model otherwise (its output resized to the clean size); every blur level uses the σ = 2 model, so at
other σ it restores a blur it was not trained for (the study shows how far that carries).
"""

from __future__ import annotations

import functools
from pathlib import Path

from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError
from jaxir.restorers.base import Restorer, register
from jaxir.restorers.pretrained import make_restore

WEIGHTS = Path(__file__).resolve().parent / "weights"
MODELS = {"sr2": "jaxir_cnn_sr2", "sr4": "jaxir_cnn_sr4", "blur2": "jaxir_cnn_blur2"}


def model_for(degradation: Degradation) -> str:
    """The shipped checkpoint used for ``degradation``."""
    if degradation.task == "sr":
        return MODELS["sr2"] if degradation.scale == 2 else MODELS["sr4"]
    if degradation.task == "deblur":
        return MODELS["blur2"]
    raise JaxirInputError(f"jaxir_cnn has no model for the task {degradation.task!r}")


@functools.cache
def _restore_fn(name: str):
    from jaxir.checkpoints import load

    return make_restore(*load(WEIGHTS / name))


def restore(lq, degradation: Degradation):
    return _restore_fn(model_for(degradation))(lq, degradation)


def check() -> str | None:
    missing = [name for name in MODELS.values() if not (WEIGHTS / name / "config.json").is_file()]
    if missing:
        return f"shipped checkpoints missing from {WEIGHTS}: {', '.join(missing)} (reinstall jaxir)"
    return None


JAXIR_CNN = register(Restorer(
    "jaxir_cnn", restore, ("sr", "deblur"), "learned",
    "jaxir's residual CNN (bicubic + 4 residual blocks, 32 channels), trained here on dead leaves: SR ×2, ×4, "
    "deblur σ=2", check=check))
