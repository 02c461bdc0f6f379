"""SUPIR's restoration-guided EDM sampler, as the Euler sampler plus a guidance hook (k-diffusion style).

References (Fanghua-Yu/SUPIR at commit bda91af, its copy of Stability-AI/generative-models ``sgm``):

* ``sgm/modules/diffusionmodules/discretizer.py`` ``LegacyDDPMDiscretization``: σ_t = √((1 − ᾱ_t)/ᾱ_t) of SD's
  "linear" betas at ``floor(linspace(T−1, 0, n, endpoint=False))`` (:func:`jaxir.diffusion.schedule.sgm_timesteps`),
  descending, then 0 (:func:`legacy_ddpm_sigmas`);
* ``denoiser.py`` ``DiscreteDenoiserWithControl`` + ``denoiser_scaling.py`` ``EpsScaling``: σ snapped to the
  nearest entry σₛ of the 1000-entry table (its index is the network timestep), ``D(x) = x − σₛ·ε(x/√(σₛ²+1), tₛ)``
  — :func:`jaxir.diffusion.denoiser.denoiser` with ``quantize=True``;
* ``guiders.py`` ``LinearCFG``: ``w(σ) = (w_start − w_end)·σ/14.6146 + w_end``, ``uncond + w·(cond − uncond)`` —
  :func:`jaxir.diffusion.guidance.classifier_free_guidance` with :func:`cfg_scale`;
* ``sampling.py`` ``RestoreEDMSampler``: Karras et al. (2022) Algorithm 2 without the 2nd-order correction — churn
  σ̂ = σ(1 + γ), γ = min(s_churn/N, √2 − 1), ``x += s_noise·ε·√(σ̂² − σ²)``, one Euler step
  ``x += (x − D)/σ̂ · (σ_next − σ̂)`` (:func:`jaxir.diffusion.edm.sample_euler`) — with the denoised estimate pulled
  towards ``x_center`` (the re-encoded stage-1 latent) by ``(σ/σ_max)^restore_cfg`` while the next σ > 0.05 (SUPIR
  eq. 6, restoration-guided sampling; the hook :func:`center_guidance`). The control scale is linear in the
  un-churned σ like the guidance (:func:`control_scale`).

σ's, noise, ``x_center`` and every setting in :class:`RestoreEDMSettings` are traced, so changing them reuses the
compiled program (only shapes and the step count are static).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxir.diffusion.schedule import SD_LINEAR_END, SD_LINEAR_START, alphas_cumprod, sd_linear_betas, sgm_timesteps

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


def cfg_scale(settings: RestoreEDMSettings):
    """sgm's ``LinearCFG`` as the ``scale(σ̂, step)`` of :func:`jaxir.diffusion.guidance.classifier_free_guidance`:
    linear in the churned σ̂ the denoiser is called at."""
    return lambda sigma_hat, step: linear_in_sigma(sigma_hat, settings.cfg_scale_start, settings.cfg_scale,
                                                   settings.sigma_max)


def control_scale(settings: RestoreEDMSettings, sigmas, step):
    """SUPIR's control scale of step ``step`` (``use_linear_control_scale``): linear in the un-churned σ_step."""
    return linear_in_sigma(jnp.asarray(sigmas, jnp.float32)[step], settings.control_scale_start,
                           settings.control_scale, settings.sigma_max)


def center_guidance(x_center, sigmas, settings: RestoreEDMSettings):
    """The guidance hook ``guide(x0, σ̂, step) -> x0`` of ``RestoreEDMSampler.sampler_step`` (SUPIR eq. 6):
    ``x0 − (x0 − x_center)·(σ_step/σ_max)^restore_cfg`` while ``σ_{step+1} > restore_cfg_s_tmin`` and
    ``restore_cfg > 0``, else x0; for :func:`jaxir.diffusion.guidance.guided`."""
    sigmas = jnp.asarray(sigmas, jnp.float32)

    def guide(x0, sigma_hat, step):
        sigma, next_sigma = sigmas[step], sigmas[step + 1]
        restore = (next_sigma > settings.restore_cfg_s_tmin) & (settings.restore_cfg > 0)
        weight = jnp.where(restore, (sigma / settings.sigma_max) ** settings.restore_cfg, 0.0)
        return x0 - (x0 - x_center) * weight

    return guide
