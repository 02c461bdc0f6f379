"""Noise schedules of the forward process, eq. (8) ``z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε``, and their respacings.

Tables (betas, ᾱ, respaced per-step coefficients, sigmas) are built once on the host in float64 NumPy, as the
references do (XPixelGroup/DiffBIR ``diffbir/model/gaussian_diffusion.py``, ``diffbir/sampler/spaced_sampler.py``);
samplers receive them as float32 arrays, so changing a schedule's values never recompiles. The conversions between
parameterisations and the nearest-sigma snapping are written with ``jax.numpy`` and run inside a trace.

Naming: the beta schedules keep the LDM names of DiffBIR's and SUPIR's configs: ``"linear"`` is Stable Diffusion's
``linspace(√β₀, √β₁)²`` (diffusers calls it ``"scaled_linear"``), ``"sqrt_linear"`` is a plain ``linspace(β₀, β₁)``
(diffusers' ``"linear"``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError

SD_LINEAR_START = 0.00085
SD_LINEAR_END = 0.012


def sd_linear_betas(num_timesteps: int = 1000, start: float = SD_LINEAR_START,
                    end: float = SD_LINEAR_END) -> np.ndarray:
    """Stable Diffusion's "linear" betas, ``linspace(√start, √end, n)²`` (LDM ``make_beta_schedule("linear")``)."""
    return np.linspace(start ** 0.5, end ** 0.5, num_timesteps, dtype=np.float64) ** 2


def linear_betas(num_timesteps: int, start: float, end: float) -> np.ndarray:
    """Betas linear in t (DDPM, Ho et al. 2020; LDM ``"sqrt_linear"``)."""
    return np.linspace(start, end, num_timesteps, dtype=np.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021), eq. (17): ``ᾱ(t) = f(t)/f(0)``, ``f(t) = cos²((t/T + s)/(1 + s) · π/2)``,
    ``β_t = min(1 − ᾱ(t+1)/ᾱ(t), max_beta)`` (IDDPM ``betas_for_alpha_bar``)."""
    f = np.cos((np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps + s) / (1 + s) * np.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def make_betas(schedule: str, num_timesteps: int = 1000, linear_start: float = SD_LINEAR_START,
               linear_end: float = SD_LINEAR_END, cosine_s: float = 0.008) -> np.ndarray:
    """Betas by their LDM config name: ``"linear"`` (= diffusers ``"scaled_linear"``, also accepted),
    ``"sqrt_linear"``, ``"cosine"``."""
    if schedule in ("linear", "scaled_linear"):
        return sd_linear_betas(num_timesteps, linear_start, linear_end)
    if schedule == "sqrt_linear":
        return linear_betas(num_timesteps, linear_start, linear_end)
    if schedule == "cosine":
        return cosine_betas(num_timesteps, cosine_s)
    raise JaxirInputError(f"unknown beta schedule {schedule!r}: use 'linear', 'scaled_linear', 'sqrt_linear' "
                          "or 'cosine'")


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. (2024), Algorithm 1: shift and scale ``√ᾱ`` so that ``√ᾱ_T = 0`` (zero terminal SNR, so the
    last β is 1) while ``√ᾱ_0`` is unchanged. DiffBIR v2.1 (``enforce_zero_terminal_snr``) uses it with v-prediction.
    """
    sqrt_ac = np.sqrt(alphas_cumprod(betas))
    first, last = sqrt_ac[0], sqrt_ac[-1]
    sqrt_ac = (sqrt_ac - last) * (first / (first - last))
    ac = sqrt_ac ** 2
    return 1.0 - np.concatenate([ac[:1], ac[1:] / ac[:-1]])


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """``ᾱ_t = ∏_{s≤t} (1 − β_s)``."""
    return np.cumprod(1.0 - np.asarray(betas, np.float64))


def scales(alpha_cumprod):
    """``(√ᾱ, √(1−ᾱ))``: the signal and noise scales of eq. (8)."""
    return np.sqrt(alpha_cumprod), np.sqrt(1.0 - np.asarray(alpha_cumprod))


