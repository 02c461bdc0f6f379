"""Reverse-process samplers, eq. (10), as pure functions over arrays (k-diffusion style).

Every sampler has one signature::

    sample_*(denoise, x_T, noise, schedule, *, parameterization, trajectory=False, …) -> z_0 [, x0 predictions]

* ``denoise(x_t, t, step) -> network output`` (ε or v), t the network's timestep (an int32 scalar for the whole
  batch), ``step`` the int32 index of the step (for per-step values: a guidance or control scale table): a closure
  over the model, its parameters and conditions; build it inside your ``jax.jit`` from traced arguments (see
  :func:`classifier_free_guidance`), so that parameters, conditions and guidance scales are traced, never baked
  into the program;
* ``x_T``: the starting latent, pure noise or :func:`noised_start` (``q_sample(x0, t_0, ε)``);
* ``noise``: ``(steps, *x_T.shape)``, the fresh noise of each step in order (:func:`sampler_noise` draws it and x_T
  from per-sample keys ``fold_in(key, sample_id)``);
* ``schedule``: a :class:`~jaxir.diffusion.schedule.SpacedSchedule`, per-step tables in sampling order, traced.

The loop is a ``lax.scan``; only shapes, the number of steps and ``parameterization`` are static, so new seeds,
noise, timestep values or guidance scales reuse the compiled program.

x0 is never clipped: these are latent samplers, and DiffBIR's (``SpacedSampler.p_sample``, ``DDIMSampler``) do not
clip either (diffusers' schedulers clip to [−1, 1] by default, ``clip_sample=True``; pass ``False`` to compare).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxir.degradations.noise import per_sample_keys
from jaxir.diffusion.schedule import SpacedSchedule, predict_x0_eps, q_sample
from jaxir.errors import JaxirInputError

Denoiser = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def per_step(value, step):
    """``value[step]`` for a per-step table (1-D array), else ``value`` itself (a scalar for every step)."""
    value = jnp.asarray(value, jnp.float32)
    return value[step] if value.ndim == 1 else value


def classifier_free_guidance(denoise_cond: Callable, cond, uncond, scale, batched: bool = True) -> Denoiser:
    """``out = out(∅) + w·(out(c) − out(∅))`` (Ho & Salimans 2022), DiffBIR's order of operations
    (``SpacedSampler.apply_model``: ``model_uncond + cfg_scale * (model_cond - model_uncond)``).

    ``denoise_cond(x_t, t, c, step)`` evaluates the network under condition ``c`` (a pytree of arrays with a batch
    axis); ``scale`` is a scalar or a per-step table (e.g. :func:`jaxir.diffusion.guidance.diffbir_rescaled_cfg`),
    traced either way. ``batched``: one call on ``[uncond; cond]`` concatenated along the batch (SUPIR's order), else
    two calls (DiffBIR's samplers); the two agree up to rounding."""

    def denoise(x_t, t, step):
        if batched:
            both = jax.tree.map(lambda u, c: jnp.concatenate([u, c]), uncond, cond)
            out_uncond, out_cond = jnp.split(denoise_cond(jnp.concatenate([x_t, x_t]), t, both, step), 2)
        else:
            out_cond, out_uncond = denoise_cond(x_t, t, cond, step), denoise_cond(x_t, t, uncond, step)
        return out_uncond + per_step(scale, step) * (out_cond - out_uncond)

    return denoise


def sampler_noise(key: jax.Array, shape, num_steps: int, sample_ids=None):
    """``(x_T, noise)``: standard normal starting latents of ``shape`` and per-step noise ``(num_steps, *shape)``,
    sample b drawn from ``fold_in(key, sample_ids[b])`` (default ``arange(B)``) so that it never depends on the batch
    it is in."""

    def draw(k):
        k_start, k_steps = jax.random.split(k)
        return (jax.random.normal(k_start, shape[1:], jnp.float32),
                jax.random.normal(k_steps, (num_steps, *shape[1:]), jnp.float32))

    x_T, noise = jax.vmap(draw)(per_sample_keys(key, shape[0], sample_ids))
    return x_T, jnp.moveaxis(noise, 1, 0)


def noised_start(x0, noise, schedule: SpacedSchedule):
    """Start at the schedule's first timestep from data: ``q_sample(x0, t_0, ε)``, eq. (8) (DiffBIR's
    ``start_point_type="cond"``, where x0 is the condition latent; img2img with a truncated schedule)."""
    return q_sample(x0, noise, schedule.sqrt_alphas_cumprod[0], schedule.sqrt_one_minus_alphas_cumprod[0])


def ddpm_step(x_t, output, noise, step: SpacedSchedule, parameterization: str, final, guide_x0=None):
    """One ancestral step, eq. (10) (Ho et al. 2020, eqs. 6–7; IDDPM ``p_sample`` with fixed-small variance):
    x0 from the network output, ``z_prev = c1·x0 + c2·z_t + σ·noise``, ``σ = exp(½ log σ²_clipped)``, σ = 0 when
    ``final``. ``step``: one row of a schedule. ``guide_x0(x0, row) -> x0`` corrects the x0 prediction before the
    posterior (DiffBIR v2.0's restoration guidance, :mod:`jaxir.diffusion.guidance`). DiffBIR draws with
    ``√posterior_variance``, equal where noise is added. Returns ``(z_prev, x0)``."""
    x0, _ = predict_x0_eps(output, x_t, step.sqrt_alphas_cumprod, step.sqrt_one_minus_alphas_cumprod,
                           parameterization)
    if guide_x0 is not None:
        x0 = guide_x0(x0, step)
    mean = step.posterior_mean_coef1 * x0 + step.posterior_mean_coef2 * x_t
    std = jnp.where(final, 0.0, jnp.exp(0.5 * step.posterior_log_variance_clipped))
    return mean + std * noise, x0


def ddim_step(x_t, output, noise, step: SpacedSchedule, parameterization: str, eta):
    """One DDIM step (Song et al. 2021, eq. 12): ``z_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε + σ·noise`` with
    ``σ = η·√posterior_variance`` (η = 0: deterministic, η = 1: DDPM's variance). x0 and ε come straight from the
    output (for v: ``x0 = a·z_t − s·v``, ``ε = a·v + s·z_t``, as diffusers; DiffBIR's DDIM recomputes x0 from ε,
    equal up to rounding but undefined at ᾱ = 0). ``1 − ᾱ_prev − σ²`` is clamped at 0: it is exactly 0 at a
    zero-SNR first step with η = 1, and float32 rounding must not make it negative. Returns ``(z_prev, x0)``."""
    x0, eps = predict_x0_eps(output, x_t, step.sqrt_alphas_cumprod, step.sqrt_one_minus_alphas_cumprod,
                             parameterization)
    a_prev = step.alphas_cumprod_prev
    sigma = eta * jnp.sqrt(step.posterior_variance)
    direction = jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma ** 2, 0.0))
    return jnp.sqrt(a_prev) * x0 + direction * eps + sigma * noise, x0


