"""Differentiable JPEG compression, as simulated by Real-ESRGAN's degradation pipeline.

:func:`jpeg` reproduces the forward pass of BasicSR's ``DiffJPEG(differentiable=False)``
(``basicsr/utils/diffjpeg.py``, after M. Lomnitz's DiffJPEG; Shin & Song, "JPEG-resistant adversarial images",
NeurIPS-W 2017) on NHWC batches, with a per-sample, traceable quality:

1. zero-pad bottom/right to a multiple of 16 (DiffJPEG pads with zeros, not with edge pixels as libjpeg does);
2. RGB → YCbCr, JFIF full range (ITU-T T.871 eq. 3), on the 0..255 scale;
3. 4:2:0 chroma subsampling by 2×2 averaging;
4. 8×8 block DCT-II (ITU-T T.81 eq. A.3.3) of the level-shifted samples (``x − 128``);
5. division by the quality-scaled quantisation table, rounding, multiplication back (T.81 eqs. A.3.4, A.3.5);
6. inverse DCT, nearest-neighbour chroma upsampling, YCbCr → RGB, clipping to [0, 255] and cropping.

Quality scaling is the IJG one without the integer rounding of libjpeg's ``jpeg_add_quant_table``: the table
is ``T · s / 100`` with ``s = 5000 / q`` below 50 and ``200 − 2q`` from 50 (``quality_to_factor``), so a
non-integer quality gives a continuous table. Where DiffJPEG differs from libjpeg we follow DiffJPEG:

* its tables are the transposes of the IJG tables of T.81 Annex K (``y_table``/``c_table`` are stored ``.T``),
  i.e. a horizontal frequency is quantised with the step of the matching vertical one;
* no ``floor`` of the scaled table and no clamping to 255 at low quality (libjpeg's baseline clamp acts below
  q ≈ 24); libjpeg's lower clamp of table entries to 1 is kept, so quality 100 is a quantisation step of 1
  (DiffJPEG divides by zero there). Over Real-ESRGAN's range (q ≤ 95) every entry is already ≥ 1;
* box (not "fancy", triangular) chroma upsampling and floating-point DCTs, without the integer
  rounding of the YCbCr samples.

Rounding is hard in the forward pass; its gradient is the identity (straight-through estimator), so the
function is differentiable in the image and in a float quality, whereas DiffJPEG's ``differentiable=True``
mode replaces the forward rounding by ``round(x) + (x − round(x))³``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError

_HI = jax.lax.Precision.HIGHEST

# IJG tables (T.81 Annex K, tables K.1 and K.2), row = vertical frequency, transposed as DiffJPEG stores them.
_Y_TABLE = np.array(
    [[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
     [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
     [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32).T
_C_TABLE = np.full((8, 8), 99, np.float32)
_C_TABLE[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]).T

# JFIF full-range colour transforms (T.871 eqs. 3 and 7), applied as x @ M.T + shift.
_RGB2YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                    np.float32)
_YCC2RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], np.float32)
_CHROMA_SHIFT = np.array([0.0, 128.0, 128.0], np.float32)


def _dct_basis() -> tuple[np.ndarray, np.ndarray]:
    """(64, 64) cosine products ``cos((2x+1)uπ/16)·cos((2y+1)vπ/16)`` indexed [(x, y), (u, v)], and the
    (64,) normalisation ``α(u)α(v)`` with ``α(0) = 1/√2``, ``α(k>0) = 1`` (T.81 A.3.3)."""
    k = np.arange(8)
    c = np.cos((2 * k[:, None] + 1) * k[None, :] * np.pi / 16)  # [x, u]
    basis = np.einsum("xu,yv->xyuv", c, c).reshape(64, 64).astype(np.float32)
    alpha = np.array([1 / np.sqrt(2)] + [1.0] * 7)
    return basis, np.outer(alpha, alpha).reshape(64).astype(np.float32)


_BASIS, _ALPHA = _dct_basis()


@jax.custom_jvp
def _round_ste(x: jax.Array) -> jax.Array:
    """Round half to even (as ``torch.round``), with an identity derivative (straight-through)."""
    return jnp.round(x)


@_round_ste.defjvp
def _round_ste_jvp(primals, tangents):
    return _round_ste(primals[0]), tangents[0]


def quality_to_factor(quality) -> jax.Array:
    """IJG quality scaling as a fraction (``jpeg_quality_scaling`` / 100): ``50/q`` below 50, ``2 − q/50`` from
    50; the quality is clipped to [1, 100] first, as libjpeg does."""
    q = jnp.clip(jnp.asarray(quality, jnp.float32), 1.0, 100.0)
    return jnp.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q) / 100.0


def _blocks(plane: jax.Array) -> jax.Array:
    """(N, H, W) → (N, H/8, W/8, 64), each row one 8×8 block in row-major order."""
    n, h, w = plane.shape
    return plane.reshape(n, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4).reshape(n, h // 8, w // 8, 64)


def _unblocks(blocks: jax.Array) -> jax.Array:
    n, bh, bw, _ = blocks.shape
    return blocks.reshape(n, bh, bw, 8, 8).transpose(0, 1, 3, 2, 4).reshape(n, bh * 8, bw * 8)


def _code_plane(plane: jax.Array, table: jax.Array) -> jax.Array:
    """DCT, quantise with the per-sample (N, 64) ``table``, dequantise and inverse-DCT one 0..255 plane."""
    basis = jnp.asarray(_BASIS)
    coef = 0.25 * _ALPHA * jnp.matmul(_blocks(plane) - 128.0, basis, precision=_HI)
    table = table[:, None, None, :]
    coef = _round_ste(coef / table) * table
    rec = 0.25 * jnp.matmul(coef * _ALPHA, basis.T, precision=_HI) + 128.0
    return _unblocks(rec)


def jpeg(x: jax.Array, quality) -> jax.Array:
    """JPEG-compress and decompress an NHWC (or HWC) RGB batch in [0, 1] at ``quality`` (DiffJPEG forward).

    ``quality`` is a scalar or one value per image, int or float, and may be traced: one compilation serves
    every quality. Returns float32 in [0, 1] with the input's shape.
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise JaxirInputError(f"jpeg expects an RGB image (H, W, 3) or batch (N, H, W, 3), got shape {x.shape}")
    squeeze = x.ndim == 3
    x = x[None] if squeeze else x
    n, h, w, _ = x.shape
    factor = jnp.broadcast_to(quality_to_factor(quality), (n,))
    tables = [jnp.maximum(jnp.asarray(t).reshape(64) * factor[:, None], 1.0) for t in (_Y_TABLE, _C_TABLE)]

    x = jnp.pad(x, ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0)))
    ycc = jnp.matmul(x * 255.0, jnp.asarray(_RGB2YCC).T, precision=_HI) + _CHROMA_SHIFT
    hp, wp = ycc.shape[1:3]
    y = _code_plane(ycc[..., 0], tables[0])
    chroma = []
    for c in (1, 2):
        sub = ycc[..., c].reshape(n, hp // 2, 2, wp // 2, 2).mean(axis=(2, 4))
        sub = _code_plane(sub, tables[1])
        chroma.append(jnp.repeat(jnp.repeat(sub, 2, axis=1), 2, axis=2))
    ycc = jnp.stack([y, *chroma], axis=-1)
    rgb = jnp.matmul(ycc - _CHROMA_SHIFT, jnp.asarray(_YCC2RGB).T, precision=_HI)
    out = jnp.clip(rgb, 0.0, 255.0)[:, :h, :w] / 255.0
    return out[0] if squeeze else out
