"""The radial power spectrum of an image: how much signal each spatial frequency carries, averaged over
orientations — the study's Fig. 5 compares that of a clean image with that of its autoencoder round trip to show
which frequencies the latent space drops.

``P(k) = mean over |(u, v)| ∈ [k, k + 1) of |F(u, v)|² / (H·W)``, F the 2-D DFT of the luminance
(ITU-R BT.601 Y, the study's PSNR channel, on a 0–1 scale) after removing its mean; k in cycles per image along
the shorter side (frequencies of the longer side rescaled to it), from 1 up to the Nyquist frequency min(H, W) / 2.
"""

from __future__ import annotations

import numpy as np

from jaxir.metrics.color import rgb_to_y


def radial_power_spectrum(image) -> tuple[np.ndarray, np.ndarray]:
    """``(k, P(k))`` of an HWC RGB image in [0, 1] (module docstring)."""
    y = np.asarray(rgb_to_y(np.asarray(image, np.float64)), np.float64)[..., 0] / 255.0
    h, w = y.shape
    power = np.abs(np.fft.fft2(y - y.mean())) ** 2 / (h * w)
    side = min(h, w)
    fy, fx = np.fft.fftfreq(h) * side, np.fft.fftfreq(w) * side
    radius = np.hypot(fy[:, None], fx[None, :])
    bins = np.floor(radius).astype(int).ravel()
    k = np.arange(1, side // 2 + 1)
    sums = np.bincount(bins, weights=power.ravel(), minlength=k[-1] + 1)
    counts = np.bincount(bins, minlength=k[-1] + 1)
    return k, sums[k] / np.maximum(counts[k], 1)
