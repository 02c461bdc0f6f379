"""The autoencoder round trip of eq. (5), ``x̃ = D(mode(E(x)))``: the information a CLDM's latent space keeps, and
the fidelity ceiling it sets (the study's Table 2), for the autoencoder inside any checkpoint that has one."""

from __future__ import annotations

import jax.numpy as jnp

from jaxir import checkpoints
from jaxir.errors import JaxirInputError
from jaxir.models.vae import AutoencoderKL


def reconstruct(model: AutoencoderKL, params, images):
    """``D(mode(E(x)))`` of images in [0, 1], clipped to [0, 1] (the round trip of the study's Table 2)."""
    return jnp.clip((model.apply({"params": params}, images) + 1.0) / 2.0, 0.0, 1.0)


def load_autoencoder(path) -> tuple[AutoencoderKL, dict]:
    """``(AutoencoderKL, params)`` of the autoencoder inside the checkpoint at ``path``: kind ``vae`` (what
    :func:`jaxir.train.vae.train_vae` writes), ``diffbir_cldm`` (SD's or the small CLDM's VAE) or ``supir`` (SDXL's
    VAE with the plain encoder, not SUPIR's degradation-robust one)."""
    kind, config = checkpoints.read_config(path)
    if kind not in ("vae", "diffbir_cldm", "supir"):
        raise JaxirInputError(f"{path} holds a {kind!r} checkpoint, which has no autoencoder")
    _, params = checkpoints.load(path)
    if kind == "vae":
        return AutoencoderKL(config), params
    if kind == "diffbir_cldm":
        return AutoencoderKL(config.vae), params["vae"]
    vae = {k: v for k, v in params["first_stage_model"].items() if k != "denoise_encoder"}
    return AutoencoderKL(config.vae), vae
