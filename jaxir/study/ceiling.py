"""The autoencoder fidelity ceiling (the study's Table 2): how well a CLDM's VAE alone reproduces a clean image.

A latent diffusion restorer outputs ``D(z)`` for some latent z, so no restoration can be closer to the clean
image x than the best decodable image; ``x̂ = D(mode(E(x)))``, the round trip of the clean image itself, measures
that ceiling (Rombach et al. 2022, Table 8 reports it for SD's autoencoders). Scored as the study scores
restorations (8-bit output, Y-channel PSNR/SSIM, NIQE on RGB). Large images go through overlapping tiles
(:func:`jaxir.tiling.tiled_apply`, Gaussian blending) so the autoencoder's middle attention stays affordable.

Autoencoders come from any jaxir checkpoint that holds one: kind ``vae`` (jaxir's trained autoencoder),
``diffbir_cldm`` (SD 2.1's VAE, or the one of jaxir's small CLDM), ``supir`` (SDXL's VAE; the plain encoder, not
SUPIR's degradation-robust one).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.data.images import ImageRecord, crop_to_multiple
from jaxir.errors import JaxirInputError
from jaxir.models.vae import AutoencoderKL
from jaxir.pipelines.autoencoder import load_autoencoder, reconstruct
from jaxir.study.cells import score, to_8bit
from jaxir.study.results import ResultsWriter, cell_key, read_results
from jaxir.tiling import tiled_apply

LEVEL = "VAE round trip"


_roundtrip = jax.jit(reconstruct, static_argnums=0)


def roundtrip(model: AutoencoderKL, params, image, tile: int = 256, overlap: int | None = None) -> jax.Array:
    """``D(mode(E(x)))`` of an NHWC batch in [0, 1] whose sides are multiples of the VAE factor, in [0, 1];
    tiled when a side exceeds ``tile`` (0: never), tiles overlapping by ``overlap`` (default a quarter tile)."""
    overlap = tile // 4 if overlap is None else overlap
    image = jnp.asarray(image, jnp.float32)
    factor = model.config.downsample_factor
    if image.shape[1] % factor or image.shape[2] % factor:
        raise JaxirInputError(f"image sides {image.shape[1:3]} must be multiples of the VAE factor {factor}")
    fn = functools.partial(_roundtrip, model, params)
    if tile and max(image.shape[1:3]) > tile:
        if tile % factor or overlap % factor:
            raise JaxirInputError(f"tile {tile} and overlap {overlap} must be multiples of the VAE factor {factor}")
        return tiled_apply(fn, image, tile, overlap)
    return fn(image)


def ceiling_table(autoencoders: Mapping[str, str | Path], images: Sequence[ImageRecord], out: Path,
                  tile: int = 256, progress: bool = True) -> list[dict]:
    """Round-trip scores of every (autoencoder, image) into ``out/results.csv`` (one row each, resumable: finished
    rows are kept and skipped); returns all rows. Images are cropped to a multiple of 8 (every VAE factor here)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.csv"
    rows = read_results(path)
    done = {cell_key(r) for r in rows}
    writer = ResultsWriter(path)
    try:
        for name, checkpoint in autoencoders.items():
            todo = [r for r in images if (r.name, LEVEL, name) not in done]
            if not todo:
                continue
            model, params = load_autoencoder(checkpoint)
            for record in tqdm(todo, desc=name, disable=not progress):
                gt = crop_to_multiple(record.image, 8)
                start = time.perf_counter()
                x = to_8bit(roundtrip(model, params, gt[None], tile))
                row = {"image": record.name, "level": LEVEL, "task": "autoencoder", "scale": 1.0, "blur_sigma": 0.0,
                       "noise": 0.0, "retention": 1.0, "restorer": name, "family": "autoencoder",
                       "height": gt.shape[0], "width": gt.shape[1], **score(x, gt[None]),
                       "seconds": time.perf_counter() - start}
                writer.write(row)
                rows.append(row)
    finally:
        writer.close()
    return rows


def ceiling_markdown(rows: Sequence[dict]) -> str:
    """Per autoencoder: mean PSNR / SSIM / NIQE over images, then one column per image (PSNR)."""
    names = list(dict.fromkeys(r["restorer"] for r in rows))
    images = list(dict.fromkeys(r["image"] for r in rows))
    lines = [f"| autoencoder | mean PSNR / SSIM / NIQE | {' | '.join(images)} |",
             "|---|---|" + "---|" * len(images)]
    for name in names:
        mine = {r["image"]: r for r in rows if r["restorer"] == name}
        mean = [np.mean([r[k] for r in mine.values()]) for k in ("psnr", "ssim", "niqe")]
        cells = [f"{mine[i]['psnr']:.2f}" if i in mine else "–" for i in images]
        lines.append(f"| {name} | {mean[0]:.2f} / {mean[1]:.4f} / {mean[2]:.2f} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"
