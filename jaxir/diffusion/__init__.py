"""Diffusion: noise schedules and respacing (eq. 8) and reverse-process samplers (eq. 10)."""

from jaxir.diffusion.samplers import (
    classifier_free_guidance,
    ddim_step,
    ddpm_step,
    noised_start,
    sample_ddim,
    sample_ddpm,
    sampler_noise,
)
from jaxir.diffusion.schedule import (
    SpacedSchedule,
    alphas_cumprod,
    make_betas,
    predict_x0_eps,
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

__all__ = ["SpacedSchedule", "alphas_cumprod", "classifier_free_guidance", "ddim_step", "ddpm_step", "make_betas",
           "noised_start", "predict_x0_eps", "q_sample", "rescale_zero_terminal_snr", "sample_ddim", "sample_ddpm",
           "sampler_noise", "scales", "sd_linear_betas", "sgm_timesteps", "sigma_to_timestep", "sigmas",
           "space_timesteps", "spaced_schedule"]