# Parameterisations. ``a = √ᾱ_t`` and ``s = √(1−ᾱ_t)`` (broadcastable); z_t = a·x0 + s·ε and v = a·ε − s·x0
# (Salimans & Ho 2022), so x0 = a·z_t − s·v and ε = a·v + s·z_t.

def q_sample(x0, noise, a, s):
    """eq. (8): ``z_t = a·x0 + s·ε``."""
    return a * x0 + s * noise


def x0_from_eps(x_t, eps, a, s):
    """``x0 = (z_t − s·ε)/a`` (undefined where a = 0: zero terminal SNR needs v-prediction)."""
    return (x_t - s * eps) / a


def eps_from_x0(x_t, x0, a, s):
    """``ε = (z_t − a·x0)/s``."""
    return (x_t - a * x0) / s


def v_target(x0, eps, a, s):
    """The v-prediction target ``v = a·ε − s·x0``."""
    return a * eps - s * x0


def x0_from_v(x_t, v, a, s):
    """``x0 = a·z_t − s·v``."""
    return a * x_t - s * v


def eps_from_v(x_t, v, a, s):
    """``ε = a·v + s·z_t``."""
    return a * v + s * x_t


def space_timesteps(num_timesteps: int, section_counts) -> np.ndarray:
    """IDDPM ``respace.space_timesteps`` (openai/improved-diffusion, used by DiffBIR's ``SpacedSampler``): split
    ``range(num_timesteps)`` into equal sections and take ``section_counts[i]`` evenly strided steps (rounded) from
    section i; ``"ddimN"`` takes the one integer stride that gives exactly N steps from 0. ``section_counts``: a list
    of ints or a comma-separated string (``"10"``, ``"10,15,20"``, ``"ddim25"``). Returns the kept timesteps,
    ascending (IDDPM returns a set)."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return np.arange(0, num_timesteps, stride)
            raise JaxirInputError(f"cannot create exactly {desired} steps from {num_timesteps} with an integer "
                                  "stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise JaxirInputError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):  # accumulated, not k·stride: the float sums decide IDDPM's roundings
            steps.append(start + round(position))
            position += stride
        start += size
    return np.unique(np.asarray(steps, np.int64))


def sgm_timesteps(num_steps: int, num_timesteps: int = 1000) -> np.ndarray:
    """Timesteps of sgm's ``LegacyDDPMDiscretization`` (SUPIR), ascending:
    ``floor(linspace(T−1, 0, n, endpoint=False))`` reversed; all of them when n = T."""
    if num_steps == num_timesteps:
        return np.arange(num_timesteps)
    return np.linspace(num_timesteps - 1, 0, num_steps, endpoint=False).astype(np.int64)[::-1]


class SpacedSchedule(NamedTuple):
    """Per-step tables of a respaced process, in sampling order (descending timesteps), float64 on the host.

    ``timesteps[i]`` is the network's timestep at step i, ``alphas_cumprod[i] = ᾱ[timesteps[i]]`` and
    ``alphas_cumprod_prev[i]`` the ᾱ of the step after it (the final value after the last). The respaced process has
    ``β_i = 1 − ᾱ_i/ᾱ_prev,i`` and the DDPM posterior q(z_prev | z_t, x0) = N(c1·x0 + c2·z_t, σ²) (Ho et al. 2020,
    eqs. 6–7). A NamedTuple, hence a pytree: pass it to jitted samplers (traced), slice it with
    ``jax.tree.map(lambda a: a[k:], schedule)`` to start later (img2img)."""

    timesteps: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    sqrt_alphas_cumprod: np.ndarray
    sqrt_one_minus_alphas_cumprod: np.ndarray
    betas: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray


def spaced_schedule(alphas_cumprod_table: np.ndarray, timesteps, final_alpha_cumprod: float = 1.0) -> SpacedSchedule:
    """The respaced process over ``timesteps`` (any order; used descending), as DiffBIR's
    ``SpacedSampler.make_schedule``: betas from ᾱ at the kept steps, starting from ``final_alpha_cumprod`` = 1 (IDDPM,
    diffusers' DDPM with custom timesteps, DDIM with ``set_alpha_to_one``; DiffBIR's DDIM ends at ``ᾱ[0]``).

    ``posterior_log_variance_clipped`` is IDDPM's: the variance of the last step (zero when the process ends at
    ᾱ = 1) replaced by that of the step before it; the last step adds no noise anyway."""
    table = np.asarray(alphas_cumprod_table, np.float64)
    timesteps = np.sort(np.asarray(timesteps, np.int64))[::-1]
    if len(np.unique(timesteps)) != len(timesteps) or timesteps[-1] < 0 or timesteps[0] >= len(table):
        raise JaxirInputError(f"timesteps must be distinct and in [0, {len(table)}), got {timesteps.tolist()}")
    ac = table[timesteps]
    ac_prev = np.append(ac[1:], final_alpha_cumprod)
    betas = 1.0 - ac / ac_prev
    posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
    clip_to = posterior_variance[-2] if len(timesteps) > 1 else posterior_variance[-1]
    with np.errstate(divide="ignore"):  # a one-step schedule: log 0 = −inf, never used (no noise at the end)
        log_variance = np.log(np.append(posterior_variance[:-1], clip_to))
    sqrt_ac, sqrt_one_minus_ac = scales(ac)
    return SpacedSchedule(
        timesteps=timesteps, alphas_cumprod=ac, alphas_cumprod_prev=ac_prev, sqrt_alphas_cumprod=sqrt_ac,
        sqrt_one_minus_alphas_cumprod=sqrt_one_minus_ac, betas=betas, posterior_variance=posterior_variance,
        posterior_log_variance_clipped=log_variance,
        posterior_mean_coef1=betas * np.sqrt(ac_prev) / (1.0 - ac),
        posterior_mean_coef2=(1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac))


def sigmas(alphas_cumprod_table: np.ndarray) -> np.ndarray:
    """EDM/k-diffusion noise levels ``σ_t = √((1−ᾱ_t)/ᾱ_t)`` (z_t/√ᾱ_t = x0 + σ_t ε), ascending in t; ``inf`` at a
    zero-terminal-SNR end."""
    ac = np.asarray(alphas_cumprod_table, np.float64)
    with np.errstate(divide="ignore"):
        return np.sqrt((1.0 - ac) / ac)


def sigma_to_timestep(sigma, sigma_table, log_space: bool = False):
    """Index of the nearest entry of ``sigma_table`` (ascending, one per timestep): the discrete timestep the network
    sees for a continuous σ. Distances in σ (sgm ``DiscreteDenoiser.sigma_to_idx``, SUPIR) or, with
    ``log_space``, in log σ (k-diffusion ``DiscreteSchedule.sigma_to_t`` with ``quantize``); ties to the lower index.
    Traceable; ``sigma`` of any shape."""
    sigma = jnp.asarray(sigma, jnp.float32)
    table = jnp.asarray(sigma_table, jnp.float32)
    if log_space:
        sigma, table = jnp.log(sigma), jnp.log(table)
    return jnp.argmin(jnp.abs(sigma[..., None] - table), axis=-1)


class SigmaSchedule(NamedTuple):
    """Noise levels of a sigma-space (EDM / k-diffusion) sampler in sampling order, ``sigmas[-1] = 0``, and the
    network timestep of each (``timesteps[i]`` for ``sigmas[i]``). A pytree: traced when passed to a jitted sampler."""

    sigmas: np.ndarray
    timesteps: np.ndarray


def diffbir_edm_schedule(alphas_cumprod_table: np.ndarray, num_steps: int,
                         first_alpha_cumprod: float = 1e-8) -> SigmaSchedule:
    """DiffBIR's ``EDMSampler.make_schedule`` (``diffbir/sampler/edm_sampler.py``): timesteps
    ``int(linspace(T−1, 0, n, endpoint=False))``, σ from ᾱ at them with the first ᾱ replaced by ``1e-8`` (σ₀ ≈ 1e4,
    finite even with zero terminal SNR), then σ = 0 with timestep 0 appended."""
    table = np.asarray(alphas_cumprod_table, np.float64)
    timesteps = np.linspace(len(table) - 1, 0, num_steps, endpoint=False).astype(np.int64)
    ac = table[timesteps].copy()
    ac[0] = first_alpha_cumprod
    return SigmaSchedule(sigmas=np.append(np.sqrt((1.0 - ac) / ac), 0.0), timesteps=np.append(timesteps, 0))
