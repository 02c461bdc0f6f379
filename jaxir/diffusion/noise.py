"""The samplers' randomness: starting latents and per-step noise, drawn here from per-sample keys
``fold_in(key, sample_id)`` (:func:`jaxir.keys.per_sample_keys`), so that a sample never depends on the batch it is
in. Samplers themselves take the drawn arrays (explicit noise, k-diffusion style)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.keys import per_sample_keys


def sampler_noise(key: jax.Array, shape, num_steps: int, sample_ids=None):
    """``(x_T, noise)``: standard normal starting latents of ``shape`` and per-step noise ``(num_steps, *shape)``;
    sample b splits ``fold_in(key, sample_ids[b])`` (default ``arange(B)``) into a start key and a step key."""

    def draw(k):
        k_start, k_steps = jax.random.split(k)
        return (jax.random.normal(k_start, shape[1:], jnp.float32),
                jax.random.normal(k_steps, (num_steps, *shape[1:]), jnp.float32))

    x_T, noise = jax.vmap(draw)(per_sample_keys(key, shape[0], sample_ids))
    return x_T, jnp.moveaxis(noise, 1, 0)


def normal_blocks(key: jax.Array, sample_ids, shape, count: int) -> jax.Array:
    """``(count, B, *shape)``: per sample one standard-normal stream of ``count·prod(shape)`` values from
    ``fold_in(key, sample_ids[b])``, cut in order into ``count`` blocks of ``shape`` (SUPIR draws its posterior,
    start and step noise in that order from one seeded generator)."""
    n = int(np.prod(shape))
    flat = jax.vmap(lambda k: jax.random.normal(k, (count * n,), jnp.float32))(
        per_sample_keys(key, sample_ids.shape[0], sample_ids))
    return jnp.moveaxis(flat.reshape(flat.shape[0], count, *shape), 1, 0)
