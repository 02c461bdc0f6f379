"""Latent sampling of a DiffBIR ControlLDM in one jit: every sampler of :mod:`jaxir.diffusion` behind one call.

:func:`sample_latent` runs ``ε_θ(z_t, t, c_t, c_f)`` (eq. 9) under classifier-free guidance with a negative prompt
through the chosen sampler (eq. 10). Static (compiled in): the sampler, the parameterisation, the number of steps,
whether guidance is on, latent tiling, and the guidance space. Traced (never recompiled): parameters, conditions,
the starting latent and every step's noise, the schedule's timesteps/sigmas (so a new starting noise level or step
subset of the same length reuses the program), the per-step guidance and control scales, and the solver options.

Tiled sampling (DiffBIR ``make_tiled_fn`` around the ControlLDM): each network evaluation runs on overlapping
latent tiles of the noisy latent and the condition latent together, blended with Gaussian weights
(:func:`jaxir.tiling.tiled_apply`); the text condition is shared.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.diffusion import edm, guidance, samplers
from jaxir.diffusion import schedule as S
from jaxir.diffusion.denoiser import denoiser
from jaxir.errors import JaxirInputError
from jaxir.tiling import tiled_apply

SPACED_SAMPLERS = ("spaced", "ddim")
EDM_SAMPLERS = tuple(f"edm_{name}" for name in edm.SOLVERS)
SAMPLERS = SPACED_SAMPLERS + EDM_SAMPLERS


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """The static part of a sampling run (hashable: a jit static argument).

    ``sampler``: ``spaced`` (DiffBIR's ancestral ``SpacedSampler``), ``ddim`` or ``edm_<solver>`` with solver
    ``euler``, ``dpm++_2m``, ``dpm++_3m_sde``; ``tile``/``tile_overlap`` in latent pixels (0: no tiling);
    ``guidance_space``: restoration guidance (DiffBIR v2.0, spaced sampler only) ``None``, ``latent`` or ``rgb``
    with ``guidance_loss`` ``mse``/``w_mse`` and ``guidance_repeat``."""

    sampler: str = "spaced"
    steps: int = 50
    parameterization: str = "eps"
    use_cfg: bool = True
    tile: int = 0
    tile_overlap: int = 0
    guidance_space: str | None = None
    guidance_loss: str = "mse"
    guidance_repeat: int = 1

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise JaxirInputError(f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise JaxirInputError(f"steps must be >= 1, got {self.steps}")
        if self.guidance_space is not None and self.sampler != "spaced":
            raise JaxirInputError("restoration guidance is defined for the spaced sampler (DiffBIR v2.0)")
        if self.tile and not 0 <= self.tile_overlap < self.tile:
            raise JaxirInputError(f"latent tile overlap must be in [0, {self.tile}), got {self.tile_overlap}")


class SamplerValues(NamedTuple):
    """The traced part: per-step tables (length ``steps``) and solver options. Build with :func:`sampler_values`."""

    schedule: S.SpacedSchedule | S.SigmaSchedule
    cfg_scale: np.ndarray          # (steps,)
    control_scale: np.ndarray      # (steps,) one scale for all ControlNet outputs
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    eta: float = 1.0
    guidance_scale: float = 0.0
    guidance_t_start: float = 1001.0
    guidance_t_stop: float = -1.0


def schedule_timesteps(num_timesteps: int, steps: int, t_start: int | None, sampler: str) -> np.ndarray:
    """The network timesteps of the steps, descending. Full runs use DiffBIR's rules (IDDPM ``space_timesteps``
    for spaced/DDIM, ``int(linspace(T−1, 0, n, endpoint=False))`` for EDM); a run that starts at ``t_start < T−1``
    (the study's starting noise level) spaces the same number of steps over ``[0, t_start]`` by the same rule."""
    top = num_timesteps - 1 if t_start is None else int(t_start)
    if not 0 <= top < num_timesteps:
        raise JaxirInputError(f"t_start must be in [0, {num_timesteps}), got {t_start}")
    if steps > top + 1:
        raise JaxirInputError(f"{steps} steps do not fit in timesteps [0, {top}]")
    if sampler in SPACED_SAMPLERS:
        return np.sort(S.space_timesteps(top + 1, str(steps)))[::-1]
    return np.linspace(top, 0, steps, endpoint=False).astype(np.int64)


def make_schedule(alphas_cumprod: np.ndarray, spec: SamplerSpec, t_start: int | None = None):
    """The traced schedule of ``spec`` (:class:`SpacedSchedule` or :class:`SigmaSchedule`). Full EDM runs are
    DiffBIR's ``EDMSampler.make_schedule`` (first ᾱ replaced by 1e-8); shortened ones keep the true σ of t_start."""
    timesteps = schedule_timesteps(len(alphas_cumprod), spec.steps, t_start, spec.sampler)
    if spec.sampler in SPACED_SAMPLERS:
        final = alphas_cumprod[0] if spec.sampler == "ddim" else 1.0   # DiffBIR's DDIM ends at ᾱ[0]
        return S.spaced_schedule(alphas_cumprod, timesteps, final_alpha_cumprod=final)
    if t_start is None or t_start == len(alphas_cumprod) - 1:
        return S.diffbir_edm_schedule(alphas_cumprod, spec.steps)
    ac = np.asarray(alphas_cumprod, np.float64)[timesteps]
    return S.SigmaSchedule(sigmas=np.append(np.sqrt((1 - ac) / ac), 0.0), timesteps=np.append(timesteps, 0))


def sampler_values(alphas_cumprod: np.ndarray, spec: SamplerSpec, *, cfg_scale: float = 1.0,
                   rescale_cfg: bool = False, strength: float = 1.0, t_start: int | None = None,
                   **options) -> SamplerValues:
    """:class:`SamplerValues` for ``spec``: the schedule, the guidance scale per step (DiffBIR's rescaled CFG when
    ``rescale_cfg``), the control strength per step, solver options (``s_churn``, ``s_tmin``, ``s_tmax``,
    ``s_noise``, ``eta``) and restoration guidance (``guidance_scale``, ``guidance_t_start``, ``guidance_t_stop``)."""
    schedule = make_schedule(alphas_cumprod, spec, t_start)
    step_t = schedule.timesteps[:spec.steps]
    cfg = (guidance.diffbir_rescaled_cfg(cfg_scale, step_t, len(alphas_cumprod)) if rescale_cfg
           else np.full((spec.steps,), cfg_scale, np.float32))
    return SamplerValues(schedule, cfg, np.full((spec.steps,), strength, np.float32), **options)


class Conditions(NamedTuple):
    """``c_img`` (B, h, w, 4) condition latent (eq. 7), ``c_txt`` / ``c_neg`` (B, 77, C) prompt and negative
    prompt embeddings (eq. 6); for rgb-space guidance ``target_rgb`` (B, 8h, 8w, 3) in [−1, 1], else ``None``."""

    c_img: jax.Array
    c_txt: jax.Array
    c_neg: jax.Array
    target_rgb: jax.Array | None = None


def _network(model, params, spec: SamplerSpec, cond: Conditions, values: SamplerValues):
    """``network(x_t, t, step)``: the guided network output (ε or v) at timestep t (DiffBIR guides the output)."""

    def denoise_cond(x, t, c_txt, step):
        scale = values.control_scale[step]
        if not spec.tile:
            return model.denoise(params, x, t, c_txt, cond.c_img, control_scales=scale)
        channels = x.shape[-1]
        both = jnp.concatenate([x, cond.c_img], axis=-1)
        return tiled_apply(lambda xc: model.denoise(params, xc[..., :channels], t, c_txt, xc[..., channels:],
                                                    control_scales=scale), both, spec.tile, spec.tile_overlap)

    if not spec.use_cfg:
        return lambda x, t, step: denoise_cond(x, t, cond.c_txt, step)
    return guidance.classifier_free_guidance(denoise_cond, cond.c_txt, cond.c_neg, values.cfg_scale, batched=False)


def _restoration_guidance(model, params, spec: SamplerSpec, cond: Conditions, values: SamplerValues):
    target = cond.c_img if spec.guidance_space == "latent" else cond.target_rgb
    decode = (lambda z: model.decode(params, z)) if spec.guidance_space == "rgb" else None
    return guidance.restoration_guidance(target, scale=values.guidance_scale, t_start=values.guidance_t_start,
                                         t_stop=values.guidance_t_stop, space=spec.guidance_space,
                                         loss=spec.guidance_loss, repeat=spec.guidance_repeat, decode=decode)


def _sample(model, params, spec: SamplerSpec, cond: Conditions, x_T, noise, values: SamplerValues,
            trajectory: bool = False):
    schedule = values.schedule
    sigma_space = spec.sampler in EDM_SAMPLERS
    tables = (schedule.sigmas, schedule.timesteps) if sigma_space else ()
    denoise = denoiser(_network(model, params, spec, cond, values), spec.parameterization, *tables)
    if spec.guidance_space is not None:
        denoise = guidance.guided(denoise, _restoration_guidance(model, params, spec, cond, values))
    x = x_T * jnp.sqrt(1.0 + schedule.sigmas[0] ** 2) if sigma_space else x_T   # DiffBIR EDMSampler.sample
    sample, options = {
        "spaced": (samplers.sample_ddpm, {}),
        "ddim": (samplers.sample_ddim, dict(eta=values.eta)),
        "edm_euler": (edm.sample_euler, dict(s_churn=values.s_churn, s_tmin=values.s_tmin, s_tmax=values.s_tmax,
                                             s_noise=values.s_noise)),
        "edm_dpm++_2m": (edm.sample_dpmpp_2m, {}),
        "edm_dpm++_3m_sde": (edm.sample_dpmpp_3m_sde, dict(eta=values.eta, s_noise=values.s_noise)),
    }[spec.sampler]
    out = sample(denoise, x, schedule, noise, trajectory=trajectory, **options)
    return (out[0], out[1].denoised) if trajectory else out


@functools.partial(jax.jit, static_argnums=(0, 2), static_argnames=("trajectory",))
def sample_latent(model, params, spec: SamplerSpec, cond: Conditions, x_T, noise, values: SamplerValues,
                  trajectory: bool = False):
    """z_0 (and with ``trajectory`` the x0 prediction of every step) from the starting latent ``x_T`` (standard
    normal, or the noised condition of :func:`start_latent`) and per-step ``noise`` (steps, *x_T.shape)."""
    return _sample(model, params, spec, cond, x_T, noise, values, trajectory)


@functools.partial(jax.jit, static_argnums=(0, 2))
def sample_latent_per_sample(model, params, spec: SamplerSpec, cond: Conditions, x_T, noise,
                             values: SamplerValues):
    """:func:`sample_latent` for a batch whose samples each have their own traced values: every leaf of ``values``
    has a leading sample axis (:func:`stack_values`), so samples that differ in start timestep, guidance or control
    scales, η or churn run through one compiled program. Sample b computes exactly what it computes alone (the
    network runs it as a batch of one, mapped over the samples)."""
    one = lambda c, x, n, v: _sample(model, params, spec, c, x, n, v)[0]  # noqa: E731
    single = jax.tree_util.tree_map(lambda a: None if a is None else a[:, None], cond)
    return jax.vmap(one, in_axes=(0, 0, 1, 0))(single, x_T[:, None], noise[:, :, None], values)


def stack_values(values: Sequence[SamplerValues]) -> SamplerValues:
    """One :class:`SamplerValues` whose leaves carry a leading sample axis; every entry must have the same number
    of steps (the static part of a run)."""
    shapes = {tuple(np.shape(leaf) for leaf in jax.tree_util.tree_leaves(v)) for v in values}
    if len(shapes) != 1:
        raise JaxirInputError("per-sample sampler values must share their step count and schedule kind")
    return jax.tree_util.tree_map(lambda *leaves: np.stack([np.asarray(x, np.float32) for x in leaves]), *values)


def start_factors(alphas_cumprod: np.ndarray, spec: SamplerSpec, values: SamplerValues,
                  t_start: int | None) -> tuple[float, float, float, float]:
    """``(a, s, d1, d2)`` of the condition start ``z = (a·c_img + s·x_T) / d1 / d2`` (:func:`start_latent`)."""
    t0 = int(np.asarray(values.schedule.timesteps)[0])
    a, s = float(np.sqrt(alphas_cumprod[t0])), float(np.sqrt(1.0 - alphas_cumprod[t0]))
    if spec.sampler in SPACED_SAMPLERS or t_start is None:
        return a, s, 1.0, 1.0
    sigma0 = float(np.asarray(values.schedule.sigmas)[0])
    return a, s, a, float(np.sqrt(1.0 + sigma0 ** 2))


def start_latent(alphas_cumprod: np.ndarray, spec: SamplerSpec, values: SamplerValues, c_img, x_T,
                 from_condition: bool, t_start: int | None = None):
    """The sampler's starting latent: pure noise ``x_T``, or, with ``from_condition`` (DiffBIR's
    ``start_point_type="cond"``; the study's starting noise level), the condition latent noised to the first step,
    ``z = q_sample(c_img, t_0, x_T)`` (eq. 8). EDM samplers multiply their input by √(1 + σ₀²): a full run passes
    z as DiffBIR does; a run from ``t_start`` passes ``z/√ᾱ_{t0}/√(1 + σ₀²)``, so the sampler starts exactly at
    ``c_img + σ₀·x_T``."""
    if not from_condition:
        return x_T
    a, s, d1, d2 = start_factors(alphas_cumprod, spec, values, t_start)
    z = S.q_sample(c_img, x_T, a, s)
    return z if (d1, d2) == (1.0, 1.0) else z / d1 / d2


def start_latents(alphas_cumprod: np.ndarray, spec: SamplerSpec, values: Sequence[SamplerValues], c_img, x_T,
                  from_condition: bool, t_starts: Sequence[int | None]):
    """:func:`start_latent` per sample: sample b starts from its own ``values[b]`` and ``t_starts[b]``."""
    if not from_condition:
        return x_T
    factors = np.array([start_factors(alphas_cumprod, spec, v, t) for v, t in zip(values, t_starts)], np.float32)
    a, s, d1, d2 = (factors[:, i].reshape(-1, *([1] * (x_T.ndim - 1))) for i in range(4))
    return S.q_sample(c_img, x_T, a, s) / d1 / d2
