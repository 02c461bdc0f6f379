"""Procedural training images: the dead-leaves model (Matheron 1968; Lee, Mumford & Huang 2001) with textures.

An image is a stack of occluding shapes (disks, ellipses and rotated rectangles) dropped one on top of the other;
radii follow the scale-invariant density ``p(r) ∝ r⁻³`` on ``[r_min, r_max]`` (sampled by inverting its CDF,
``r = (r_min⁻² − u·(r_min⁻² − r_max⁻²))^(−1/2)``), which gives natural images' 1/f² power spectrum. Each shape is
filled with its own colour (a random grey level with a random share ``≤ max_chroma`` of chroma) plus a linear
gradient and a sinusoidal texture of random frequency and direction; a fraction of the shapes is flat and very dark,
or flat and saturated (a colour channel at 0 or 1), because those regions are where autoencoders and restorers fail
on real photos. Optionally (``grain_max > 0``) a share of the shapes carries sensor-like grain, ``a·n(x)`` with
``n`` one standard-normal field per image and ``a ~ U(0, grain_max)`` per shape, clipped to [0, 1] like the rest
(so grain on a near-black shape is the one-sided noise of a camera's black level), and a share of the shapes has a
soft edge (``soft_edge_max > 0``: opacity ramps linearly from 0 to 1 across a band ``w ~ U(0, soft_edge_max)`` of
the side wide, centred on the outline, like a defocused or vignetted boundary). Shapes are rendered at twice the
output size and averaged over 2×2 blocks (anti-aliased edges).

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
    """Shape count, radius range (fractions of the side), the shares of dark and saturated flat shapes, the largest
    share of a random colour's chroma a shape keeps, and the grain and soft edges (both off by default; each, when on,
    for a ``*_fraction`` share of the shapes)."""

    num_shapes: int = 300
    r_min: float = 0.03
    r_max: float = 0.6
    dark_fraction: float = 0.08
    saturated_fraction: float = 0.1
    texture_amplitude: float = 0.15
    gradient_amplitude: float = 0.3
    max_chroma: float = 0.7   # photos are mostly weakly saturated
    grain_fraction: float = 0.5
    grain_max: float = 0.0
    soft_edge_fraction: float = 0.5
    soft_edge_max: float = 0.0


GRAIN_STREAM = 7_919   # fold_in constants of the grain's and the soft edges' random numbers
SOFT_EDGE_STREAM = 7_927


def _radius(u, r_min, r_max):
    return (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5


def _shape_colour(key, config: DeadLeavesConfig, xx, yy, grain):
    """The (H, W, 3) fill of one shape: base colour, gradient, texture, grain; flat dark or saturated for some."""
    k = jax.random.split(key, 9)
    rgb = jax.random.uniform(k[0], (3,))
    grey = jnp.mean(rgb)
    base = grey + jax.random.uniform(k[8], maxval=config.max_chroma) * (rgb - grey)
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
    fill = base + jnp.where(flat, 0.0, 1.0) * field
    if grain is not None:   # its own key stream: images without grain stay what they were
        k_grain = jax.random.split(jax.random.fold_in(key, GRAIN_STREAM))
        grainy = jax.random.uniform(k_grain[0]) < config.grain_fraction
        fill = fill + jnp.where(grainy, jax.random.uniform(k_grain[1], maxval=config.grain_max), 0.0) * grain
    return jnp.clip(fill, 0.0, 1.0)


def _shape_mask(key, config: DeadLeavesConfig, xx, yy):
    """Opacity of a disk, ellipse or rotated rectangle with a power-law radius, centred anywhere (may cross the
    border): 0 or 1, or for a soft-edged shape a linear ramp across its outline (module docstring)."""
    k = jax.random.split(key, 5)
    cx, cy = jax.random.uniform(k[0], (2,), minval=-0.1, maxval=1.1)
    r = _radius(jax.random.uniform(k[1]), config.r_min, config.r_max)
    aspect = jnp.exp(jax.random.uniform(k[2], minval=-0.7, maxval=0.7))
    theta = jax.random.uniform(k[3]) * jnp.pi
    dx, dy = xx - cx, yy - cy
    u = (jnp.cos(theta) * dx + jnp.sin(theta) * dy) / (r * aspect)
    v = (-jnp.sin(theta) * dx + jnp.cos(theta) * dy) * aspect / r
    kind = jax.random.randint(k[4], (), 0, 3)
    if config.soft_edge_max <= 0:   # the hard-edged shapes, bit for bit as before soft edges existed
        ellipse = u ** 2 + v ** 2 <= 1.0
        rectangle = (jnp.abs(u) <= 0.85) & (jnp.abs(v) <= 0.85)
        return jnp.where(kind == 2, rectangle, ellipse).astype(jnp.float32)
    # distance outside the outline, in fractions of the side (exact for disks, approximate otherwise)
    outside = r * jnp.where(kind == 2, jnp.maximum(jnp.abs(u), jnp.abs(v)) / 0.85, jnp.sqrt(u ** 2 + v ** 2)) - r
    k_soft = jax.random.split(jax.random.fold_in(key, SOFT_EDGE_STREAM))
    soft = jax.random.uniform(k_soft[0]) < config.soft_edge_fraction
    width = jnp.where(soft, jax.random.uniform(k_soft[1], maxval=config.soft_edge_max), 0.0)
    return jnp.where(width > 0, jnp.clip(0.5 - outside / jnp.maximum(width, 1e-9), 0.0, 1.0),
                     (outside <= 0).astype(jnp.float32))


def dead_leaves_image(key: jax.Array, size: int, config: DeadLeavesConfig = DeadLeavesConfig()) -> jax.Array:
    """One (size, size, 3) float32 image in [0, 1] (module docstring)."""
    n = 2 * size
    coords = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n
    yy, xx = jnp.meshgrid(coords, coords, indexing="ij")
    k_background, k_shapes = jax.random.split(key)
    grain = (jax.random.normal(jax.random.fold_in(key, GRAIN_STREAM), (n, n, 3)) if config.grain_max > 0 else None)
    background = _shape_colour(k_background, config, xx, yy, grain)

    def drop(image, shape_key):
        k_mask, k_colour = jax.random.split(shape_key)
        opacity = _shape_mask(k_mask, config, xx, yy)[..., None]
        colour = _shape_colour(k_colour, config, xx, yy, grain)
        if config.soft_edge_max <= 0:
            return jnp.where(opacity > 0, colour, image), None
        return image + opacity * (colour - image), None

    image, _ = jax.lax.scan(drop, background, jax.random.split(k_shapes, config.num_shapes))
    return image.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))


def dead_leaves_batch(key: jax.Array, batch: int, size: int, config: DeadLeavesConfig = DeadLeavesConfig(),
                      sample_ids=None) -> jax.Array:
    """(batch, size, size, 3) images, image b from ``fold_in(key, sample_ids[b])``."""
    keys = per_sample_keys(key, batch, sample_ids)
    return jax.vmap(lambda k: dead_leaves_image(k, size, config))(keys)
