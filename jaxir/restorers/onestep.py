"""One-step diffusion restorers (family ``onestep``): HYPIR, OSEDiff and PiSA-SR with their inference scripts'
settings (:meth:`jaxir.pipelines.onestep.OneStepSettings.preset`) on converted ``onestep`` checkpoints
(``hypir``, ``osediff``, ``pisa_sr`` under ``$JAXIR_CHECKPOINTS``; ``check`` says how to make each).

The prompt is empty unless set (``prompt``; the releases caption with DAPE/RAM or LLaVA, which jaxir does not
ship). ``lora_scale`` and PiSA-SR's ``lambda_pix``/``lambda_sem`` (with ``dial=True``) are traced: a sweep over them
compiles once. Sample b draws its VAE posterior noise from ``fold_in(key, sample_ids[b])``.
"""

from __future__ import annotations

import dataclasses

from jaxir.pipelines.onestep import OneStep, OneStepSettings
from jaxir.restorers.base import Restorer, load_checkpoint, register
from jaxir.weights import filename, how_to_get, missing_reason

SD21_DIFFUSERS = "https://huggingface.co/stabilityai/stable-diffusion-2-1-base (the diffusers folder)"
# method: (release file URL, description)
RELEASES = {
    "hypir": ("https://huggingface.co/lxq007/HYPIR/resolve/main/HYPIR_sd2.pth",
              "HYPIR (SD 2.1 + rank-256 UNet LoRA, one step at t = 200), test.py settings"),
    "osediff": ("https://github.com/cswry/OSEDiff/raw/main/preset/models/osediff.pkl",
                "OSEDiff (SD 2.1 + UNet/VAE-encoder LoRA, one step at t = 999), test_osediff.py settings"),
    "pisa_sr": ("pisa_sr.pkl (https://drive.google.com/drive/folders/1oLetijWNd59xwJE5oU-eXylQBifxWdss, "
                "PiSA-SR's README)",
                "PiSA-SR (SD 2.1 + pixel and semantic LoRAs, one step; lambda_pix/lambda_sem with dial=True)"),
}


@dataclasses.dataclass(frozen=True)
class OneStepRestorerSettings(OneStepSettings):
    """:class:`OneStepSettings` and the checkpoint they run on."""

    checkpoint: str = ""


def onestep_how_to_get(method: str) -> str:
    source = RELEASES[method][0]
    weights = filename(source.split()[0])
    return how_to_get((SD21_DIFFUSERS, source), f"{method} --base stable-diffusion-2-1-base --weights {weights}",
                      method)


def onestep_pipeline(settings: OneStepRestorerSettings) -> OneStep:
    model, params = load_checkpoint(settings.checkpoint)
    return OneStep(model, params, settings)


def onestep_restorer(method: str) -> Restorer:
    how = onestep_how_to_get(method)
    settings = OneStepRestorerSettings.preset(method, checkpoint=method)
    return register(Restorer(method, lambda s: onestep_pipeline(s).restore, ("sr", "deblur", "denoise", "dejpeg"),
                             "onestep", RELEASES[method][1], settings=settings,
                             check=lambda s: missing_reason(s.checkpoint, how), aliases=(("pos_prompt", "prompt"),),
                             checkpoints=lambda s, degradation: (s.checkpoint,)))


ONESTEP = {method: onestep_restorer(method) for method in RELEASES}
