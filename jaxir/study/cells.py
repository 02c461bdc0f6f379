"""One cell of the study: how one clean image becomes a metric row.

The clean image is degraded with the cell key ``fold_in(fold_in(key(seed), crc32(level label)), crc32(image
name))`` (eq. 1: the noise of sample 0 of that key); the restorer is called with the LQ image, the degradation and
its own stream of the cell key, ``fold_in(cell key, crc32("restore"))``, as sample 0 (so a CLDM's start noise
differs per image, level and seed, and never shares a stream with the degradation's noise); its output is
quantised to 8 bits as if saved and scored — PSNR/SSIM on the Y channel with ``crop_border`` = the scale (the SR
literature's convention; 0 for deblurring), NIQE on the RGB output. A cell's result therefore depends on neither
the order nor the subset of cells that run. Its ``seconds`` is degradation + restoration wall time less the
compilations and checkpoint loads it triggered (:class:`jaxir.cost.Meter`).
"""

from __future__ import annotations

import zlib

import jax
import numpy as np

from jaxir.cost import Meter, Totals
from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError
from jaxir.metrics import niqe, psnr, ssim
from jaxir.metrics.color import quantize_uint8
from jaxir.restorers.base import Restorer
from jaxir.study.inputs import crop_border

RESTORE_STREAM = zlib.crc32(b"restore")


def cell_key(seed: int, level: Degradation, image: str) -> jax.Array:
    """The key of one cell: ``fold_in(fold_in(key(seed), crc32(level label)), crc32(image name))``."""
    key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(level.label.encode()))
    return jax.random.fold_in(key, zlib.crc32(image.encode()))


def evaluate_cell(gt: np.ndarray, level: Degradation, restorer: Restorer, key: jax.Array,
                  lq: np.ndarray | None = None) -> tuple[dict, np.ndarray, Totals]:
    """Degrade ``gt`` with the cell ``key`` (or take the dataset's ``lq`` of a captured level), restore with the
    key's restorer stream, score; returns the metric row (without identity columns, ``seconds`` net of compilation
    and loading), the 8-bit output, and the compilations and loads the cell triggered."""
    with Meter() as meter:
        lq = level(gt[None], key) if lq is None else lq[None]
        out = restorer.restore(lq, level, jax.random.fold_in(key, RESTORE_STREAM), [0])
        if out.shape[1:3] != gt.shape[:2]:
            raise JaxirInputError(f"restorer {restorer.name!r} returned {out.shape[1:3]} for a {gt.shape[:2]} image")
        out = to_8bit(out)
    return {**score(out, gt[None], crop_border(level)), "seconds": meter.net_seconds}, out[0], meter.cost


def to_8bit(image) -> np.ndarray:
    """An output as the study stores it: rounded to 8 bits, back in [0, 1] float32."""
    return np.asarray(quantize_uint8(image), np.float32) / 255.0


def score(out: np.ndarray, gt: np.ndarray, border: int = 0) -> dict:
    """The study's metrics of an 8-bit output batch against its ground truth: Y-channel PSNR and SSIM with
    ``border`` pixels cropped (BasicSR's convention), NIQE on RGB (first image of the batch)."""
    return {"psnr": float(psnr(out, gt, crop_border=border, y_channel=True)[0]),
            "ssim": float(ssim(out, gt, crop_border=border, y_channel=True)[0]), "niqe": float(niqe(out)[0])}
