"""CLDM restorers: DiffBIR v1, v2 and v2.1 and SUPIR v0Q and v0F as registered restorers (family ``cldm``), with
the published settings of :meth:`jaxir.pipelines.diffbir.DiffBIRSettings.preset` and
:meth:`jaxir.pipelines.supir.SUPIRSettings.preset` as their default settings.

Their settings and checkpoints: :mod:`jaxir.restorers.cldm_family`. Default checkpoints: ``diffbir_<version>`` and
``supir_<version>`` under ``$JAXIR_CHECKPOINTS``; ``check`` says how to make each from the released files.
"""

from __future__ import annotations

from jaxir.restorers.cldm_family import (DiffBIRRestorerSettings, SUPIRRestorerSettings, diffbir_restorer,
                                         supir_restorer)
from jaxir.weights import filename, how_to_get

_SD21 = "https://huggingface.co/stabilityai/stable-diffusion-2-1-base/resolve/main/v2-1_512-ema-pruned.ckpt"
_HF = "https://huggingface.co/lxq007/DiffBIR-v2/resolve/main"
# version: (SD checkpoint, ControlNet checkpoint), DiffBIR ``diffbir/inference/pretrained_models.py``
RELEASES = {"v1": (_SD21, f"{_HF}/v1_general.pth"),
            "v2": (_SD21, f"{_HF}/v2.pth"),
            "v2.1": (f"{_HF}/sd2.1-base-zsnr-laionaes5.ckpt", f"{_HF}/DiffBIR_v2.1.pt")}


def checkpoint_name(version: str) -> str:
    return f"diffbir_{version}"


# the diffusion process of each release's base model (DiffBIR ``configs/inference/diffusion*.yaml``)
PROCESS_FLAGS = {"v1": "", "v2": "", "v2.1": " --parameterization v --zero-snr"}


def diffbir_how_to_get(version: str) -> str:
    sd, controlnet = RELEASES[version]
    return how_to_get((sd, controlnet), f"diffbir --sd {filename(sd)} --controlnet {filename(controlnet)}"
                      f"{PROCESS_FLAGS[version]}", checkpoint_name(version))


DIFFBIR = {version: diffbir_restorer(
    checkpoint_name(version), DiffBIRRestorerSettings.preset(version, checkpoint=checkpoint_name(version)),
    ("sr", "deblur", "denoise"),
    f"DiffBIR {version} (ControlLDM on SD 2.1{' zero-SNR' if version == 'v2.1' else ''}), published settings",
    diffbir_how_to_get(version)) for version in RELEASES}


# ---- SUPIR ---------------------------------------------------------------------------------------------------------

SDXL_URL = ("https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
            "sd_xl_base_1.0_0.9vae.safetensors")
SUPIR_DOWNLOAD = "https://drive.google.com/drive/folders/1yELzm5SvAi9e7kPcO_jPp2XkTs4vK6aR"   # SUPIR's README
SUPIR_VERSIONS = ("v0Q", "v0F")


def supir_checkpoint_name(version: str) -> str:
    return f"supir_{version}"


def supir_how_to_get(version: str) -> str:
    return how_to_get((SDXL_URL, f"SUPIR-{version}.ckpt ({SUPIR_DOWNLOAD})"),
                      f"supir --sdxl {filename(SDXL_URL)} --supir SUPIR-{version}.ckpt", supir_checkpoint_name(version))


SUPIR = {version: supir_restorer(
    supir_checkpoint_name(version), SUPIRRestorerSettings.preset(version, checkpoint=supir_checkpoint_name(version)),
    ("sr", "deblur", "denoise", "dejpeg"),
    f"SUPIR {version} (SDXL + GLVControl, restore-EDM sampler), test.py settings "
    f"({ {'v0Q': 'quality', 'v0F': 'fidelity'}[version]} preset)", supir_how_to_get(version))
    for version in SUPIR_VERSIONS}
