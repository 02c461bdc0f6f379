"""Sigma-space samplers (Karras et al. 2022; k-diffusion ``k_diffusion/sampling.py``, which DiffBIR v2.1 copies as
``diffbir/sampler/k_diffusion.py``) with the samplers' one signature (:mod:`jaxir.diffusion.samplers`)::

    sample_*(denoise, x, schedule, noise, *, trajectory=False, <solver options>) -> x_0 [, Trajectory]

* ``denoise(x, sigma, step) -> x0``: the data prediction D(x; σ) at noise level ``sigma`` (a float32 scalar) in
  step ``step`` (int32, for per-step values such as a guidance or control scale); build it with
  :func:`jaxir.diffusion.denoiser.denoiser` from an ε/v network;
* ``x``: the starting state at ``sigmas[0]`` (for pure noise, ``x_T · √(1 + σ₀²)`` as DiffBIR's ``EDMSampler`` and
  sgm's ``prepare_sampling_loop``);
* ``schedule``: the ``steps + 1`` sigmas ending in 0, traced — an array or a
  :class:`~jaxir.diffusion.schedule.SigmaSchedule` (whose timesteps belong to the denoiser, not the sampler);
* ``noise``: ``(steps, *x.shape)`` standard normal, the noise of step i (churn noise for Euler, the SDE noise for
  DPM++ SDE; unused by DPM++ 2M).

Solver options (churn, η, s_noise) are traced too: only shapes and the number of steps are compiled in.

**Brownian-tree noise.** k-diffusion's SDE samplers draw step i's noise from a ``torchsde.BrownianTree`` as
``(W(σ_{i+1}) − W(σ_i)) / √|σ_{i+1} − σ_i|``. Increments of a Brownian motion over disjoint intervals are independent
Gaussians with variance equal to the interval length, so for a given sigma schedule these normalised increments are
exactly i.i.d. N(0, I): jaxir takes them as the explicit ``noise`` array (drawn from per-sample ``fold_in`` keys by
:func:`~jaxir.diffusion.noise.sampler_noise`). The distribution of samples is the same; what is not reproduced is
torchsde's particular pseudo-random stream, nor the tree's coherence of noise between runs with different step
counts (a study varying the step count varies the noise anyway). Parity tests feed the same noise to both.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxir.diffusion.samplers import scan_steps
from jaxir.diffusion.schedule import SigmaSchedule

MAX_CHURN_GAMMA = 2 ** 0.5 - 1   # Karras et al. (2022), Algorithm 2: γ ≤ √2 − 1


def schedule_sigmas(schedule) -> jnp.ndarray:
    """The float32 sigmas of a :class:`SigmaSchedule` or of a sigma array."""
    return jnp.asarray(schedule.sigmas if isinstance(schedule, SigmaSchedule) else schedule, jnp.float32)


def sample_euler(denoise, x, schedule, noise, *, trajectory: bool = False, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0):
    """Karras et al. (2022), Algorithm 2 with Euler steps (k-diffusion ``sample_euler``): where
    ``s_tmin ≤ σ_i ≤ s_tmax``, churn to ``σ̂ = σ_i(1 + γ)``, ``γ = min(s_churn/steps, √2 − 1)``, adding
    ``s_noise·noise_i·√(σ̂² − σ_i²)``; then ``x ← x + (σ_{i+1} − σ̂)·(x − D(x; σ̂))/σ̂``. With a guidance hook in
    the denoiser (:func:`jaxir.diffusion.guidance.guided`) this is SUPIR's ``RestoreEDMSampler``
    (:mod:`jaxir.diffusion.restore_edm`)."""
    sigmas = schedule_sigmas(schedule)
    steps = sigmas.shape[0] - 1

    def step(state, i, noise_i):
        (x,) = state
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = jnp.where((s_tmin <= sigma) & (sigma <= s_tmax), jnp.minimum(s_churn / steps, MAX_CHURN_GAMMA), 0.0)
        sigma_hat = sigma * (gamma + 1.0)
        # max(·, 0): under jit, σ̂² − σ² at γ = 0 can round to −ulp and its square root to NaN
        churn = noise_i * s_noise * jnp.sqrt(jnp.maximum(sigma_hat ** 2 - sigma ** 2, 0.0))
        x = jnp.where(gamma > 0, x + churn, x)
        denoised = denoise(x, sigma_hat, i)
        return (x + (x - denoised) / sigma_hat * (sigma_next - sigma_hat),), denoised

    return scan_steps(step, x, noise, steps, trajectory)


def _half_log_snr(sigma):
    """``λ = −log σ`` (k-diffusion's ``t_fn``), +inf at σ = 0."""
    return -jnp.log(sigma)


def sample_dpmpp_2m(denoise, x, schedule, noise, *, trajectory: bool = False):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; k-diffusion ``sample_dpmpp_2m``): with ``h = λ_{i+1} − λ_i``,
    ``x ← (σ_{i+1}/σ_i)·x − expm1(−h)·D̃``, D̃ the second-order combination ``(1 + 1/2r)·D_i − (1/2r)·D_{i−1}``,
    ``r = h_{i−1}/h``, first order at the first step and into σ = 0. ``noise`` is not used (deterministic)."""
    sigmas = schedule_sigmas(schedule)

    def step(state, i, noise_i):
        x, old_denoised, h_last = state
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma, i)
        final = sigma_next == 0
        safe_next = jnp.where(final, 1.0, sigma_next)
        h = _half_log_snr(safe_next) - _half_log_snr(sigma)
        r = h_last / h
        second = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        combined = jnp.where((i == 0) | final, denoised, second)
        x_next = jnp.where(final, denoised, (sigma_next / sigma) * x - jnp.expm1(-h) * combined)
        return (x_next, denoised, h), denoised

    return scan_steps(step, x, noise, sigmas.shape[0] - 1, trajectory,
                      carry=(jnp.zeros_like(x, jnp.float32), jnp.float32(1.0)))


def sample_dpmpp_3m_sde(denoise, x, schedule, noise, *, trajectory: bool = False, eta=1.0, s_noise=1.0):
    """DPM-Solver++(3M) SDE (k-diffusion ``sample_dpmpp_3m_sde``; DiffBIR v2.1's default sampler ``edm_dpm++_3m_sde``):
    with ``h = λ_{i+1} − λ_i`` and ``h_η = (1 + η)h``, ``x ← e^{−h_η}x + (1 − e^{−h_η})D_i`` plus the second- and
    third-order corrections from the two previous data predictions (φ₂, φ₃ of the exponential integrator), then
    ``x += noise_i · σ_{i+1} · √(1 − e^{−2ηh}) · s_noise``; the step into σ = 0 returns D_i. ``noise`` replaces the
    Brownian-tree increments (module docstring)."""
    sigmas = schedule_sigmas(schedule)

    def step(state, i, noise_i):
        x, d_1, d_2, h_1, h_2 = state
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma, i)
        final = sigma_next == 0
        safe_next = jnp.where(final, 1.0, sigma_next)
        h = _half_log_snr(safe_next) - _half_log_snr(sigma)
        h_eta = h * (eta + 1.0)
        x_next = jnp.exp(-h_eta) * x - jnp.expm1(-h_eta) * denoised
        phi_2 = jnp.expm1(-h_eta) / h_eta + 1.0
        phi_3 = phi_2 / h_eta - 0.5
        r0, r1 = h_1 / h, h_2 / h
        d1_0 = (denoised - d_1) / r0
        d1_1 = (d_1 - d_2) / r1
        third = phi_2 * (d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)) - phi_3 * (d1_0 - d1_1) / (r0 + r1)
        correction = jnp.where(i >= 2, third, jnp.where(i == 1, phi_2 * d1_0, 0.0))
        x_next = x_next + correction
        x_next = x_next + noise_i * sigma_next * jnp.sqrt(-jnp.expm1(-2.0 * h * eta)) * s_noise
        x_next = jnp.where(final, denoised, x_next)
        return (x_next, denoised, d_1, h, h_1), denoised

    zeros = jnp.zeros_like(x, jnp.float32)
    return scan_steps(step, x, noise, sigmas.shape[0] - 1, trajectory,
                      carry=(zeros, zeros, jnp.float32(1.0), jnp.float32(1.0)))


SOLVERS = {"euler": sample_euler, "dpm++_2m": sample_dpmpp_2m, "dpm++_3m_sde": sample_dpmpp_3m_sde}
