"""Tiled application of a spatial function to images larger than memory allows: one blend loop
(:func:`blend_tiles`), parameterised by the windows and the per-pixel weights, behind two tilings.

* :func:`tiled_apply` — equal tiles (``tile``, overlapping by at least ``overlap``; the last row/column of tiles is
  shifted back to end at the border, so every tile has the same shape and the function compiles once), weights
  ``"gaussian"`` (σ = tile/8 around the tile centre, as DiffBIR's tiled sampler and Mixture-of-Diffusers use) or
  ``"uniform"`` (plain average of the overlaps); output tiles may be scaled (VAE encoders and decoders);
* :func:`tiled_blend` — SUPIR's latent tiles (sgm ``_sliding_windows``, :func:`tile_windows`) and Gaussian weights
  (:func:`supir_tile_weights`), one tile at a time in a ``lax.scan`` (the program holds one ``fn`` whatever the
  number of tiles; only one tile's activations are live).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError

SUPIR_TILE_VAR = 0.01    # sgm ``gaussian_weights``: variance in units of the tile size² (σ = tile / 10)


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


def blend_tiles(fn: Callable[..., jax.Array], x: jax.Array, rows, cols, tile: tuple[int, int],
                weight: np.ndarray, scale: float = 1, scan: bool = False, per_tile: jax.Array | None = None
                ) -> jax.Array:
    """``fn`` on the ``tile`` = (th, tw) windows of NHWC ``x`` at every (row, column) start, each output tile
    (``weight.shape``, the window × ``scale``) multiplied by ``weight`` and added in place, the sum divided by the
    summed weights. ``scan``: one window at a time in a ``lax.scan`` (inside a jit: one ``fn`` in the program), else
    a Python loop (eagerly: a jitted ``fn`` compiles once per tile shape). ``per_tile``: an array with one entry per
    window (rows outer, columns inner) passed to ``fn`` as its second argument (e.g. the posterior noise of each
    encoder tile)."""
    b, height, width, channels = x.shape
    th, tw = tile
    out_th, out_tw = weight.shape
    corners = np.array([(r, c, round(r * scale), round(c * scale)) for r in rows for c in cols], np.int64)
    n = len(corners)
    if per_tile is not None and per_tile.shape[0] != n:
        raise JaxirInputError(f"per_tile holds {per_tile.shape[0]} entries for {n} tiles")
    extras = jnp.zeros((n,)) if per_tile is None else per_tile
    call = fn if per_tile is not None else (lambda window, _: fn(window))
    out = jax.eval_shape(call, jax.ShapeDtypeStruct((b, th, tw, channels), x.dtype), extras[0])
    out_shape = (b, round(height * scale), round(width * scale), out.shape[-1])
    total_weight = np.zeros(out_shape[1:3])
    for _, _, r, c in corners:
        total_weight[r:r + out_th, c:c + out_tw] += weight
    w = jnp.asarray(weight, out.dtype)[None, :, :, None]

    def add_tile(total, item):
        corner, extra = item
        y = call(jax.lax.dynamic_slice(x, (0, corner[0], corner[1], 0), (b, th, tw, channels)), extra)
        start = (0, corner[2], corner[3], 0)
        here = jax.lax.dynamic_slice(total, start, y.shape)
        return jax.lax.dynamic_update_slice(total, here + y * w, start), None

    total = jnp.zeros(out_shape, out.dtype)
    if scan:
        total, _ = jax.lax.scan(add_tile, total, (jnp.asarray(corners), extras))
    else:
        for i, corner in enumerate(corners.tolist()):
            total, _ = add_tile(total, (corner, extras[i]))
    return total / jnp.asarray(total_weight, out.dtype)[None, :, :, None]


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
    weight = blend_weights(round(th * scale), round(tw * scale), weighting)
    return blend_tiles(fn, x, rows, cols, (th, tw), weight, scale)


def supir_tile_weights(height: int, width: int, centred_rows: bool = False) -> np.ndarray:
    """sgm ``gaussian_weights`` of a (height, width) tile: ``exp(−(i − m)²/(2·0.01·n²))`` per axis with the column
    centre at ``(width − 1)/2`` and, as SUPIR writes it, the row centre at ``height/2`` (the same in HYPIR's
    ``make_tiled_fn`` and OSEDiff's latent tiler); ``centred_rows`` puts it at ``(height − 1)/2`` (PiSA-SR)."""

    def profile(n, mid):
        i = np.arange(n)
        return np.exp(-(i - mid) ** 2 / (n * n) / (2 * SUPIR_TILE_VAR)) / np.sqrt(2 * np.pi * SUPIR_TILE_VAR)

    return np.outer(profile(height, (height - 1) / 2 if centred_rows else height / 2), profile(width, (width - 1) / 2))


def tile_windows(height: int, width: int, tile: int, stride: int) -> tuple[tuple[int, int], tuple[int, ...],
                                                                          tuple[int, ...]]:
    """``((tile_h, tile_w), row starts, column starts)`` of SUPIR's ``_sliding_windows`` (tiles clamped to the
    latent; the last row/column of tiles ends at the border)."""
    th, tw = min(tile, height), min(tile, width)
    rows = tile_starts(height, th, max(th - stride, 0))
    cols = tile_starts(width, tw, max(tw - stride, 0))
    return (th, tw), tuple(rows), tuple(cols)


def tiled_blend(fn: Callable[[jax.Array], jax.Array], x: jax.Array, tile: int, stride: int) -> jax.Array:
    """``fn`` (B, th, tw, C) → (B, th, tw, C') on SUPIR's latent tiles of ``x`` (:func:`tile_windows`), blended with
    :func:`supir_tile_weights`, one tile at a time in a ``lax.scan``."""
    (th, tw), rows, cols = tile_windows(x.shape[1], x.shape[2], tile, stride)
    return blend_tiles(fn, x, rows, cols, (th, tw), supir_tile_weights(th, tw), scan=True)
