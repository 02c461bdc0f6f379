"""Reverse-process samplers, eq. (10), as pure functions over arrays with one signature (k-diffusion style,
``k_diffusion/sampling.py``)::

    sample_*(denoise, x, schedule, noise, *, trajectory=False, **solver_options) -> x_0 [, Trajectory]

* ``denoise(x, level, step) -> x0``: the data prediction at the state's noise level (:mod:`jaxir.diffusion.denoiser`
  converts ε/v networks, :mod:`jaxir.diffusion.guidance` adds classifier-free guidance and guidance hooks);
* ``x``: the starting state — here (DDPM, DDIM) ``z_T``, pure noise or :func:`noised_start`; the sigma-space
  samplers of :mod:`jaxir.diffusion.edm` start at ``sigmas[0]``;
* ``schedule``: the step table, traced — a :class:`~jaxir.diffusion.schedule.SpacedSchedule` here (per-step rows in
  sampling order, each handed to the denoiser as its level), the sigmas in :mod:`jaxir.diffusion.edm`;
* ``noise``: ``(steps, *x.shape)``, the fresh noise of each step in order (drawn from per-sample keys by
  :func:`jaxir.diffusion.noise.sampler_noise`);
* ``trajectory``: also return a :class:`Trajectory`, the state after every step and every x0 prediction.

The loop is one ``lax.scan``; only shapes and the number of steps are static, so new seeds, noise, timestep values,
guidance scales or solver options reuse the compiled program.

x0 is never clipped: these are latent samplers, and DiffBIR's (``SpacedSampler.p_sample``, ``DDIMSampler``) do not
clip either (diffusers' schedulers clip to [−1, 1] by default, ``clip_sample=True``; pass ``False`` to compare).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxir.diffusion.schedule import SpacedSchedule, eps_from_x0, q_sample
from jaxir.errors import JaxirInputError


class Trajectory(NamedTuple):
    """What every step did, stacked along a leading step axis: the state after the step and the denoiser's x0
    prediction (after any guidance hook)."""

    x: jax.Array
    denoised: jax.Array


def scan_steps(step: Callable, x, noise, num_steps: int, trajectory: bool, carry=()):
    """The sampling loop shared by every sampler: ``lax.scan`` of ``step((x, *carry), i, noise_i) -> ((x, *carry),
    x0)`` over ``i = 0 … num_steps − 1``. Returns the last state, and with ``trajectory`` a :class:`Trajectory`."""
    if noise.shape != (num_steps, *x.shape):
        raise JaxirInputError(f"noise has shape {noise.shape}, expected (steps, *x.shape) = {(num_steps, *x.shape)}")

    def body(state, inputs):
        state, denoised = step(state, *inputs)
        return state, (Trajectory(state[0], denoised) if trajectory else None)

    state, record = jax.lax.scan(body, (jnp.asarray(x, jnp.float32), *carry),
                                 (jnp.arange(num_steps), jnp.asarray(noise, jnp.float32)))
    return (state[0], record) if trajectory else state[0]


def noised_start(x0, noise, schedule: SpacedSchedule):
    """Start at the schedule's first timestep from data: ``q_sample(x0, t_0, ε)``, eq. (8) (DiffBIR's
    ``start_point_type="cond"``, where x0 is the condition latent; img2img with a truncated schedule)."""
    return q_sample(x0, noise, schedule.sqrt_alphas_cumprod[0], schedule.sqrt_one_minus_alphas_cumprod[0])


def _rows(schedule: SpacedSchedule) -> SpacedSchedule:
    """The schedule as traced arrays (float32 tables, int32 timesteps)."""
    return SpacedSchedule(*(jnp.asarray(a, jnp.int32 if name == "timesteps" else jnp.float32)
                            for name, a in zip(schedule._fields, schedule)))


def _row(schedule: SpacedSchedule, i) -> SpacedSchedule:
    return jax.tree.map(lambda a: a[i], schedule)


def ddpm_step(x_t, x0, noise, row: SpacedSchedule, final):
    """One ancestral step, eq. (10) (Ho et al. 2020, eqs. 6–7; IDDPM ``p_sample`` with fixed-small variance):
    ``z_prev = c1·x0 + c2·z_t + σ·noise``, ``σ = exp(½ log σ²_clipped)``, σ = 0 when ``final``. ``row``: one row of a
    schedule. DiffBIR draws with ``√posterior_variance``, equal where noise is added."""
    mean = row.posterior_mean_coef1 * x0 + row.posterior_mean_coef2 * x_t
    std = jnp.where(final, 0.0, jnp.exp(0.5 * row.posterior_log_variance_clipped))
    return mean + std * noise


def ddim_step(x_t, x0, noise, row: SpacedSchedule, eta):
    """One DDIM step (Song et al. 2021, eq. 12): ``z_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε + σ·noise`` with
    ``ε = (z_t − √ᾱ·x0)/√(1−ᾱ)`` and ``σ = η·√posterior_variance`` (η = 0: deterministic, η = 1: DDPM's variance).
    ``1 − ᾱ_prev − σ²`` is clamped at 0: it is exactly 0 at a zero-SNR first step with η = 1, and float32 rounding
    must not make it negative."""
    eps = eps_from_x0(x_t, x0, row.sqrt_alphas_cumprod, row.sqrt_one_minus_alphas_cumprod)
    a_prev = row.alphas_cumprod_prev
    sigma = eta * jnp.sqrt(row.posterior_variance)
    direction = jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma ** 2, 0.0))
    return jnp.sqrt(a_prev) * x0 + direction * eps + sigma * noise


def sample_ddpm(denoise, x, schedule: SpacedSchedule, noise, *, trajectory: bool = False):
    """DiffBIR's spaced ancestral sampler (``SpacedSampler.sample``): :func:`ddpm_step` at each timestep of the
    respaced schedule, the denoiser called at the step's row (the network sees the original timestep);
    ``noise[-1]`` is drawn but unused (no noise at the last step)."""
    rows = _rows(schedule)
    num_steps = rows.timesteps.shape[0]

    def step(state, i, noise_i):
        (z,) = state
        row = _row(rows, i)
        x0 = denoise(z, row, i)
        return (ddpm_step(z, x0, noise_i, row, i == num_steps - 1),), x0

    return scan_steps(step, x, noise, num_steps, trajectory)


def sample_ddim(denoise, x, schedule: SpacedSchedule, noise, *, trajectory: bool = False, eta=0.0):
    """DDIM (Song et al. 2021) over the schedule's timesteps: :func:`ddim_step` at each; ``eta`` may be traced
    (with η = 0 the noise is multiplied by zero)."""
    rows = _rows(schedule)

    def step(state, i, noise_i):
        (z,) = state
        row = _row(rows, i)
        x0 = denoise(z, row, i)
        return (ddim_step(z, x0, noise_i, row, eta),), x0

    return scan_steps(step, x, noise, rows.timesteps.shape[0], trajectory)
