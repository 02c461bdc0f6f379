"""Per-sample random keys, shared by every part of jaxir that draws random numbers (degradations, diffusion, data).

One base key per run (or one per sample); sample b of a batch draws from ``fold_in(key, sample_ids[b])`` (or
``fold_in(key[b], sample_ids[b])``), so a sample's randomness depends on its own key and id only, never on the batch
it is in or the device count (DESIGN.md, *Conventions*).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxir.errors import JaxirInputError


def per_sample_keys(key: jax.Array, n: int, sample_ids=None) -> jax.Array:
    """One key per sample, ``fold_in(key, sample_ids[b])`` (default ids ``arange(n)``). ``key`` is one key for the
    batch, or one key per sample (a batch of ``n`` keys): then sample b folds its id into its own key, so a batch
    of unrelated samples (e.g. the cells of an experiment, each with its own key and id 0) draws exactly what each
    would draw alone."""
    ids = jnp.arange(n) if sample_ids is None else jnp.asarray(sample_ids)
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    single = key.ndim == (0 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 1)
    if single:
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)
    if key.shape[0] != n:
        raise JaxirInputError(f"{key.shape[0]} keys for a batch of {n} samples")
    return jax.vmap(jax.random.fold_in)(key, ids)
