"""The denoiser ``D(x; level) → x0`` every sampler takes: a discrete-time network predicting ε, v or x0 wrapped once,
here, as k-diffusion wraps its models (``k_diffusion/external.py``: ``DiscreteEpsDDPMDenoiser``,
``DiscreteVDDPMDenoiser``), DiffBIR its ControlLDM (``diffbir/sampler/edm_sampler.py``,
``EDMSampler.convert_to_denoiser``) and sgm SUPIR's UNet (``DiscreteDenoiser`` with ``EpsScaling``).

A denoiser is called as ``denoise(x, level, step) -> x0``, with ``step`` the int32 index of the sampling step (for
per-step values: a guidance or control scale table) and ``level`` the noise level of the sampler's state ``x``:

* a row of a :class:`~jaxir.diffusion.schedule.SpacedSchedule` (DDPM, DDIM): ``x = z_t = √ᾱ·x0 + √(1−ᾱ)·ε``, the
  network sees ``z_t`` at the row's timestep;
* a noise level σ, a scalar or one per sample (sigma-space samplers): ``x = x0 + σ·ε``, the network sees
  ``x/√(σ² + 1)`` at the timestep of the nearest entry of the denoiser's σ table.

Build it inside your ``jax.jit`` from traced arguments, so that parameters, conditions and tables are traced, never
baked into the program.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxir.diffusion.schedule import SpacedSchedule, sigma_to_timestep, x0_from_eps, x0_from_v
from jaxir.errors import JaxirInputError

Denoiser = Callable[[jax.Array, object, jax.Array], jax.Array]
PARAMETERIZATIONS = ("eps", "v", "x0")


def x0_prediction(output, x, a, s, c_in, parameterization: str):
    """x0 from the network output for the state ``x = a·x0 + s·ε`` that the network saw as ``c_in·x``: ε →
    ``(x − s·ε)/a``; v (Salimans & Ho 2022, of the network's input ``c_in·x = â·x0 + ŝ·ε``, ``â = c_in·a``,
    ``ŝ = c_in·s``) → ``â·(c_in·x) − ŝ·v``; x0 → the output."""
    if parameterization == "eps":
        return x0_from_eps(x, output, a, s)
    if parameterization == "v":
        return x0_from_v(x * c_in, output, c_in * a, c_in * s)
    return output


def denoiser(network: Callable, parameterization: str, sigmas=None, timesteps=None, *,
             quantize: bool = False) -> Denoiser:
    """``D(x; level) → x0`` (module docstring) of ``network(x_in, t, step)`` predicting ``parameterization``.

    Sigma levels need the network's table: ``sigmas`` and the ``timesteps`` they belong to (any order). σ is
    snapped to the nearest entry (distance in σ, ties to the first; sgm ``DiscreteDenoiser.sigma_to_idx``, DiffBIR's
    nearest schedule sigma) for the timestep; with ``quantize`` the entry also replaces σ in the scalings (sgm's
    ``quantize_c_noise`` path: ``x − σₛ·ε(x/√(σₛ²+1), tₛ)``), without it σ itself is used (DiffBIR:
    ``x − σ·ε(x/√(σ²+1), tₛ)``)."""
    if parameterization not in PARAMETERIZATIONS:
        raise JaxirInputError(f"unknown parameterization {parameterization!r}: use one of "
                              f"{', '.join(PARAMETERIZATIONS)}")

    def denoise(x, level, step):
        if isinstance(level, SpacedSchedule):
            a, s, c_in, t = level.sqrt_alphas_cumprod, level.sqrt_one_minus_alphas_cumprod, 1.0, level.timesteps
        else:
            if sigmas is None:
                raise JaxirInputError("a denoiser called at a noise level σ needs the network's sigmas and timesteps")
            table = jnp.asarray(sigmas, jnp.float32)
            sigma = jnp.asarray(level, jnp.float32)
            index = sigma_to_timestep(sigma, table)
            t = jnp.asarray(timesteps, jnp.int32)[index]
            if quantize:
                sigma = table[index]
            a, s = 1.0, sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))
            c_in = 1.0 / jnp.sqrt(s ** 2 + 1.0)
        return x0_prediction(network(x * c_in, t, step), x, a, s, c_in, parameterization)

    return denoise
