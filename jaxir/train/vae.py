"""Training the KL autoencoder of latent diffusion (:class:`jaxir.models.vae.AutoencoderKL`) on procedural images.

Objective: LDM's ``LPIPSWithDiscriminator`` (Rombach et al. 2022, sec. 3 and app. G; CompVis/latent-diffusion
``ldm/modules/losses/contperceptual.py``), per image

    L = Σ_pixels ρ(x − D(z)) + w_p · Σ_pixels LPIPS(x, D(z)) + λ_KL · KL(q(z|x) ‖ N(0, I)) [+ λ_adv · (−mean D_φ(x̂))],
    KL = ½ Σ_latent (μ² + σ² − 1 − log σ²),   z = μ + σ·ε (the reparameterised posterior sample),

with ρ = (·)² (default) or |·| (LDM's choice), λ_KL = 1e-6 (LDM's ``kl_weight``), the LPIPS term only when LPIPS
weights exist (:func:`jaxir.metrics.lpips.check`), and the adversarial term only with ``disc_weight`` > 0: LDM's
PatchGAN D_φ, its hinge loss and the adaptive weight λ_adv from the decoder's last layer
(:mod:`jaxir.train.adversarial`; discriminator Adam with LDM's β = (0.5, 0.9)). LDM's learned scalar ``logvar``
(``nll = rec/e^logvar + logvar``) starts at 0 and is left out. Here the loss is divided by the number of image
values (``H·W·3``), which only rescales the learning rate (and leaves λ_adv's balance unchanged):
L/(H·W·3) = mean ρ + w_p·LPIPS + λ_KL · KL/(H·W·3).

The latent scale factor is set after training as LDM's ``scale_by_std`` does: 1 / std of the posterior means on a
fixed batch of training images, so scaled latents have unit variance for the diffusion model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxir import checkpoints
from jaxir.data.dead_leaves import dead_leaves_batch
from jaxir.errors import JaxirInputError
from jaxir.metrics import psnr
from jaxir.pipelines.autoencoder import reconstruct
from jaxir.models.vae import AutoencoderKL, VAEConfig
from jaxir.train.adversarial import PatchDiscriminator, adaptive_weight, hinge_d_loss
from jaxir.train.loop import TrainConfig, make_optimizer, per_part_optimizer, train
from jaxir.train.restorer import VALIDATION_KEY, best_score, replace_dir, run_notes, validation_curve

SCALE_KEY = 10_000_079     # the batch the latent scale factor is measured on, disjoint from training steps
DISC_KEY = 10_000_103      # the discriminator's initialisation


@dataclasses.dataclass(frozen=True)
class VAEData:
    batch: int = 16
    crop: int = 32
    validation_images: int = 8
    validation_size: int = 96
    loss: str = "l2"
    kl_weight: float = 1e-6
    lpips_weight: float = 0.0     # > 0 needs converted LPIPS weights (``python -m checkpoints_conversion lpips``)
    disc_weight: float = 0.0      # > 0: LDM's PatchGAN term (SD's autoencoders: 0.5), :mod:`jaxir.train.adversarial`
    disc_start: int = 0           # the step from which the adversarial terms count (SD: 50001)
    disc_features: int = 64
    disc_layers: int = 3


def small_vae_config(z_channels: int = 8, norm_groups: int = 8) -> VAEConfig:
    """The autoencoder jaxir trains and ships: f = 4 (two downsamplings), widths 32/64/64, one resnet block per
    level, attention only in the middle block (as every LDM autoencoder), ``z_channels`` latent channels.

    GroupNorm has 8 groups, not LDM's 32: with 32 groups a 32-channel level is instance norm, which maps every
    flat region to the same features whatever its colour (the last ``norm_out`` then makes flat dark areas
    come back grey)."""
    return VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=z_channels, embed_dim=z_channels,
                     attn_resolutions=(), resolution=64, scale_factor=1.0, norm_groups=norm_groups)


INITIAL_LOGVAR = -8.0


def initial_params(model: AutoencoderKL, seed: int, crop: int):
    """Flax's default initialisation, except that the log-variance half of ``quant_conv``'s bias starts at
    ``INITIAL_LOGVAR`` (σ ≈ 0.02) instead of 0: with σ = 1 the decoder first sees latents drowned in posterior
    noise, and with λ_KL = 1e-6 only the reconstruction term shrinks σ, which costs a short CPU budget most of its
    steps (measured: validation Y-PSNR 21.3 dB after 100 steps with 0, see the training note in the README)."""
    params = model.init(jax.random.key(seed), jnp.zeros((1, crop, crop, 3)))["params"]
    bias = params["quant_conv"]["bias"]
    half = bias.shape[0] // 2
    return {**params, "quant_conv": {**params["quant_conv"], "bias": bias.at[half:].set(INITIAL_LOGVAR)}}


def kl_divergence(mean, logvar):
    """KL(N(μ, σ²) ‖ N(0, 1)) summed over all but the batch axis (LDM ``DiagonalGaussianDistribution.kl``)."""
    return 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar, axis=tuple(range(1, mean.ndim)))


def vae_loss(model: AutoencoderKL, data: VAEData, perceptual=None):
    """``(params, (images, key, step)) → L/(H·W·3)`` of the module docstring; ``perceptual(x, y)`` → per-image
    LPIPS. With ``data.disc_weight`` > 0 the parameters are ``{"autoencoder", "discriminator"}`` and the loss is
    LDM's two objectives in one (:mod:`jaxir.train.adversarial`): the autoencoder's ``L + λ·[step ≥ disc_start]·
    (−mean D(x̂))`` with the discriminator held fixed, plus the discriminator's ``[step ≥ disc_start]·hinge(D(x),
    D(x̂))`` with x̂ held fixed, so each part gets the gradient of its own objective only."""
    if data.loss not in ("l1", "l2"):
        raise JaxirInputError(f"loss must be 'l1' or 'l2', got {data.loss!r}")
    if data.lpips_weight and perceptual is None:
        raise JaxirInputError("lpips_weight > 0 needs the LPIPS network")
    discriminator = PatchDiscriminator(data.disc_features, data.disc_layers)

    def reconstruction_loss(recon, x):
        diff = recon - (2.0 * x - 1.0)
        total = jnp.mean(jnp.abs(diff) if data.loss == "l1" else diff ** 2)
        if data.lpips_weight:
            total = total + data.lpips_weight * jnp.mean(perceptual(jnp.clip((recon + 1) / 2, 0, 1), x))
        return total

    def loss(params, batch):
        x, key, step = batch
        autoencoder = params["autoencoder"] if data.disc_weight else params
        mean, logvar = model.apply({"params": autoencoder}, 2.0 * x - 1.0, method="encode")
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        kl = data.kl_weight * jnp.mean(kl_divergence(mean, logvar)) / (x[0].size)

        def decode(last_kernel):
            decoder = {**autoencoder["decoder"], "conv_out": {**autoencoder["decoder"]["conv_out"],
                                                               "kernel": last_kernel}}
            return model.apply({"params": {**autoencoder, "decoder": decoder}}, z * model.config.scale_factor,
                               method="decode")

        if not data.disc_weight:
            return reconstruction_loss(decode(autoencoder["decoder"]["conv_out"]["kernel"]), x) + kl
        recon, pullback = jax.vjp(decode, autoencoder["decoder"]["conv_out"]["kernel"])
        fixed = jax.lax.stop_gradient(params["discriminator"])
        rec_loss = reconstruction_loss(recon, x)
        gan_loss = -jnp.mean(discriminator.apply({"params": fixed}, recon))
        # the gradients of both terms at the decoder's last kernel (Esser et al. 2021, eq. 7)
        (rec_grad,) = pullback(jax.grad(reconstruction_loss)(recon, x))
        (gan_grad,) = pullback(jax.grad(lambda r: -jnp.mean(discriminator.apply({"params": fixed}, r)))(recon))
        on = (step >= data.disc_start).astype(jnp.float32)
        weight = adaptive_weight(rec_grad, gan_grad, data.disc_weight)
        shown = jax.lax.stop_gradient(recon)
        d_loss = hinge_d_loss(discriminator.apply({"params": params["discriminator"]}, 2.0 * x - 1.0),
                              discriminator.apply({"params": params["discriminator"]}, shown))
        return rec_loss + kl + on * weight * gan_loss + on * d_loss

    return loss


def validation_fn(model: AutoencoderKL, data: VAEData, seed: int):
    """params → mean Y-PSNR of the 8-bit round trip on fixed dead-leaves images (never the evaluation photos)."""
    key = jax.random.fold_in(jax.random.key(seed), VALIDATION_KEY)
    images = dead_leaves_batch(key, data.validation_images, data.validation_size)
    apply = jax.jit(lambda p: reconstruct(model, p, images))

    def validate(params):
        restored = jnp.round(apply(params) * 255) / 255
        return float(np.mean(np.asarray(psnr(restored, images, y_channel=True))))

    return validate


def latent_scale(model: AutoencoderKL, params, seed: int, images: int = 32, size: int = 64) -> float:
    """LDM ``scale_by_std``: 1 / std of the posterior means of a fixed batch of training-distribution images."""
    x = dead_leaves_batch(jax.random.fold_in(jax.random.key(seed), SCALE_KEY), images, size)
    mean, _ = model.apply({"params": params}, 2.0 * x - 1.0, method="encode")
    return float(1.0 / jnp.std(mean))


def train_vae(out, *, model_config: VAEConfig | None = None, train_config: TrainConfig = TrainConfig(),
              data: VAEData = VAEData(), seed: int = 0, mesh=None, progress: bool = True,
              command: str | None = None) -> Path:
    """Train the autoencoder into ``out/run`` (resumable) and write the best parameters (by validation PSNR; with
    the adversarial term the last ones), with the measured latent scale factor in the config, as the jaxir checkpoint
    ``out/model`` (kind ``vae``; the discriminator is not kept). Returns that directory."""
    config = model_config or small_vae_config()
    if data.crop % config.downsample_factor:
        raise JaxirInputError(f"crop {data.crop} must be a multiple of the VAE factor {config.downsample_factor}")
    model = AutoencoderKL(config)
    out = Path(out)
    init = initial_params(model, seed, data.crop)
    perceptual = None
    if data.lpips_weight:
        from jaxir.metrics.lpips import lpips, load_lpips

        weights = load_lpips("alex")
        perceptual = lambda a, b: lpips(a, b, weights=weights)  # noqa: E731
    key = jax.random.key(seed)

    @jax.jit
    def batch_fn(step):
        k_images, k_posterior = jax.random.split(jax.random.fold_in(key, step))
        return dead_leaves_batch(k_images, data.batch, data.crop), k_posterior, jnp.int32(step)

    validate = validation_fn(model, data, seed)
    optimizer = None
    if data.disc_weight:
        disc = PatchDiscriminator(data.disc_features, data.disc_layers)
        init = {"autoencoder": init, "discriminator": disc.init(jax.random.fold_in(jax.random.key(seed), DISC_KEY),
                                                                jnp.zeros((1, data.crop, data.crop, 3)))["params"]}
        optimizer = per_part_optimizer({"autoencoder": make_optimizer(train_config),
                                        "discriminator": make_optimizer(train_config, b1=0.5, b2=0.9)})
        autoencoder_score = validate
        validate = lambda params: autoencoder_score(params["autoencoder"])  # noqa: E731
    last, best, history = train(vae_loss(model, data, perceptual), init, batch_fn, train_config, out / "run",
                                validate=validate, mesh=mesh, progress=progress, optimizer=optimizer)
    score = best_score(history)
    if data.disc_weight:   # LDM keeps the last autoencoder of an adversarial run (the best PSNR is a blurrier one)
        best, score = last["autoencoder"], next((r["score"] for r in reversed(history) if "score" in r), None)
    config = dataclasses.replace(config, scale_factor=latent_scale(model, best, seed))
    notes = run_notes(command, train_config, data, seed, validation_psnr_y=score,
                      validation_curve=validation_curve(history))
    return checkpoints.save(replace_dir(out / "model"), "vae", config, best, converter="jaxir.train.vae",
                            notes=notes)
