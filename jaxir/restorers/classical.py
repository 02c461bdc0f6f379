"""Restorers that need no weights: the classical floor of the study.

* ``bicubic`` — MATLAB-style bicubic upsampling by the degradation's α (identity when α = 1).
* ``wiener`` — Wiener deconvolution with the known blur kernel (Wiener 1949; Gonzalez & Woods, eq. 5.8-6):
  ``X̂ = conj(H) Y / (|H|² + K)`` per frequency, with K the noise-to-signal power ratio. The image is
  extended by reflection (the border model of the degradation) before the FFT and cropped after, to keep
  circular wrap-around out of the result.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.degradations.pipeline import Degradation
from jaxir.degradations.resize import imresize
from jaxir.restorers.base import Restorer, deterministic, register

# K = floor + β² / SIGNAL_POWER: the floor absorbs 8-bit quantisation and border mismatch when β = 0;
# SIGNAL_POWER ≈ the variance of natural images on the [0, 1] scale.
WIENER_NSR_FLOOR = 1e-3
SIGNAL_POWER = 0.05


def bicubic(lq: jax.Array, degradation: Degradation) -> jax.Array:
    """Upsample by α with MATLAB bicubic (no antialias needed when enlarging)."""
    if degradation.scale == 1:
        return lq
    return jnp.clip(imresize(lq, scale=degradation.scale), 0.0, 1.0)


def _otf(kernel: np.ndarray, height: int, width: int) -> np.ndarray:
    """Optical transfer function: the kernel zero-padded to (height, width), centred on pixel (0, 0)."""
    kh, kw = kernel.shape
    psf = np.zeros((height, width))
    psf[:kh, :kw] = kernel
    psf = np.roll(psf, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return np.fft.rfft2(psf)


@functools.partial(jax.jit, static_argnames=("pad",))
def _wiener(lq, otf, nsr, pad: int):
    x = jnp.pad(lq, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    h, w = x.shape[1], x.shape[2]
    spectrum = jnp.fft.rfft2(x, axes=(1, 2))
    gain = jnp.conj(otf) / (jnp.abs(otf) ** 2 + nsr)
    restored = jnp.fft.irfft2(spectrum * gain[None, :, :, None], s=(h, w), axes=(1, 2))
    return jnp.clip(restored[:, pad:h - pad, pad:w - pad, :], 0.0, 1.0).astype(lq.dtype)


def wiener(lq: jax.Array, degradation: Degradation, nsr: float | None = None) -> jax.Array:
    """Non-blind Wiener deconvolution of ``lq`` with ``degradation.kernel()`` (blur-only degradations)."""
    kernel = degradation.kernel()
    if kernel is None:
        return lq
    if nsr is None:
        nsr = WIENER_NSR_FLOOR + degradation.noise**2 / SIGNAL_POWER
    pad = min(kernel.shape[0], lq.shape[-3] - 1, lq.shape[-2] - 1)
    squeeze = lq.ndim == 3
    batch = lq[None] if squeeze else lq
    otf = _otf(kernel, batch.shape[1] + 2 * pad, batch.shape[2] + 2 * pad)
    out = _wiener(batch, jnp.asarray(otf.astype(np.complex64)), jnp.float32(nsr), pad)
    return out[0] if squeeze else out


register(Restorer("bicubic", lambda settings: deterministic(bicubic), ("sr", "deblur", "denoise", "dejpeg"), "classical",
                  "MATLAB bicubic upsampling by the degradation's scale; identity at scale 1"))
register(Restorer("wiener", lambda settings: deterministic(wiener), ("deblur",), "classical",
                  "Wiener deconvolution with the known kernel, K = 1e-3 + β²/0.05", uses_known_degradation=True))
