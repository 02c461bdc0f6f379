"""Sigma-space samplers (Karras et al. 2022; k-diffusion ``k_diffusion/sampling.py``, which DiffBIR v2.1 copies as
``diffbir/sampler/k_diffusion.py``), as pure functions over arrays with one signature::

    sample_*(denoise, x, noise, schedule, *, trajectory=False, <solver options>) -> z_0 [, x0 predictions]

* ``denoise(x, sigma, step) -> x0``: the data prediction D(x; σ) at noise level ``sigma`` (a float32 scalar) in
  step ``step`` (int32, for per-step values such as a guidance or control scale); build it with
  :func:`discrete_denoiser` from an ε/v network;
* ``x``: the starting latent at ``sigmas[0]`` (for pure noise, ``x_T · √(1 + σ₀²)`` as DiffBIR's ``EDMSampler``);
* ``noise``: ``(steps, *x.shape)`` standard normal, the noise of step i (churn noise for Euler, the SDE noise for
  DPM++ SDE; unused by DPM++ 2M);
* ``schedule``: a :class:`~jaxir.diffusion.schedule.SigmaSchedule`, ``steps + 1`` sigmas ending in 0, traced.

Solver options (churn, η, s_noise) are traced too: only shapes and the number of steps are compiled in.

**Brownian-tree noise.** k-diffusion's SDE samplers draw step i's noise from a ``torchsde.BrownianTree`` as
``(W(σ_{i+1}) − W(σ_i)) / √|σ_{i+1} − σ_i|``. Increments of a Brownian motion over disjoint intervals are independent
Gaussians with variance equal to the interval length, so for a given sigma schedule these normalised increments are
exactly i.i.d. N(0, I): jaxir takes them as the explicit ``noise`` array (drawn from per-sample ``fold_in`` keys by
:func:`~jaxir.diffusion.samplers.sampler_noise`). The distribution of samples is the same; what is not reproduced is
torchsde's particular pseudo-random stream, nor the tree's coherence of noise between runs with different step
counts (a study varying the step count varies the noise anyway). Parity tests feed the same noise to both.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxir.diffusion.schedule import SigmaSchedule
from jaxir.errors import JaxirInputError

SigmaDenoiser = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

MAX_CHURN_GAMMA = 2 ** 0.5 - 1   # Karras et al. (2022), Algorithm 2: γ ≤ √2 − 1


def discrete_denoiser(network: Callable, schedule: SigmaSchedule, parameterization: str) -> SigmaDenoiser:
    """D(x; σ) from a discrete-time network ``network(x_in, t, step)`` predicting ε or v, as DiffBIR's
    ``EDMSampler.convert_to_denoiser``: ε: ``x − σ·ε(x/√(σ²+1), t)``; v: ``x/(σ²+1) − σ/√(σ²+1)·v(x/√(σ²+1), t)``;
    t is the timestep of the schedule sigma nearest to σ (so a churned σ̂ snaps to a table entry)."""
    if parameterization not in ("eps", "v"):
        raise JaxirInputError(f"unknown parameterization {parameterization!r}: use 'eps' or 'v'")

    def denoise(x, sigma, step):
        sigmas = jnp.asarray(schedule.sigmas, jnp.float32)
        t = jnp.asarray(schedule.timesteps, jnp.int32)[jnp.argmin(jnp.abs(sigma - sigmas))]
        c_in = 1.0 / jnp.sqrt(sigma ** 2 + 1.0)
        out = network(x * c_in, t, step)
        if parameterization == "eps":
            return x - sigma * out
        return x / (sigma ** 2 + 1.0) - sigma * c_in * out

    return denoise


def _scan(step_fn, init_carry, x, noise, schedule: SigmaSchedule, trajectory: bool):
    sigmas = jnp.asarray(schedule.sigmas, jnp.float32)
    steps = sigmas.shape[0] - 1
    if noise.shape != (steps, *x.shape):
        raise JaxirInputError(f"noise has shape {noise.shape}, expected (steps, *x.shape) = {(steps, *x.shape)}")

    def body(carry, inputs):
        i, noise_i = inputs
        return step_fn(carry, i, sigmas[i], sigmas[i + 1], noise_i)

    carry, x0s = jax.lax.scan(body, (jnp.asarray(x, jnp.float32), *init_carry), (jnp.arange(steps), noise))
    return (carry[0], x0s) if trajectory else carry[0]


def sample_euler(denoise: SigmaDenoiser, x, noise, schedule: SigmaSchedule, *, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0, trajectory: bool = False):
    """Karras et al. (2022), Algorithm 2 with Euler steps (k-diffusion ``sample_euler``): where
    ``s_tmin ≤ σ_i ≤ s_tmax``, churn to ``σ̂ = σ_i(1 + γ)``, ``γ = min(s_churn/steps, √2 − 1)``, adding
    ``s_noise·noise_i·√(σ̂² − σ_i²)``; then ``x ← x + (σ_{i+1} − σ̂)·(x − D(x; σ̂))/σ̂``."""
    steps = jnp.asarray(schedule.sigmas).shape[0] - 1

    def step(carry, i, sigma, sigma_next, noise_i):
        (x,) = carry
        gamma = jnp.where((s_tmin <= sigma) & (sigma <= s_tmax), jnp.minimum(s_churn / steps, MAX_CHURN_GAMMA), 0.0)
        sigma_hat = sigma * (gamma + 1.0)
        # max(·, 0): under jit, σ̂² − σ² at γ = 0 can round to −ulp and its square root to NaN
        churn = noise_i * s_noise * jnp.sqrt(jnp.maximum(sigma_hat ** 2 - sigma ** 2, 0.0))
        x = jnp.where(gamma > 0, x + churn, x)
        denoised = denoise(x, sigma_hat, i)
        return (x + (x - denoised) / sigma_hat * (sigma_next - sigma_hat),), denoised

    return _scan(step, (), x, noise, schedule, trajectory)


def _half_log_snr(sigma):
    """``λ = −log σ`` (k-diffusion's ``t_fn``), +inf at σ = 0."""
    return -jnp.log(sigma)


def sample_dpmpp_2m(denoise: SigmaDenoiser, x, noise, schedule: SigmaSchedule, *, trajectory: bool = False):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; k-diffusion ``sample_dpmpp_2m``): with ``h = λ_{i+1} − λ_i``,
    ``x ← (σ_{i+1}/σ_i)·x − expm1(−h)·D̃``, D̃ the second-order combination ``(1 + 1/2r)·D_i − (1/2r)·D_{i−1}``,
    ``r = h_{i−1}/h``, first order at the first step and into σ = 0. ``noise`` is not used (deterministic)."""

    def step(carry, i, sigma, sigma_next, noise_i):
        x, old_denoised, h_last = carry
        denoised = denoise(x, sigma, i)
        final = sigma_next == 0
        safe_next = jnp.where(final, 1.0, sigma_next)
        h = _half_log_snr(safe_next) - _half_log_snr(sigma)
        r = h_last / h
        second = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        combined = jnp.where((i == 0) | final, denoised, second)
        x_next = jnp.where(final, denoised, (sigma_next / sigma) * x - jnp.expm1(-h) * combined)
        return (x_next, denoised, h), denoised

    return _scan(step, (jnp.zeros_like(x, jnp.float32), jnp.float32(1.0)), x, noise, schedule, trajectory)


def sample_dpmpp_3m_sde(denoise: SigmaDenoiser, x, noise, schedule: SigmaSchedule, *, eta=1.0, s_noise=1.0,
                        trajectory: bool = False):
    """DPM-Solver++(3M) SDE (k-diffusion ``sample_dpmpp_3m_sde``; DiffBIR v2.1's default sampler ``edm_dpm++_3m_sde``):
    with ``h = λ_{i+1} − λ_i`` and ``h_η = (1 + η)h``, ``x ← e^{−h_η}x + (1 − e^{−h_η})D_i`` plus the second- and
    third-order corrections from the two previous data predictions (φ₂, φ₃ of the exponential integrator), then
    ``x += noise_i · σ_{i+1} · √(1 − e^{−2ηh}) · s_noise``; the step into σ = 0 returns D_i. ``noise`` replaces the
    Brownian-tree increments (module docstring)."""

    def step(carry, i, sigma, sigma_next, noise_i):
        x, d_1, d_2, h_1, h_2 = carry
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
    return _scan(step, (zeros, zeros, jnp.float32(1.0), jnp.float32(1.0)), x, noise, schedule, trajectory)


SOLVERS = {"euler": sample_euler, "dpm++_2m": sample_dpmpp_2m, "dpm++_3m_sde": sample_dpmpp_3m_sde}
