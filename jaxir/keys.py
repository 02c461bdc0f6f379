"""Per-sample random keys, shared by every part of jaxir that draws random numbers (degradations, diffusion, data).

One base key per run; sample b of a batch draws from ``fold_in(key, sample_ids[b])``, so a sample's randomness
depends on its own id only, never on the batch it is in or the device count (DESIGN.md, *Conventions*).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def per_sample_keys(key: jax.Array, n: int, sample_ids=None) -> jax.Array:
    """One key per sample, ``fold_in(key, sample_id)`` (default ids ``arange(n)``)."""
    ids = jnp.arange(n) if sample_ids is None else jnp.asarray(sample_ids)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)
