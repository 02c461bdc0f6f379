"""Restorers that jaxir trains itself and ships inside the package (``jaxir/restorers/weights/``).

``jaxir_cldm``: a small CLDM (autoencoder f = 4, UNet and IRControlNet, :mod:`jaxir.train.diffusion`) trained on
dead leaves, run as DiffBIR does (:class:`jaxir.pipelines.diffbir.DiffBIR`, preset ``jaxir``) on ``jaxir_cnn`` as
its stage 1 — the study's CLDM-vs-regression comparison with both halves trained by the same code on the same data.

``jaxir_cnn``: the residual CNN of :mod:`jaxir.models.restorer_cnn`, one checkpoint per training task — SR ×2,
SR ×4 and Gaussian deblurring at σ = 2 — trained on procedural dead-leaves images only (:mod:`jaxir.train.restorer`;
each checkpoint's ``provenance.json`` holds the command that reproduces it). It takes part in the degradations it
was trained for: noise-free SR ×2 and ×4, and noise-free Gaussian blur σ = 2 (a non-blind deblurring network
applied to another σ fails badly: at σ = 1 the σ = 2 model gives 15.4 dB where the blurred input has 33.9 dB).
"""

from __future__ import annotations

import functools

from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError
from jaxir.restorers.base import Restorer, deterministic, load_checkpoint, register
from jaxir.restorers.cldm_family import DiffBIRRestorerSettings, diffbir_restorer
from jaxir.restorers.pretrained import make_restore
from jaxir.weights import SHIPPED, SHIPPED_PREFIX

MODELS = {"sr2": "jaxir_cnn_sr2", "sr4": "jaxir_cnn_sr4", "blur2": "jaxir_cnn_blur2"}
CLDM = "jaxir_cldm"


def trained_for(degradation: Degradation) -> bool:
    """Whether ``degradation`` is one the shipped models were trained for."""
    d = degradation
    plain = not d.noise and d.jpeg_quality is None and d.blur_anisotropic is None and d.resize == "matlab"
    if d.task == "sr":
        return plain and not d.blur_sigma and d.scale in (2, 4)
    return plain and d.task == "deblur" and d.blur_sigma == 2.0


def model_for(degradation: Degradation) -> str:
    """The shipped checkpoint used for ``degradation``."""
    if not trained_for(degradation):
        raise JaxirInputError(f"jaxir_cnn has no model for {degradation.label} (trained for SR x2, SR x4, blur σ=2)")
    if degradation.task == "sr":
        return MODELS["sr2"] if degradation.scale == 2 else MODELS["sr4"]
    return MODELS["blur2"]


@functools.cache
def _restore_fn(name: str):
    return make_restore(*load_checkpoint(SHIPPED / name))


def restore(lq, degradation: Degradation):
    """``jaxir_cnn``: the shipped model of ``degradation`` (deterministic)."""
    return _restore_fn(model_for(degradation))(lq, degradation)


def _check(names) -> str | None:
    missing = [name for name in names if not (SHIPPED / name / "config.json").is_file()]
    if missing:
        return f"shipped checkpoints missing from {SHIPPED}: {', '.join(missing)} (reinstall jaxir)"
    return None


def check(settings=None) -> str | None:
    return _check(MODELS.values())


def training_stage1(tasks) -> dict:
    """The shipped ``jaxir_cnn`` as the stage-1 restore function ``(lq, degradation)`` of each training task (what
    ``jaxir train --task cldm`` conditions the small CLDM's connector on)."""
    return {task: restore for task in tasks}


JAXIR_CNN = register(Restorer(
    "jaxir_cnn", lambda settings: deterministic(restore), ("sr", "deblur"), "learned",
    "jaxir's residual CNN (bicubic + 4 residual blocks, 32 channels), trained here on dead leaves: SR ×2, ×4, "
    "deblur σ=2", check=check, accepts=trained_for,
    checkpoints=lambda settings, degradation: (SHIPPED / model_for(degradation),)))


JAXIR_CLDM = diffbir_restorer(
    "jaxir_cldm", DiffBIRRestorerSettings.preset("jaxir", checkpoint=SHIPPED_PREFIX + CLDM), ("sr", "deblur"),
    "jaxir's small CLDM (VAE f=4, UNet, IRControlNet) trained here on dead leaves, on jaxir_cnn as stage 1; "
    "from the condition noised to t=250, 10 DDIM steps (η=1)",
    "reinstall jaxir (the small CLDM ships inside the package)", accepts=trained_for)
