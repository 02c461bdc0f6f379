"""CLDM restorers: DiffBIR v1, v2 and v2.1 as registered restorers (family ``cldm``), with the published settings
of :meth:`jaxir.pipelines.diffbir.DiffBIRSettings.preset`.

Each needs its converted ControlLDM (``$JAXIR_CHECKPOINTS/diffbir_<version>``) and the stage-1 restorers that its
preset names; ``check`` reports whichever is missing with the command that creates it. The study runs them with
the preset's settings and ``key(seed)`` (sample i of a call draws from ``fold_in(key, i)``); ``jaxir restore``
exposes every sampler setting (:func:`diffbir_pipeline`).
"""

from __future__ import annotations

import functools

from jaxir.pipelines.diffbir import DiffBIR, DiffBIRSettings
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
