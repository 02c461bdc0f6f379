"""Feed-forward restorers from released PyTorch weights: Real-ESRGAN ×4/×2 and BSRNet (RRDBNet), SCUNet.

* ``realesrgan_x4``, ``realesrgan_x2``: Real-ESRGAN (Wang et al., ICCVW 2021) ``RealESRGAN_x4plus.pth`` /
  ``RealESRGAN_x2plus.pth``, blind real-world SR.
* ``bsrnet``: BSRGAN's PSNR-oriented ``BSRNet.pth`` (Zhang et al., ICCV 2021), DiffBIR v2's stage-1 SR model.
* ``scunet``: ``scunet_color_real_psnr.pth`` (Zhang et al., 2022), DiffBIR v2's stage-1 blind denoiser.

Restore: the model runs on the LQ batch, through :func:`jaxir.tiling.tiled_apply` when a side exceeds ``tile``
LQ pixels (tiles overlap by ``overlap``, Gaussian-blended; the network is jitted once per tile shape). The output
must have the clean image's size, ``round(lq_size × α)`` for the degradation's scale α (as the restorer
interface asks): when the model's own scale differs (a ×4 model on an SR ×2 or a non-integer-α input, SCUNet on
an SR input) its output is resized to that size with MATLAB bicubic (:func:`jaxir.degradations.resize.imresize`,
antialiased when shrinking). The result is clamped to [0, 1], as Real-ESRGAN's and BSRGAN's scripts clamp
before saving. DiffBIR's pipelines additionally resize short sides below 512 before diffusion; that belongs to
the CLDM pipeline, not here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxir.batches import clean_size
from jaxir.degradations.pipeline import Degradation
from jaxir.degradations.resize import imresize
from jaxir.errors import JaxirInputError
from jaxir.restorers.learned import checkpoint_restorer
from jaxir.tiling import tiled_apply

TILE = 512       # LQ pixels per tile side; larger images are tiled
OVERLAP = 32

_CONVERT = "python -m checkpoints_conversion"


def _how_to_get(url: str, kind: str, preset: str, checkpoint: str) -> str:
    filename = url.rsplit("/", 1)[-1]
    return (f"download {url}, then run: {_CONVERT} {kind} {filename} --preset {preset} "
            f"--out $JAXIR_CHECKPOINTS/{checkpoint}")


def model_scale(model) -> int:
    """Output side / input side of a feed-forward model (RRDBNet's ``config.scale``; 1 for SCUNet)."""
    return int(getattr(model.config, "scale", 1))


def make_restore(model, params, tile: int = TILE, overlap: int = OVERLAP):
    """(model, params) of an ``rrdbnet``/``scunet`` checkpoint → restore function (LQ NHWC or HWC in [0, 1],
    degradation) → restored image of the clean size, in [0, 1] (see the module docstring)."""
    if tile < 1 or not 0 <= overlap < tile:
        raise JaxirInputError(f"tile must be >= 1 and overlap in [0, tile), got tile {tile}, overlap {overlap}")
    network = jax.jit(lambda p, x: model.apply({"params": p}, x))
    scale = model_scale(model)

    def restore(lq, degradation: Degradation):
        squeeze = lq.ndim == 3
        batch = jnp.asarray(lq[None] if squeeze else lq, jnp.float32)
        out = tiled_apply(lambda x: network(params, x), batch, tile, overlap, scale=scale)
        size = clean_size(batch.shape[1], batch.shape[2], degradation)
        if out.shape[1:3] != size:
            out = imresize(out, size=size)
        out = jnp.clip(out, 0.0, 1.0)
        return out[0] if squeeze else out

    return restore


_REALESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_KAIR = "https://github.com/cszn/KAIR/releases/download/v1.0"

REALESRGAN_X4 = checkpoint_restorer(
    "realesrgan_x4", "realesrgan_x4plus", make_restore, ("sr",),
    "Real-ESRGAN x4plus (RRDBNet, 23 blocks): blind ×4 SR trained on second-order synthetic degradations",
    _how_to_get(f"{_REALESRGAN}/v0.1.0/RealESRGAN_x4plus.pth", "rrdbnet", "realesrgan_x4plus", "realesrgan_x4plus"))
REALESRGAN_X2 = checkpoint_restorer(
    "realesrgan_x2", "realesrgan_x2plus", make_restore, ("sr",),
    "Real-ESRGAN x2plus (RRDBNet on a pixel-unshuffled input): blind ×2 SR",
    _how_to_get(f"{_REALESRGAN}/v0.2.1/RealESRGAN_x2plus.pth", "rrdbnet", "realesrgan_x2plus", "realesrgan_x2plus"))
BSRNET = checkpoint_restorer(
    "bsrnet", "bsrnet", make_restore, ("sr",),
    "BSRNet (BSRGAN's PSNR-oriented RRDBNet ×4), DiffBIR v2's stage-1 model for blind SR",
    _how_to_get(f"{_KAIR}/BSRNet.pth", "rrdbnet", "bsrnet", "bsrnet"))
SCUNET = checkpoint_restorer(
    "scunet", "scunet_color_real_psnr", make_restore, ("denoise",),
    "SCUNet (Swin-Conv-UNet) real-noise PSNR model, DiffBIR v2's stage-1 blind denoiser",
    _how_to_get(f"{_KAIR}/scunet_color_real_psnr.pth", "scunet", "scunet_color", "scunet_color_real_psnr"))
