"""SUPIR's restoration-guided EDM sampler and its discrete ε-denoiser, as pure functions (k-diffusion style).

References (Fanghua-Yu/SUPIR at commit bda91af, its copy of Stability-AI/generative-models ``sgm``):

* ``sgm/modules/diffusionmodules/discretizer.py`` ``LegacyDDPMDiscretization``: σ_t = √((1 − ᾱ_t)/ᾱ_t) of SD's
  "linear" betas at ``floor(linspace(T−1, 0, n, endpoint=False))`` (:func:`jaxir.diffusion.schedule.sgm_timesteps`),
  descending, then 0;
* ``denoiser.py`` ``DiscreteDenoiserWithControl`` + ``denoiser_scaling.py`` ``EpsScaling``: σ snapped to the
  nearest entry σₛ of the 1000-entry table (its index is the network timestep), ``D(x) = x − σₛ·ε(x/√(σₛ²+1), tₛ)``;
* ``guiders.py`` ``LinearCFG``: ``w(σ) = (w_start − w_end)·σ/14.6146 + w_end``, ``uncond + w·(cond − uncond)``;
* ``sampling.py`` ``RestoreEDMSampler``: Karras et al. (2022) Algorithm 2 without the 2nd-order correction — churn
  σ̂ = σ(1 + γ), γ = min(s_churn/N, √2 − 1), ``x += s_noise·ε·√(σ̂² − σ²)``; the denoised estimate is pulled
  towards ``x_center`` (the re-encoded stage-1 latent) by ``(σ/σ_max)^restore_cfg`` while the next σ > 0.05
  (SUPIR eq. 6, restoration-guided sampling); one Euler step ``x += (x − D)/σ̂ · (σ_next − σ̂)``. The control scale
  is linear in the un-churned σ like the guidance.

The sampler runs one ``lax.scan``; σ's, noise, ``x_center`` and every setting in :class:`RestoreEDMSettings` are
traced, so changing them reuses the compiled program (only shapes and the step count are static).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.diffusion.schedule import SD_LINEAR_END, SD_LINEAR_START, alphas_cumprod, sd_linear_betas, \
    sgm_timesteps, sigma_to_timestep
from jaxir.errors import JaxirInputError

SIGMA_MAX = 14.6146   # sgm hard-codes σ_max (LinearCFG, RestoreEDMSampler): σ at t = 999 of the SD schedule
RESTORE_CFG_S_TMIN = 0.05


def legacy_ddpm_sigmas(num_timesteps: int = 1000, linear_start: float = SD_LINEAR_START,
                       linear_end: float = SD_LINEAR_END, num_steps: int | None = None) -> np.ndarray:
    """sgm ``LegacyDDPMDiscretization.get_sigmas``: σ of SD's "linear" betas, as float32 — the ratio (1 − ᾱ)/ᾱ
    rounded to float32, then its square root. ``num_steps=None``: all ``num_timesteps`` entries ascending (the
    denoiser's snapping table); else the ``num_steps`` sampling σ's descending with a final 0 appended."""
    ac = alphas_cumprod(sd_linear_betas(num_timesteps, linear_start, linear_end))
    table = np.sqrt(((1.0 - ac) / ac).astype(np.float32))
    if num_steps is None:
        return table
    return np.append(table[sgm_timesteps(num_steps, num_timesteps)][::-1], np.float32(0.0))


def discrete_eps_denoiser(network: Callable, sigma_table, x, sigma):
    """``DiscreteDenoiserWithControl`` with ``EpsScaling``: ``x − σₛ · network(x / √(σₛ² + 1), tₛ)`` where tₛ is
    the index of the entry of ``sigma_table`` (ascending) nearest ``sigma`` and σₛ that entry. ``sigma``: a scalar
    or one per sample; ``network(x_in, timesteps (B,) int32) -> ε``."""
    table = jnp.asarray(sigma_table, jnp.float32)
    index = sigma_to_timestep(jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x.shape[0],)), table)
    snapped = table[index][:, None, None, None]
    eps = network(x * (1.0 / jnp.sqrt(snapped ** 2 + 1.0)), index.astype(jnp.int32))
    return x - snapped * eps


def linear_in_sigma(sigma, at_sigma_max, at_zero, sigma_max=SIGMA_MAX):
    """``(at_sigma_max − at_zero)·σ/σ_max + at_zero``: LinearCFG's guidance scale and SUPIR's linear control scale
    (both extrapolate beyond σ_max; equal ends give a constant)."""
    return (at_sigma_max - at_zero) * sigma / sigma_max + at_zero


class RestoreEDMSettings(NamedTuple):
    """The sampler's knobs (``SUPIRModel.batchify_sample`` arguments); all traced. Scales are linear in σ from
    their ``*_start`` value at ``sigma_max`` to the plain value at σ = 0 (``use_linear_CFG`` /
    ``use_linear_control_scale``); set ``*_start`` equal to the plain value for a constant scale."""

    s_churn: float = 0.0
    s_noise: float = 1.003
    restore_cfg: float = 4.0
    cfg_scale: float = 4.0
    cfg_scale_start: float = 4.0
    control_scale: float = 1.0
    control_scale_start: float = 1.0
    sigma_max: float = SIGMA_MAX
    restore_cfg_s_tmin: float = RESTORE_CFG_S_TMIN

    @classmethod
    def from_batchify_sample(cls, restoration_scale=4.0, s_churn=0.0, s_noise=1.003, cfg_scale=4.0,
                             control_scale=1.0, use_linear_CFG=False, use_linear_control_scale=False,  # noqa: N803
                             cfg_scale_start=1.0, control_scale_start=0.0) -> RestoreEDMSettings:
        """The settings as ``batchify_sample``'s keyword arguments (same names and defaults)."""
        return cls(s_churn=s_churn, s_noise=s_noise, restore_cfg=restoration_scale, cfg_scale=cfg_scale,
                   cfg_scale_start=cfg_scale_start if use_linear_CFG else cfg_scale, control_scale=control_scale,
                   control_scale_start=control_scale_start if use_linear_control_scale else control_scale)


class StepRecord(NamedTuple):
    """What one step did (``trajectory=True``): churned σ̂, guidance and control scales, latent after the step."""

    sigma_hat: jax.Array
    cfg_scale: jax.Array
    control_scale: jax.Array
    x: jax.Array


RestoreDenoiser = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def sample_restore_edm(denoise: RestoreDenoiser, x_init, sigmas, noise, x_center,
                       settings: RestoreEDMSettings = RestoreEDMSettings(), trajectory: bool = False):
    """``RestoreEDMSampler.__call__`` (module docstring) from standard-normal ``x_init``, which is first scaled by
    √(1 + σ₀²) as sgm's ``prepare_sampling_loop`` does.

    ``denoise(x, σ̂, cfg_scale, control_scale) -> D(x)``: the guided denoiser (e.g. CFG over
    :func:`discrete_eps_denoiser`), called with scalar traced σ̂ and scales. ``sigmas``: (N + 1,) descending, ending
    at 0 (:func:`legacy_ddpm_sigmas`). ``noise``: (N, *x_init.shape), the churn noise of each step. Returns the
    final latent, and with ``trajectory`` a :class:`StepRecord` of every step. Call it inside ``jax.jit``."""
    sigmas = jnp.asarray(sigmas, jnp.float32)
    num_steps = sigmas.shape[0] - 1
    if noise.shape != (num_steps, *x_init.shape):
        raise JaxirInputError(f"noise has shape {noise.shape}, expected (steps, *x_init.shape) = "
                              f"{(num_steps, *x_init.shape)}")
    s = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), settings)
    gamma = jnp.minimum(s.s_churn / num_steps, np.float32(2 ** 0.5 - 1))

    def step(x, inputs):
        sigma, next_sigma, eps = inputs
        sigma_hat = sigma * (gamma + 1.0)
        x = x + eps * s.s_noise * jnp.sqrt(jnp.maximum(sigma_hat ** 2 - sigma ** 2, 0.0))
        control_scale = linear_in_sigma(sigma, s.control_scale_start, s.control_scale, s.sigma_max)
        cfg_scale = linear_in_sigma(sigma_hat, s.cfg_scale_start, s.cfg_scale, s.sigma_max)
        denoised = denoise(x, sigma_hat, cfg_scale, control_scale)
        restore = (next_sigma > s.restore_cfg_s_tmin) & (s.restore_cfg > 0)
        weight = jnp.where(restore, (sigma / s.sigma_max) ** s.restore_cfg, 0.0)
        denoised = denoised - (denoised - x_center) * weight
        x = x + (x - denoised) / sigma_hat * (next_sigma - sigma_hat)
        return x, StepRecord(sigma_hat, cfg_scale, control_scale, x)

    x0 = jnp.asarray(x_init, jnp.float32) * jnp.sqrt(1.0 + sigmas[0] ** 2)
    x, record = jax.lax.scan(step, x0, (sigmas[:-1], sigmas[1:], jnp.asarray(noise, jnp.float32)))
    return (x, record) if trajectory else x
