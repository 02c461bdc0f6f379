"""Checks at the public boundaries: images are float RGB in [0, 1], HWC or NHWC, finite.

Checks of values (finiteness, range) need concrete arrays; inside a caller's ``jax.jit`` only the shape and
dtype are checked, and the caller is responsible for the values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError

RANGE_SLACK = 1e-3  # values this far outside [0, 1] are tolerated (float round-off of resamplers)


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def as_rgb_batch(x, name: str = "image") -> tuple[jax.Array, bool]:
    """Validate an RGB float image (HWC) or batch (NHWC); return it as NHWC and whether it was batched."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise JaxirInputError(f"{name}: expected an array, got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise JaxirInputError(
            f"{name}: expected an RGB image HWC or a batch NHWC, got shape {tuple(x.shape)}"
            + (" (grayscale? replicate it to 3 channels: jnp.repeat(x[..., None], 3, -1))" if x.ndim == 2 else ""))
    channels = x.shape[-1]
    if channels != 3:
        hint = {1: " (grayscale: replicate to 3 channels)", 4: " (RGBA: drop or composite the alpha channel)",
                2: " (gray+alpha: convert to RGB)"}.get(channels, " (channels must be last: NHWC)")
        raise JaxirInputError(f"{name}: expected 3 channels (RGB) in the last axis, got shape {tuple(x.shape)}{hint}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise JaxirInputError(
            f"{name}: expected float values in [0, 1], got dtype {x.dtype}; convert integers with "
            f"x / {np.iinfo(x.dtype).max if jnp.issubdtype(x.dtype, jnp.integer) else 'max'}")
    if 0 in x.shape:
        raise JaxirInputError(f"{name}: has no pixels (shape {tuple(x.shape)})")
    if is_concrete(x):
        xa = np.asarray(x)
        if not np.isfinite(xa).all():
            raise JaxirInputError(f"{name}: contains {int((~np.isfinite(xa)).sum())} NaN or infinite values")
        lo, hi = float(xa.min()), float(xa.max())
        if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK:
            raise JaxirInputError(f"{name}: values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]"
                                  + (" (looks like 0..255: divide by 255)" if hi > 2 else ""))
    batched = x.ndim == 4
    return (jnp.asarray(x) if batched else jnp.asarray(x)[None]), batched


def require_min_size(x, min_h: int, min_w: int, what: str) -> None:
    """Raise if the spatial size of an NHWC batch is below what an operation needs."""
    h, w = x.shape[-3], x.shape[-2]
    if h < min_h or w < min_w:
        raise JaxirInputError(f"{what} needs images of at least {min_h}x{min_w} pixels, got {h}x{w}")
