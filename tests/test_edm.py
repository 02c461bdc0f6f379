"""Sigma-space samplers against k-diffusion's own code (same model, same noise), Euler against diffusers'
EulerDiscreteScheduler, DiffBIR's EDM schedule and discrete denoiser, and traced solver options."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

import kdiffusion_reference
from jaxir.diffusion import edm
from jaxir.diffusion import schedule as S
from jaxir.diffusion.denoiser import denoiser

STEPS = 10


def _model_torch(x, sigma):
    s = sigma.view(-1, 1, 1, 1)
    return x / (1 + s**2) + s / (1 + s**2) * torch.tanh(0.7 * x)


def _model_jax(x, sigma, step):
    return x / (1 + sigma**2) + sigma / (1 + sigma**2) * jnp.tanh(0.7 * x)


@contextlib.contextmanager
def _randn_like_from(noise):
    """k-diffusion's Euler draws its churn noise with ``torch.randn_like``: replay ours instead."""
    draws = iter(torch.from_numpy(noise))
    original = torch.randn_like
    torch.randn_like = lambda x, **kwargs: next(draws).to(x.dtype)
    try:
        yield
    finally:
        torch.randn_like = original


def _inputs(zero_snr: bool, seed: int = 0):
    betas = S.sd_linear_betas()
    ac = S.alphas_cumprod(S.rescale_zero_terminal_snr(betas) if zero_snr else betas)
    schedule = S.diffbir_edm_schedule(ac, STEPS)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, 6, 3)).astype(np.float32) * np.float32(np.sqrt(1 + schedule.sigmas[0] ** 2))
    return schedule, x, rng.standard_normal((STEPS, 2, 4, 6, 3)).astype(np.float32)


@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("solver, options", [
    ("euler", {}), ("euler", {"s_churn": 4.0, "s_tmin": 0.5, "s_tmax": 50.0, "s_noise": 1.003}),
    ("dpm++_2m", {}), ("dpm++_3m_sde", {}), ("dpm++_3m_sde", {"eta": 0.5, "s_noise": 1.01})])
def test_solvers_match_k_diffusion(solver, options, zero_snr):
    """Both in float32 from DiffBIR's σ₀ ≈ 1e4 start. DPM++: max abs error ≤ 1.2e-6 of outputs of scale ~3.6. Euler:
    ≤ 9.7e-5 of ~2.9 — its first step ``x + (σ₁ − σ₀)(x − D)/σ₀`` cancels four of float32's seven digits of
    x ≈ 1e4, so one-ulp differences of the toy model (XLA's reciprocal-multiply) grow to ~1e-4; hence 5e-5 × scale."""
    k = kdiffusion_reference.load()
    schedule, x, noise = _inputs(zero_snr)
    sigmas = torch.tensor(schedule.sigmas, dtype=torch.float32)
    reference = {"euler": k.sample_euler, "dpm++_2m": k.sample_dpmpp_2m, "dpm++_3m_sde": k.sample_dpmpp_3m_sde}[solver]
    kwargs = dict(options)
    if solver == "dpm++_3m_sde":
        draws = iter(torch.from_numpy(noise))
        kwargs["noise_sampler"] = lambda sigma, sigma_next: next(draws)
    with _randn_like_from(noise):
        want = reference(_model_torch, torch.from_numpy(x), sigmas, disable=True, **kwargs).numpy()
    got = np.asarray(jax.jit(lambda *a: edm.SOLVERS[solver](_model_jax, *a, **options))(x, schedule, noise))
    tolerance = 5e-5 if solver == "euler" else 5e-7
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max()


def test_euler_matches_diffusers_scheduler():
    """diffusers' Euler (no churn: diffusers adds churn noise after evaluating the model, unlike Algorithm 2) with an
    ε network over its own trailing-spaced sigmas; the network sees the same integer timesteps."""
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       timestep_spacing="trailing")
    scheduler.set_timesteps(STEPS)
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    eps_net = lambda x, t: np.tanh(0.5 * x) * (1 + t / 1000.0)  # noqa: E731
    sample = torch.from_numpy(latents) * scheduler.init_noise_sigma
    x_jax = np.transpose(sample.numpy(), (0, 2, 3, 1))
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(sample, t)
        out = torch.from_numpy(eps_net(model_in.numpy(), float(t)).astype(np.float32))
        sample = scheduler.step(out, t, sample).prev_sample
    schedule = S.SigmaSchedule(sigmas=scheduler.sigmas.numpy(),
                               timesteps=np.append(scheduler.timesteps.numpy(), 0).astype(np.int64))
    network = lambda x, t, step: jnp.tanh(0.5 * x) * (1 + t / 1000.0)  # noqa: E731
    got = edm.sample_euler(denoiser(network, "eps", schedule.sigmas, schedule.timesteps), x_jax, schedule,
                           np.zeros((STEPS, *x_jax.shape), np.float32))
    want = np.transpose(sample.numpy(), (0, 2, 3, 1))
    assert np.abs(np.asarray(got) - want).max() <= 2e-6 * np.abs(want).max()


def test_diffbir_edm_schedule():
    """``EDMSampler.make_schedule``: σ at int(linspace(999, 0, n, endpoint=False)), first ᾱ forced to 1e-8, σ=0 last."""
    ac = S.alphas_cumprod(S.rescale_zero_terminal_snr(S.sd_linear_betas()))
    schedule = S.diffbir_edm_schedule(ac, 4)
    np.testing.assert_array_equal(schedule.timesteps, [999, 749, 499, 249, 0])
    np.testing.assert_allclose(schedule.sigmas[0], np.sqrt((1 - 1e-8) / 1e-8))
    np.testing.assert_allclose(schedule.sigmas[1:4], np.sqrt((1 - ac[[749, 499, 249]]) / ac[[749, 499, 249]]))
    assert schedule.sigmas[-1] == 0


@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_discrete_denoiser_preconditioning_and_snapping(parameterization):
    """DiffBIR's ``convert_to_denoiser``: c_in = 1/√(σ²+1); ε: x − σ·out; v: x/(σ²+1) − σ/√(σ²+1)·out; the network
    timestep is that of the nearest schedule sigma."""
    schedule = S.SigmaSchedule(sigmas=np.array([10.0, 2.0, 0.5, 0.0]), timesteps=np.array([900, 500, 100, 0]))
    seen = []

    def network(x_in, t, step):
        seen.append(t)
        return x_in * 2.0

    x = jnp.full((1, 2, 2, 1), 3.0)
    sigma = jnp.float32(2.3)
    out = denoiser(network, parameterization, schedule.sigmas, schedule.timesteps)(x, sigma, 0)
    c_in = 1 / np.sqrt(2.3**2 + 1)
    expected = 3 - 2.3 * 6 * c_in if parameterization == "eps" else 3 / (2.3**2 + 1) - 2.3 * c_in * 6 * c_in
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)
    assert int(seen[0]) == 500


def test_solver_options_are_traced():
    schedule, x, noise = _inputs(False)
    traces = []

    @jax.jit
    def run(x, noise, schedule, churn, eta):
        traces.append(1)
        a = edm.sample_euler(_model_jax, x, schedule, noise, s_churn=churn)
        return a, edm.sample_dpmpp_3m_sde(_model_jax, x, schedule, noise, eta=eta)

    first = run(x, noise, schedule, 0.0, 1.0)
    second = run(x, noise * 0.5, schedule, 3.0, 0.0)
    assert len(traces) == 1
    assert all(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3 for a, b in zip(first, second))
