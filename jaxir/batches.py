"""Small shape rules every restorer and pipeline shares: checking an input batch, the clean output size, and
padding to a multiple at the bottom/right."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxir.errors import JaxirInputError


def check_images(lq) -> jax.Array:
    """``lq`` as a float32 NHWC RGB batch; a wrong shape or a non-finite value is a :class:`JaxirInputError`."""
    lq = jnp.asarray(lq, jnp.float32)
    if lq.ndim != 4 or lq.shape[-1] != 3:
        raise JaxirInputError(f"expected an NHWC RGB batch, got shape {lq.shape}")
    if not bool(jnp.all(jnp.isfinite(lq))):
        raise JaxirInputError("the input holds NaN or infinite values")
    return lq


def clean_size(height: int, width: int, degradation) -> tuple[int, int]:
    """The clean image's size for an LQ image of ``height × width``: ``round(side × α)`` for the degradation's α."""
    return round(height * degradation.scale), round(width * degradation.scale)


def pad_to_multiple(x: jax.Array, multiple: int, mode: str = "constant") -> jax.Array:
    """Pad NHWC ``x`` at the bottom/right to height and width multiples of ``multiple`` (``mode`` as
    :func:`jax.numpy.pad`: zeros as DiffBIR's ``pad_to_multiples_of``, ``reflect`` as SwinIR's and Stripformer's
    ``check_image_size``)."""
    h, w = x.shape[1:3]
    return jnp.pad(x, ((0, 0), (0, -h % multiple), (0, -w % multiple), (0, 0)), mode=mode)
