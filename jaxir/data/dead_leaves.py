"""Procedural training images: the dead-leaves model (Matheron 1968; Lee, Mumford & Huang 2001) with textures.

An image is a stack of occluding shapes (disks, ellipses and rotated rectangles) dropped one on top of the other;
radii follow the scale-invariant density ``p(r) ∝ r⁻³`` on ``[r_min, r_max]`` (sampled by inverting its CDF,
``r = (r_min⁻² − u·(r_min⁻² − r_max⁻²))^(−1/2)``), which gives natural images' 1/f² power spectrum. Each shape is
filled with its own colour (a random grey level with a random share of chroma) plus a linear gradient and a sinusoidal texture of random frequency and direction; a
fraction of the shapes is flat and very dark, or flat and saturated (a colour channel at 0 or 1), because those
regions are where autoencoders and restorers fail on real photos. Shapes are rendered at twice the output size
and averaged over 2×2 blocks (anti-aliased edges).

Everything is a pure function of a PRNG key (jit-able); image i of a batch uses ``fold_in(key, i)``. These images
never come from the evaluation photos (:func:`jaxir.data.photos.bundled_photos`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxir.degradations.noise import per_sample_keys


@dataclasses.dataclass(frozen=True)
class DeadLeavesConfig:
    """Shape count, radius range (fractions of the side), and the shares of dark and saturated flat shapes."""

    num_shapes: int = 300
    r_min: float = 0.03
    r_max: float = 0.6
    dark_fraction: float = 0.08
    saturated_fraction: float = 0.1
    texture_amplitude: float = 0.15
    gradient_amplitude: float = 0.3


def _radius(u, r_min, r_max):
    return (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5


def _shape_colour(key, config: DeadLeavesConfig, xx, yy):
    """The (H, W, 3) fill of one shape: base colour, gradient, texture; flat dark or saturated for some."""
    k = jax.random.split(key, 9)
    rgb = jax.random.uniform(k[0], (3,))
    grey = jnp.mean(rgb)
    base = grey + jax.random.uniform(k[8], maxval=0.7) * (rgb - grey)   # photos are mostly weakly saturated
    kind = jax.random.uniform(k[1])
    dark = kind < config.dark_fraction
    saturated = (kind >= config.dark_fraction) & (kind < config.dark_fraction + config.saturated_fraction)
    base = jnp.where(dark, 0.04 * base, base)
    corners = jnp.round(jax.random.uniform(k[2], (3,)))   # each channel 0 or 1
    base = jnp.where(saturated, jnp.where(jax.random.uniform(k[3], (3,)) < 0.5, corners, base), base)
    angle, tex_angle = jax.random.uniform(k[4], (2,)) * 2 * jnp.pi
    ramp = jnp.cos(angle) * xx + jnp.sin(angle) * yy
    freq = 2 * jnp.pi * jnp.exp(jax.random.uniform(k[5], minval=jnp.log(2.0), maxval=jnp.log(40.0)))
    phase = jax.random.uniform(k[6]) * 2 * jnp.pi
    texture = jnp.sin(freq * (jnp.cos(tex_angle) * xx + jnp.sin(tex_angle) * yy) + phase)
    tint = jax.random.uniform(k[7], (3,), minval=-1.0, maxval=1.0)
    field = (config.gradient_amplitude * ramp[..., None] * tint
             + config.texture_amplitude * texture[..., None] * jnp.abs(tint))
    flat = dark | saturated
    return jnp.clip(base + jnp.where(flat, 0.0, 1.0) * field, 0.0, 1.0)


def _shape_mask(key, config: DeadLeavesConfig, xx, yy):
    """Disk, ellipse or rotated rectangle with a power-law radius, centred anywhere (may cross the border)."""
    k = jax.random.split(key, 5)
    cx, cy = jax.random.uniform(k[0], (2,), minval=-0.1, maxval=1.1)
    r = _radius(jax.random.uniform(k[1]), config.r_min, config.r_max)
    aspect = jnp.exp(jax.random.uniform(k[2], minval=-0.7, maxval=0.7))
    theta = jax.random.uniform(k[3]) * jnp.pi
    dx, dy = xx - cx, yy - cy
    u = (jnp.cos(theta) * dx + jnp.sin(theta) * dy) / (r * aspect)
    v = (-jnp.sin(theta) * dx + jnp.cos(theta) * dy) * aspect / r
    kind = jax.random.randint(k[4], (), 0, 3)
    ellipse = u ** 2 + v ** 2 <= 1.0
    rectangle = (jnp.abs(u) <= 0.85) & (jnp.abs(v) <= 0.85)
    return jnp.where(kind == 2, rectangle, ellipse)


def dead_leaves_image(key: jax.Array, size: int, config: DeadLeavesConfig = DeadLeavesConfig()) -> jax.Array:
    """One (size, size, 3) float32 image in [0, 1] (module docstring)."""
    n = 2 * size
    coords = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n
    yy, xx = jnp.meshgrid(coords, coords, indexing="ij")
    k_background, k_shapes = jax.random.split(key)
    background = _shape_colour(k_background, config, xx, yy)

    def drop(image, shape_key):
        k_mask, k_colour = jax.random.split(shape_key)
        mask = _shape_mask(k_mask, config, xx, yy)
        return jnp.where(mask[..., None], _shape_colour(k_colour, config, xx, yy), image), None

    image, _ = jax.lax.scan(drop, background, jax.random.split(k_shapes, config.num_shapes))
    return image.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))


def dead_leaves_batch(key: jax.Array, batch: int, size: int, config: DeadLeavesConfig = DeadLeavesConfig(),
                      sample_ids=None) -> jax.Array:
    """(batch, size, size, 3) images, image b from ``fold_in(key, sample_ids[b])``."""
    keys = per_sample_keys(key, batch, sample_ids)
    return jax.vmap(lambda k: dead_leaves_image(k, size, config))(keys)
