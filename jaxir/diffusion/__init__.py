"""Diffusion: noise schedules and respacing (eq. 8), the denoiser wrapper, guidance and the reverse-process
samplers (eq. 10), which share one signature ``sample(denoise, x, schedule, noise, *, trajectory, **options)``."""

from jaxir.diffusion.denoiser import denoiser
from jaxir.diffusion.guidance import classifier_free_guidance, guided
from jaxir.diffusion.noise import sampler_noise
from jaxir.diffusion.samplers import Trajectory, ddim_step, ddpm_step, noised_start, sample_ddim, sample_ddpm
from jaxir.diffusion.schedule import (
    SpacedSchedule,
    alphas_cumprod,
    make_betas,
    q_sample,
    rescale_zero_terminal_snr,
    scales,
    sd_linear_betas,
    sgm_timesteps,
    sigma_to_timestep,
    sigmas,
    space_timesteps,
    spaced_schedule,
)

__all__ = ["SpacedSchedule", "Trajectory", "alphas_cumprod", "classifier_free_guidance", "ddim_step", "ddpm_step",
           "denoiser", "guided", "make_betas", "noised_start", "q_sample", "rescale_zero_terminal_snr", "sample_ddim",
           "sample_ddpm", "sampler_noise", "scales", "sd_linear_betas", "sgm_timesteps", "sigma_to_timestep",
           "sigmas", "space_timesteps", "spaced_schedule"]
