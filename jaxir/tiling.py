"""Tiled application of a spatial function to images larger than memory allows.

The image is covered by equal tiles (``tile``, overlapping by at least ``overlap``; the last row/column of tiles is
shifted back to end at the border, so every tile has the same shape and the function compiles once). Outputs are
blended with per-pixel weights: ``"gaussian"`` (σ = tile/8 around the tile centre, as DiffBIR's and SUPIR's tiled
samplers and Mixture-of-Diffusers use) or ``"uniform"`` (plain average of the overlaps).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` with stride ``tile − overlap``."""
    if tile >= size:
        return [0]
    if not 0 <= overlap < tile:
        raise JaxirInputError(f"tile overlap must be in [0, {tile}), got {overlap}")
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def blend_weights(height: int, width: int, kind: str = "gaussian") -> np.ndarray:
    """(height, width) float32 blending weights of one output tile."""
    if kind == "uniform":
        return np.ones((height, width), np.float32)
    if kind != "gaussian":
        raise JaxirInputError(f"unknown tile weighting {kind!r}; use 'gaussian' or 'uniform'")

    def profile(n):
        x = np.arange(n) - (n - 1) / 2
        return np.exp(-0.5 * (x / (0.125 * n)) ** 2)

    return np.outer(profile(height), profile(width)).astype(np.float32)


def tiled_apply(fn: Callable[[jax.Array], jax.Array], x: jax.Array, tile: int, overlap: int, scale: float = 1,
                weighting: str = "gaussian") -> jax.Array:
    """``fn`` applied to overlapping ``tile × tile`` crops of NHWC ``x`` and blended into one output.

    ``fn`` maps (B, t, t, C) to (B, t·scale, t·scale, C'); the result has shape (B, H·scale, W·scale, C').
    An image no larger than the tile is passed to ``fn`` whole.
    """
    _, height, width, _ = x.shape
    if height <= tile and width <= tile:
        return fn(x)
    th, tw = min(tile, height), min(tile, width)
    rows, cols = tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
    out_th, out_tw = round(th * scale), round(tw * scale)
    weight = jnp.asarray(blend_weights(out_th, out_tw, weighting))[None, :, :, None]
    total = weights = None
    for top in rows:
        for left in cols:
            y = fn(x[:, top:top + th, left:left + tw])
            if total is None:
                total = jnp.zeros((x.shape[0], round(height * scale), round(width * scale), y.shape[-1]), y.dtype)
                weights = jnp.zeros((1, total.shape[1], total.shape[2], 1), y.dtype)
            ot, ol = round(top * scale), round(left * scale)
            total = total.at[:, ot:ot + out_th, ol:ol + out_tw].add(y * weight)
            weights = weights.at[:, ot:ot + out_th, ol:ol + out_tw].add(weight)
    return total / weights
