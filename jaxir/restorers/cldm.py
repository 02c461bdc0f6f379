"""CLDM restorers: DiffBIR v1, v2 and v2.1 and SUPIR v0Q and v0F as registered restorers (family ``cldm``), with
the published settings of :meth:`jaxir.pipelines.diffbir.DiffBIRSettings.preset` and
:meth:`jaxir.pipelines.supir.SUPIRSettings.preset`.

Each needs its converted ControlLDM (``$JAXIR_CHECKPOINTS/diffbir_<version>``) and the stage-1 restorers that its
preset names; ``check`` reports whichever is missing with the command that creates it. The study runs them with
the preset's settings and ``key(seed)`` (sample i of a call draws from ``fold_in(key, i)``); ``jaxir restore``
exposes every sampler setting (:func:`diffbir_pipeline`, :func:`supir_pipeline`). SUPIR needs only its converted
checkpoint (``$JAXIR_CHECKPOINTS/supir_<version>``, SDXL base + the SUPIR file); its stage 1 is its own
degradation-robust encoder.
"""

from __future__ import annotations

import dataclasses
import functools

from jaxir.errors import JaxirInputError
from jaxir.pipelines.diffbir import DiffBIR, DiffBIRSettings
from jaxir.pipelines.supir import SUPIRPipeline, SUPIRSettings
from jaxir.restorers.base import Restorer, get, register
from jaxir.restorers.learned import checkpoint_path

_SD21 = "https://huggingface.co/stabilityai/stable-diffusion-2-1-base/resolve/main/v2-1_512-ema-pruned.ckpt"
_HF = "https://huggingface.co/lxq007/DiffBIR-v2/resolve/main"
# version: (SD checkpoint, ControlNet checkpoint), DiffBIR ``diffbir/inference/pretrained_models.py``
RELEASES = {"v1": (_SD21, f"{_HF}/v1_general.pth"),
            "v2": (_SD21, f"{_HF}/v2.pth"),
            "v2.1": (f"{_HF}/sd2.1-base-zsnr-laionaes5.ckpt", f"{_HF}/DiffBIR_v2.1.pt")}


def checkpoint_name(version: str) -> str:
    return f"diffbir_{version}"


def how_to_get(version: str) -> str:
    sd, controlnet = RELEASES[version]
    return (f"download {sd} and {controlnet}, then run: python -m checkpoints_conversion diffbir "
            f"--sd {sd.rsplit('/', 1)[-1]} --controlnet {controlnet.rsplit('/', 1)[-1]} "
            f"--out $JAXIR_CHECKPOINTS/{checkpoint_name(version)}")


def diffbir_pipeline(version: str, checkpoint=None, **overrides) -> DiffBIR:
    """The DiffBIR pipeline of ``version`` loaded from ``checkpoint`` (default: the named checkpoint), with
    :class:`DiffBIRSettings` fields overridden by ``overrides``."""
    from jaxir.checkpoints import load

    model, params = load(checkpoint_path(checkpoint or checkpoint_name(version)))
    return DiffBIR(model, params, DiffBIRSettings.preset(version, **overrides))


def _check(version: str) -> str | None:
    path = checkpoint_path(checkpoint_name(version))
    if not (path / "config.json").is_file():
        return f"no checkpoint at {path}; create it with: {how_to_get(version)}"
    stage1 = sorted({name for _, name in DiffBIRSettings.preset(version).stage1})
    missing = [f"{name} ({get(name).unavailable_reason()})" for name in stage1 if get(name).unavailable_reason()]
    return f"stage-1 restorers unavailable: {'; '.join(missing)}" if missing else None


def _register(version: str) -> Restorer:
    pipeline = functools.cache(lambda: diffbir_pipeline(version))
    return register(Restorer(
        f"diffbir_{version}", lambda lq, degradation: pipeline()(lq, degradation), ("sr", "deblur", "denoise"), "cldm",
        f"DiffBIR {version} (ControlLDM on SD 2.1{' zero-SNR' if version == 'v2.1' else ''}), published settings",
        check=lambda: _check(version)))


DIFFBIR = {version: _register(version) for version in RELEASES}


# ---- SUPIR ---------------------------------------------------------------------------------------------------------

SDXL_URL = ("https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
            "sd_xl_base_1.0_0.9vae.safetensors")
SUPIR_DOWNLOAD = "https://drive.google.com/drive/folders/1yELzm5SvAi9e7kPcO_jPp2XkTs4vK6aR"   # SUPIR's README
SUPIR_VERSIONS = ("v0Q", "v0F")


def supir_checkpoint_name(version: str) -> str:
    return f"supir_{version}"


def supir_how_to_get(version: str) -> str:
    return (f"download {SDXL_URL} and SUPIR-{version}.ckpt ({SUPIR_DOWNLOAD}), then run: python -m "
            f"checkpoints_conversion supir --sdxl {SDXL_URL.rsplit('/', 1)[-1]} --supir SUPIR-{version}.ckpt "
            f"--out $JAXIR_CHECKPOINTS/{supir_checkpoint_name(version)}")


def supir_pipeline(version: str, checkpoint=None, latent_tile: int | None = None,
                   latent_tile_stride: int | None = None, **overrides) -> SUPIRPipeline:
    """The SUPIR pipeline of ``version`` loaded from ``checkpoint`` (default: the named checkpoint), with
    :class:`SUPIRSettings` fields overridden by ``overrides`` (checked before loading). ``latent_tile`` /
    ``latent_tile_stride`` give the tiled sampler's tile and stride in image pixels (``jaxir restore
    --latent-tile``; the stride defaults to half the tile, SUPIR's 128/64), converted to the latent pixels of
    ``tile_size`` / ``tile_stride`` with the model's VAE factor."""
    from jaxir.checkpoints import load

    settings = SUPIRSettings.preset(version, **overrides)
    if latent_tile_stride is not None and latent_tile is None:
        raise JaxirInputError("latent_tile_stride needs latent_tile")
    model, params = load(checkpoint_path(checkpoint or supir_checkpoint_name(version)))
    if latent_tile is not None:
        factor = model.config.vae.downsample_factor
        stride = latent_tile // 2 if latent_tile_stride is None else latent_tile_stride
        if latent_tile % factor or stride % factor:
            raise JaxirInputError(f"latent_tile and its stride must be multiples of the VAE factor {factor} pixels, "
                                  f"got {latent_tile} and {stride}")
        settings = dataclasses.replace(settings, tile_size=latent_tile // factor, tile_stride=stride // factor)
    return SUPIRPipeline(model, params, settings)


def _check_supir(version: str) -> str | None:
    path = checkpoint_path(supir_checkpoint_name(version))
    if not (path / "config.json").is_file():
        return f"no checkpoint at {path}; create it with: {supir_how_to_get(version)}"
    return None


def _register_supir(version: str) -> Restorer:
    pipeline = functools.cache(lambda: supir_pipeline(version))
    kind = {"v0Q": "quality", "v0F": "fidelity"}[version]
    return register(Restorer(
        supir_checkpoint_name(version), lambda lq, degradation: pipeline()(lq, degradation),
        ("sr", "deblur", "denoise", "dejpeg"), "cldm",
        f"SUPIR {version} (SDXL + GLVControl, restore-EDM sampler), test.py settings ({kind} preset)",
        check=lambda: _check_supir(version)))


SUPIR = {version: _register_supir(version) for version in SUPIR_VERSIONS}
