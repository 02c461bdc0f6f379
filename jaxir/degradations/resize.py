"""Image resizing in the two conventions restoration papers use, as exact linear operators.

* :func:`imresize` — MATLAB's ``imresize`` (bicubic, Keys a = -0.5, antialiased when shrinking, symmetric
  border), the convention of DIV2K's LR images and of BasicSR's ``matlab_functions.imresize``.
* :func:`resize_torch` — PyTorch ``F.interpolate`` with ``mode`` bicubic (a = -0.75, no antialias, clamped
  border), bilinear (``align_corners=False``) or area (adaptive average pooling): the convention of
  Real-ESRGAN's degradation pipeline and of most PyTorch code; ``bicubic_aa`` is ``F.interpolate(...,
  mode="bicubic", antialias=True)`` (PIL's filter: a = -0.5, support widened by the shrink factor, weights
  renormalised at the border), which DiffBIR uses to resize around its diffusion stage.

Both resize each spatial axis with a dense (out × in) weight matrix built in NumPy float64 at trace time (sizes
are static), so the result is jit-able, differentiable and exact to matmul precision.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a`` (R. Keys, IEEE TASSP 1981, eq. 15)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = (a + 2) * ax3 - (a + 3) * ax2 + 1
    far = a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a
    return np.where(ax <= 1, near, np.where(ax < 2, far, 0.0))


@functools.lru_cache(maxsize=256)
def matlab_contributions(in_len: int, out_len: int, scale: float, antialias: bool = True):
    """MATLAB ``imresize``'s ``contributions`` along one axis: per output pixel, the source indices and
    normalised bicubic weights (Keys a = -0.5). Antialiasing widens the kernel by 1/scale when shrinking;
    taps outside the image are mirrored (``[1:n, n:-1:1]``). Returns (indices, weights), each (out_len, taps)."""
    shrink_aa = scale < 1 and antialias
    kernel_width = 4.0 / scale if shrink_aa else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    w = scale * _keys_cubic(scale * dist, -0.5) if shrink_aa else _keys_cubic(dist, -0.5)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    return mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)], w


@functools.lru_cache(maxsize=256)
def matlab_weights(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """(out_len, in_len) matrix of MATLAB ``imresize`` bicubic along one axis (see :func:`matlab_contributions`)."""
    src, w = matlab_contributions(in_len, out_len, scale, antialias)
    mat = np.zeros((out_len, in_len))
    np.add.at(mat, (np.repeat(np.arange(out_len), src.shape[1]), src.ravel()), w.ravel())
    return mat


@functools.lru_cache(maxsize=256)
def torch_weights(in_len: int, out_len: int, mode: str, ratio: float) -> np.ndarray:
    """(out_len, in_len) weights of PyTorch ``F.interpolate(..., align_corners=False)`` along one axis.

    ``ratio`` is input/output pixel spacing (1/scale_factor when a scale factor is given), as in ATen's
    ``area_pixel_compute_scale``.
    """
    mat = np.zeros((out_len, in_len))
    dst = np.arange(out_len, dtype=np.float64)
    if mode == "area":  # adaptive_avg_pool: [floor(i*in/out), ceil((i+1)*in/out))
        for i in range(out_len):
            start, end = (i * in_len) // out_len, -((-(i + 1) * in_len) // out_len)
            mat[i, start:end] = 1.0 / (end - start)
        return mat
    src = (dst + 0.5) * ratio - 0.5
    if mode == "bilinear":
        src = np.maximum(src, 0.0)
        i0 = np.floor(src).astype(np.int64)
        frac = src - i0
        i1 = np.minimum(i0 + 1, in_len - 1)
        np.add.at(mat, (np.arange(out_len), np.minimum(i0, in_len - 1)), 1 - frac)
        np.add.at(mat, (np.arange(out_len), i1), frac)
        return mat
    if mode == "bicubic":
        i0 = np.floor(src).astype(np.int64)
        frac = src - i0
        for k in range(-1, 3):
            w = _keys_cubic(frac - k, -0.75)
            np.add.at(mat, (np.arange(out_len), np.clip(i0 + k, 0, in_len - 1)), w)
        return mat
    if mode == "bicubic_aa":
        return _antialiased_cubic_weights(in_len, out_len, ratio)
    raise JaxirInputError(f"unknown resize mode {mode!r}; use 'bicubic', 'bicubic_aa', 'bilinear' or 'area'")


def _antialiased_cubic_weights(in_len: int, out_len: int, ratio: float) -> np.ndarray:
    """ATen's ``_upsample_bicubic2d_aa`` (``UpSampleKernel.cpp``, ``HelperInterpCubic::aa_filter``; the PIL
    ``ImagingResample`` scheme): output pixel i is centred at ``ratio·(i + ½)`` in input coordinates; the filter
    (Keys a = −0.5) is stretched by ``max(ratio, 1)``, covers ``[center − support, center + support)`` with
    ``support = 2·max(ratio, 1)``, is truncated at the border and renormalised to sum 1."""
    stretch = max(ratio, 1.0)
    support = 2.0 * stretch
    mat = np.zeros((out_len, in_len))
    for i in range(out_len):
        center = ratio * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_len)
        taps = np.arange(lo, hi)
        w = _keys_cubic((taps - center + 0.5) / stretch, -0.5)
        mat[i, lo:hi] = w / w.sum()
    return mat


def apply_separable(x: jax.Array, mat_h: np.ndarray, mat_w: np.ndarray) -> jax.Array:
    """Apply per-axis linear operators to the H and W axes of an NHWC (or HWC) array."""
    dtype = x.dtype
    mh, mw = jnp.asarray(mat_h, dtype), jnp.asarray(mat_w, dtype)
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,...hwc->...owc", mh, x, precision=hi)
    return jnp.einsum("pw,...owc->...opc", mw, y, precision=hi)


def _check_size(h: int, w: int, out_h: int, out_w: int) -> None:
    if out_h < 1 or out_w < 1:
        raise JaxirInputError(f"resizing {h}x{w} gives an empty {out_h}x{out_w} image")


def imresize(x: jax.Array, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True) -> jax.Array:
    """MATLAB ``imresize(x, scale)`` / ``imresize(x, [h w])``, bicubic, on NHWC or HWC float arrays.

    With ``scale``, the output is ``ceil(scale * size)`` and the kernel uses ``scale`` itself (as MATLAB does);
    with ``size``, each axis uses its own ``out/in`` ratio. No clipping, no rounding (MATLAB rounds only for
    integer inputs).
    """
    h, w = x.shape[-3], x.shape[-2]
    if (scale is None) == (size is None):
        raise JaxirInputError("imresize: give exactly one of scale and size")
    if scale is not None:
        out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
        sh = sw = float(scale)
    else:
        out_h, out_w = size
        sh, sw = out_h / h, out_w / w
    _check_size(h, w, out_h, out_w)
    return apply_separable(x, matlab_weights(h, out_h, sh, antialias), matlab_weights(w, out_w, sw, antialias))


def resize_torch(x: jax.Array, scale: float | None = None, size: tuple[int, int] | None = None,
                 mode: str = "bicubic") -> jax.Array:
    """PyTorch ``F.interpolate(x, scale_factor=scale | size=size, mode=mode, align_corners=False)`` on NHWC;
    ``mode="bicubic_aa"`` is ``mode="bicubic", antialias=True``."""
    h, w = x.shape[-3], x.shape[-2]
    if (scale is None) == (size is None):
        raise JaxirInputError("resize_torch: give exactly one of scale and size")
    out_h, out_w = (math.floor(h * scale), math.floor(w * scale)) if scale is not None else size
    _check_size(h, w, out_h, out_w)  # before the ratios below, which divide by the output size
    rh, rw = (1.0 / scale, 1.0 / scale) if scale is not None else (h / out_h, w / out_w)
    return apply_separable(x, torch_weights(h, out_h, mode, rh), torch_weights(w, out_w, mode, rw))
