"""SwinIR restorers (Liang et al., ICCVW 2021) from the released weights, and DiffBIR v1's stage-1 SwinIR.

* ``swinir_x4``: real-world SR, SwinIR-M ×4 GAN (``003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth``).
* ``swinir_classical_x2`` / ``_x4``: classical (bicubic-degradation) SR, SwinIR-M
  (``001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth`` / ``_x4.pth``).
* ``diffbir_swinir``: DiffBIR v1's stage-1 model (``general_swinir_v1.ckpt``, trained on Real-ESRGAN-style
  degradations), run as DiffBIR's ``SwinIRPipeline`` runs it: the LQ image is first upscaled by the degradation's
  α with bicubic (DiffBIR: PIL ``BICUBIC`` on the 8-bit image; here MATLAB ``imresize``, the same a = −0.5 cubic,
  which differs only at the borders and by 8-bit rounding; clamped to [0, 1] like the 8-bit image), zero-padded
  at the bottom/right to a multiple of 64, restored at that size and cropped. DiffBIR's ``SwinIRPipeline``
  (v2.0 ``run_stage1``, v2.1 ``apply_cleaner``) also enlarges images whose short side is below 512 (antialiased
  bicubic) *before* the cleaner; this restorer does not (it restores at the clean image's size, like the other SR
  restorers), so on images smaller than 512 its output differs from DiffBIR's stage-1 output.

The SR models run on the LQ batch. The output has the clean image's size, ``round(lq_size × α)``: when the
model's scale differs from α (a ×4 model on an SR ×2 input), its output is resized to that size with MATLAB
bicubic (:func:`jaxir.degradations.resize.imresize`, antialiased when shrinking). The LQ image is first
reflect-padded to the window multiple as a whole (the network's ``check_image_size``; SwinIR's
``main_test_swinir.py`` likewise pads before tiling), so that tiles see the same bottom/right border as the whole
image; images with a side above the tile size then go through :func:`jaxir.tiling.tiled_apply` (Gaussian-blended
overlapping tiles; the network compiles once per tile shape). Outputs are clamped to [0, 1], as SwinIR's test
script and DiffBIR clamp before saving.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxir.batches import clean_size, pad_to_multiple
from jaxir.degradations.pipeline import Degradation
from jaxir.degradations.resize import imresize
from jaxir.errors import JaxirInputError
from jaxir.restorers.learned import checkpoint_restorer
from jaxir.tiling import tiled_apply

TILE, OVERLAP = 256, 32                   # LQ pixels, SR models
DIFFBIR_TILE, DIFFBIR_OVERLAP = 512, 64   # pixels at the output size; DiffBIR's tiles are multiples of 64
DIFFBIR_MULTIPLE = 64                     # DiffBIR's pad_to_multiples_of before the cleaner

_SWINIR_RELEASE = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0"
_DIFFBIR_WEIGHTS = "https://huggingface.co/lxq007/DiffBIR/resolve/main/general_swinir_v1.ckpt"


def _how_to_get(url: str, preset: str, checkpoint: str) -> str:
    filename = url.rsplit("/", 1)[-1]
    return (f"download {url}, then run: python -m checkpoints_conversion swinir {filename} --preset {preset} "
            f"--out $JAXIR_CHECKPOINTS/{checkpoint}")


def _check_tiling(tile: int, overlap: int) -> None:
    if tile < 1 or not 0 <= overlap < tile:
        raise JaxirInputError(f"tile must be >= 1 and overlap in [0, tile), got tile {tile}, overlap {overlap}")


def _batched(restore):
    """Accept HWC as well as NHWC input."""
    def wrapped(lq, degradation: Degradation):
        squeeze = lq.ndim == 3
        out = restore(jnp.asarray(lq[None] if squeeze else lq, jnp.float32), degradation)
        return out[0] if squeeze else out

    return wrapped


def make_restore(model, params, tile: int = TILE, overlap: int = OVERLAP):
    """(model, params) of a ``swinir`` SR checkpoint → restore function (see the module docstring)."""
    _check_tiling(tile, overlap)
    network = jax.jit(lambda p, x: model.apply({"params": p}, x))
    scale = model.config.output_scale
    multiple = model.config.pad_multiple

    def restore(lq, degradation: Degradation):
        # Pad the whole image to the window multiple before tiling, as SwinIR's main_test_swinir.py does, with
        # the network's own reflect padding: tiles then see the same bottom/right border as the untiled network.
        h, w = lq.shape[1], lq.shape[2]
        padded = pad_to_multiple(lq, multiple, mode="reflect")
        out = tiled_apply(lambda x: network(params, x), padded, tile, overlap, scale=scale)[:, :h * scale, :w * scale]
        size = clean_size(lq.shape[1], lq.shape[2], degradation)
        if out.shape[1:3] != size:
            out = imresize(out, size=size)
        return jnp.clip(out, 0.0, 1.0)

    return _batched(restore)


def make_diffbir_restore(model, params, tile: int = DIFFBIR_TILE, overlap: int = DIFFBIR_OVERLAP):
    """(model, params) of DiffBIR's stage-1 ``swinir`` checkpoint (output scale 1) → restore function: bicubic
    upscaling by α, then SwinIR at the output size on zero-padded tiles (see the module docstring)."""
    _check_tiling(tile, overlap)
    if model.config.output_scale != 1:
        raise JaxirInputError(f"DiffBIR's stage-1 SwinIR restores at scale 1; this checkpoint has scale "
                              f"{model.config.output_scale}")
    network = jax.jit(lambda p, x: model.apply({"params": p}, x))

    def padded_network(x):
        h, w = x.shape[1], x.shape[2]
        return network(params, pad_to_multiple(x, DIFFBIR_MULTIPLE))[:, :h, :w]

    def restore(lq, degradation: Degradation):
        size = clean_size(lq.shape[1], lq.shape[2], degradation)
        upscaled = lq if lq.shape[1:3] == size else jnp.clip(imresize(lq, size=size), 0.0, 1.0)
        return jnp.clip(tiled_apply(padded_network, upscaled, tile, overlap), 0.0, 1.0)

    return _batched(restore)


SWINIR_X4 = checkpoint_restorer(
    "swinir_x4", "swinir_realsr_m_x4", make_restore, ("sr",),
    "SwinIR-M real-world ×4 SR (BSRGAN degradations, GAN-trained, nearest+conv upsampler)",
    _how_to_get(f"{_SWINIR_RELEASE}/003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth", "realsr_m_x4",
                "swinir_realsr_m_x4"))
SWINIR_CLASSICAL_X2 = checkpoint_restorer(
    "swinir_classical_x2", "swinir_classical_x2", make_restore, ("sr",),
    "SwinIR-M classical ×2 SR (bicubic degradation, DF2K, L1-trained)",
    _how_to_get(f"{_SWINIR_RELEASE}/001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth", "classical_x2",
                "swinir_classical_x2"))
SWINIR_CLASSICAL_X4 = checkpoint_restorer(
    "swinir_classical_x4", "swinir_classical_x4", make_restore, ("sr",),
    "SwinIR-M classical ×4 SR (bicubic degradation, DF2K, L1-trained)",
    _how_to_get(f"{_SWINIR_RELEASE}/001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth", "classical_x4",
                "swinir_classical_x4"))
DIFFBIR_SWINIR = checkpoint_restorer(
    "diffbir_swinir", "diffbir_swinir_v1", make_diffbir_restore, ("sr", "deblur", "denoise", "dejpeg"),
    "DiffBIR v1 stage-1 SwinIR (Real-ESRGAN degradations on ImageNet): bicubic ×α, then restoration at that size",
    _how_to_get(_DIFFBIR_WEIGHTS, "diffbir_v1", "diffbir_swinir_v1"))
