"""Guidance: classifier-free guidance (written once, for every sampler), DiffBIR's rescaled CFG schedule and its v2.0
restoration guidance, and :func:`guided`, which puts an x0 correction (a guidance hook) into a denoiser.

All are expressed as arrays and pure functions, so their values are traced (changing a scale never recompiles).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError

# DiffBIR multiplies the user's guidance scale by 3000 (``diffbir/utils/cond_fn.py``, ``Guidance.__init__``).
GUIDANCE_SCALE_FACTOR = 3000.0
# ITU-R 601-2 luma weights used by DiffBIR's weighted-MSE guidance (``WeightedMSEGuidance._get_weight``).
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def per_step(value, step):
    """``value[step]`` for a per-step table (1-D array), else ``value`` itself (a scalar for every step)."""
    value = jnp.asarray(value, jnp.float32)
    return value[step] if value.ndim == 1 else value


def classifier_free_guidance(denoise_cond: Callable, cond, uncond, scale, batched: bool = True) -> Callable:
    """``out = out(∅) + w·(out(c) − out(∅))`` (Ho & Salimans 2022) in the order of operations of DiffBIR
    (``SpacedSampler.apply_model``: ``model_uncond + cfg_scale * (model_cond - model_uncond)``) and sgm
    (``VanillaCFG``/``LinearCFG``: ``x_u + scale * (x_c - x_u)``). Returns ``guided(x, level, step)``.

    ``denoise_cond(x, level, c, step)`` evaluates the network (DiffBIR guides the ε/v output) or the denoiser (sgm
    guides x0) under condition ``c``, a pytree of arrays with a batch axis. ``scale``: a scalar, a per-step table
    (e.g. :func:`diffbir_rescaled_cfg`) or a function ``scale(level, step)`` (sgm's ``LinearCFG``, linear in σ), traced
    in every case. ``batched``: one call on ``[uncond; cond]`` concatenated along the batch (sgm's order), else two
    calls (DiffBIR's samplers); the two agree up to rounding."""
    weight = scale if callable(scale) else (lambda level, step: per_step(scale, step))

    def denoise(x, level, step):
        if batched:
            both = jax.tree.map(lambda u, c: jnp.concatenate([u, c]), uncond, cond)
            out_uncond, out_cond = jnp.split(denoise_cond(jnp.concatenate([x, x]), level, both, step), 2)
        else:
            out_cond, out_uncond = denoise_cond(x, level, cond, step), denoise_cond(x, level, uncond, step)
        return out_uncond + weight(level, step) * (out_cond - out_uncond)

    return denoise


def guided(denoise: Callable, guide: Callable) -> Callable:
    """The denoiser ``guide(denoise(x, level, step), level, step)``: a guidance hook that corrects each x0
    prediction before the sampler uses it (DiffBIR v2.0's :func:`restoration_guidance`, SUPIR's
    :func:`jaxir.diffusion.restore_edm.center_guidance`); the samplers' trajectories record the corrected x0."""
    return lambda x, level, step: guide(denoise(x, level, step), level, step)


def diffbir_rescaled_cfg(scale: float, timesteps, num_timesteps: int = 1000) -> np.ndarray:
    """Per-step guidance scales of DiffBIR's ``rescale_cfg`` (``Sampler.get_cfg_scale``):
    ``1 + w·(1 − cos(π·((T − t)/T)^5))/2`` at network timestep t when w > 1 (small at the start of sampling, up to
    1 + w at the end), else w. ``timesteps``: the network timestep of each step, in sampling order."""
    t = np.asarray(timesteps, np.float64)
    if scale <= 1:
        return np.full(t.shape, scale, np.float32)
    return (1.0 + scale * (1.0 - np.cos(np.pi * ((num_timesteps - t) / num_timesteps) ** 5.0)) / 2.0).astype(
        np.float32)


def edge_weight_map(image: jax.Array) -> jax.Array:
    """The per-pixel weights of DiffBIR's weighted-MSE guidance (``WeightedMSEGuidance._get_weight``) for NHWC RGB
    in [0, 1]: Sobel gradient magnitude of the gray image (replicate border), summed over 2×2 blocks, ``1 − tanh``:
    flat regions weigh 1, edges less. Height and width must be even. Returns (B, H, W, 1)."""
    b, h, w, _ = image.shape
    if h % 2 or w % 2:
        raise JaxirInputError(f"weighted-MSE guidance needs even image sides, got {h}×{w}")
    gray = jnp.tensordot(image, jnp.asarray(GRAY_WEIGHTS, image.dtype), axes=([-1], [0]))
    g = jnp.pad(gray, ((0, 0), (1, 1), (1, 1)), mode="edge")
    # cross-correlation with G_x = [[1,0,-1],[2,0,-2],[1,0,-1]] and G_y = G_xᵀ (F.conv2d)
    gx = (g[:, :-2, :-2] - g[:, :-2, 2:]) + 2 * (g[:, 1:-1, :-2] - g[:, 1:-1, 2:]) + (g[:, 2:, :-2] - g[:, 2:, 2:])
    gy = (g[:, :-2, :-2] - g[:, 2:, :-2]) + 2 * (g[:, :-2, 1:-1] - g[:, 2:, 1:-1]) + (g[:, :-2, 2:] - g[:, 2:, 2:])
    magnitude = jnp.sqrt(gx ** 2 + gy ** 2)
    blocks = magnitude.reshape(b, h // 2, 2, w // 2, 2).sum(axis=(2, 4))
    weight = 1.0 - jnp.tanh(blocks)
    return jnp.repeat(jnp.repeat(weight, 2, axis=1), 2, axis=2)[..., None]


def restoration_guidance(target, *, scale, t_start, t_stop, space: str = "latent", loss: str = "mse",
                         repeat: int = 1, decode: Callable | None = None, target_weight=None):
    """DiffBIR v2.0's restoration guidance (after GDP; XPixelGroup/DiffBIR v2.0 ``SpacedSampler.apply_cond_fn`` and
    ``utils/cond_fn.py``) as a guidance hook ``guide(x0, row, step) -> x0`` for :func:`guided` around the denoiser of
    :func:`jaxir.diffusion.samplers.sample_ddpm` (``row``: the schedule row the denoiser is called at).

    While ``t_stop < t + 1 < t_start`` (t the network timestep), ``repeat`` times:
    ``x0 ← x0 − (3000·scale / c1)·∇_{x0} L``, with ``L = Σ_b mean_{CHW}(w·(P(x0) − target)²)`` and c1 the step's
    posterior mean coefficient of x0. ``space="latent"``: P is the identity and ``target`` a latent (DiffBIR encodes
    the stage-1 image with a *sampled* latent; pass the mode, :meth:`CLDM.encode_condition`, for a deterministic
    target); ``space="rgb"``: P = ``decode`` (latent → image in [−1, 1]) and ``target`` the stage-1 image in
    [−1, 1], the gradient reaching x0 through the decoder (``jax.vjp``). ``loss="w_mse"`` (rgb only) weighs pixels by
    :func:`edge_weight_map` of the target. ``scale``, ``t_start``, ``t_stop`` may be traced; ``repeat`` is static.
    """
    if space not in ("latent", "rgb"):
        raise JaxirInputError(f"guidance space must be 'latent' or 'rgb', got {space!r}")
    if loss not in ("mse", "w_mse"):
        raise JaxirInputError(f"guidance loss must be 'mse' or 'w_mse', got {loss!r}")
    if space == "rgb" and decode is None:
        raise JaxirInputError("rgb-space guidance needs the VAE decoder (decode)")
    if loss == "w_mse" and space != "rgb":
        raise JaxirInputError("weighted-MSE guidance is defined on RGB images: use space='rgb'")
    weight = 1.0
    if loss == "w_mse":
        weight = edge_weight_map((target + 1.0) / 2.0) if target_weight is None else target_weight
    project = decode if space == "rgb" else (lambda z: z)

    def loss_fn(x0):
        diff = project(x0) - target
        return jnp.sum(jnp.mean(weight * diff ** 2, axis=tuple(range(1, diff.ndim))))

    def guide(x0, row, step=None):
        t_now = row.timesteps + 1
        active = (t_stop < t_now) & (t_now < t_start)
        step_size = GUIDANCE_SCALE_FACTOR * scale / row.posterior_mean_coef1
        guided = x0
        for _ in range(repeat):
            guided = guided - step_size * jax.grad(loss_fn)(guided)
        return jnp.where(active, guided, x0)

    return guide