def _scan(step_fn, denoise, x_T, noise, schedule: SpacedSchedule, trajectory: bool):
    """Run ``step_fn(x_t, output, noise_i, row, final)`` over the schedule rows in order."""
    schedule = SpacedSchedule(*(jnp.asarray(a, jnp.int32 if name == "timesteps" else jnp.float32)
                                for name, a in zip(schedule._fields, schedule)))
    num_steps = schedule.timesteps.shape[0]
    if noise.shape != (num_steps, *x_T.shape):
        raise JaxirInputError(f"noise has shape {noise.shape}, expected (steps, *x_T.shape) = "
                              f"{(num_steps, *x_T.shape)}")

    def body(x, inputs):
        i, row, noise_i = inputs
        return step_fn(x, denoise(x, row.timesteps, i), noise_i, row, i == num_steps - 1)

    z0, x0s = jax.lax.scan(body, jnp.asarray(x_T, jnp.float32), (jnp.arange(num_steps), schedule, noise))
    return (z0, x0s) if trajectory else z0


def sample_ddpm(denoise: Denoiser, x_T, noise, schedule: SpacedSchedule, *, parameterization: str = "eps",
                trajectory: bool = False, guide_x0=None):
    """DiffBIR's spaced ancestral sampler (``SpacedSampler.sample``): :func:`ddpm_step` at each timestep of the
    respaced schedule, the network seeing the original timestep; ``noise[-1]`` is drawn but unused (no noise at
    the last step). ``guide_x0``: optional x0 correction (see :func:`ddpm_step`). Returns z_0, and with
    ``trajectory`` also the x0 prediction of every step (after guidance)."""
    def step(x, out, n, row, final):
        return ddpm_step(x, out, n, row, parameterization, final, guide_x0)

    return _scan(step, denoise, x_T, noise, schedule, trajectory)


def sample_ddim(denoise: Denoiser, x_T, noise, schedule: SpacedSchedule, *, parameterization: str = "eps",
                eta=0.0, trajectory: bool = False):
    """DDIM (Song et al. 2021) over the schedule's timesteps: :func:`ddim_step` at each; ``eta`` may be traced
    (with η = 0 the noise is multiplied by zero). Returns z_0, and with ``trajectory`` also the x0 predictions."""
    def step(x, out, n, row, final):
        return ddim_step(x, out, n, row, parameterization, eta)

    return _scan(step, denoise, x_T, noise, schedule, trajectory)
