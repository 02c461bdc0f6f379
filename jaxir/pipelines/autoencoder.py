"""The autoencoder round trip of eq. (5), ``x̃ = D(mode(E(x)))``: the information a CLDM's latent space keeps, and
the fidelity ceiling it sets (the study's Table 2, ``jaxir experiment table2``), for the autoencoder inside any
checkpoint that has one.

A latent diffusion restorer outputs ``D(z)`` for some latent z, so no restoration can be closer to the clean image x
than the best decodable image; the round trip of x itself measures that ceiling (Rombach et al. 2022, Table 8
reports it for SD's autoencoders). Large images go through overlapping tiles (:func:`jaxir.tiling.tiled_apply`,
Gaussian blending) so the autoencoder's middle attention stays affordable. Autoencoders come from checkpoints of kind
``vae`` (jaxir's trained autoencoder), ``diffbir_cldm`` (SD 2.1's VAE, or the one of jaxir's small CLDM) and
``supir`` (SDXL's VAE; the plain encoder, not SUPIR's degradation-robust one)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxir import checkpoints
from jaxir.errors import JaxirInputError
from jaxir.models.vae import AutoencoderKL
from jaxir.tiling import tiled_apply


def reconstruct(model: AutoencoderKL, params, images):
    """``D(mode(E(x)))`` of images in [0, 1], clipped to [0, 1] (the round trip of the study's Table 2)."""
    return jnp.clip((model.apply({"params": params}, images) + 1.0) / 2.0, 0.0, 1.0)


def check_autoencoder(path) -> tuple[str, object]:
    """The (kind, config) of the checkpoint at ``path`` (read from its config, no parameters loaded); a one-line
    :class:`JaxirInputError` when it holds no autoencoder."""
    kind, config = checkpoints.read_config(path)
    if kind not in ("vae", "diffbir_cldm", "supir"):
        raise JaxirInputError(f"{path} holds a {kind!r} checkpoint, which has no autoencoder")
    return kind, config


def load_autoencoder(path) -> tuple[AutoencoderKL, dict]:
    """``(AutoencoderKL, params)`` of the autoencoder inside the checkpoint at ``path``: kind ``vae`` (what
    :func:`jaxir.train.vae.train_vae` writes), ``diffbir_cldm`` (SD's or the small CLDM's VAE) or ``supir`` (SDXL's
    VAE with the plain encoder, not SUPIR's degradation-robust one)."""
    kind, config = check_autoencoder(path)
    _, params = checkpoints.load(path)
    if kind == "vae":
        return AutoencoderKL(config), params
    if kind == "diffbir_cldm":
        return AutoencoderKL(config.vae), params["vae"]
    vae = {k: v for k, v in params["first_stage_model"].items() if k != "denoise_encoder"}
    return AutoencoderKL(config.vae), vae


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
