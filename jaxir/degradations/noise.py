"""Additive noise: the β·N term of eq. (1), N ~ N(0, 1) per pixel and channel, on the [0, 1] scale."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxir.keys import per_sample_keys


def gaussian_noise(key: jax.Array, x: jax.Array, sigma, sample_ids=None) -> jax.Array:
    """``x + σ·N`` for an NHWC batch (σ may be traced), without clipping."""
    keys = per_sample_keys(key, x.shape[0], sample_ids)
    noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
    return x + jnp.asarray(sigma, x.dtype) * noise
