"""Colour correction of a diffusion output towards its condition image (the last step of DiffBIR and SUPIR).

* :func:`wavelet_color_fix` — the high frequencies of the output plus the low frequencies of the condition
  (DiffBIR ``diffbir/utils/common.py`` ``wavelet_reconstruction``; SUPIR ``SUPIR/utils/colorfix.py``, both after
  StableSR's colorfix): five levels of an à-trous wavelet, each a blur with the 3×3 binomial kernel
  ``[1, 2, 1]ᵀ[1, 2, 1]/16`` dilated by ``2^i`` on a replicate-padded image;
  ``out = Σ_i (x_i − x_{i+1}) of the output + x_5 of the condition``.
* :func:`adain_color_fix` — adaptive instance normalisation: per image and channel, the output's mean and standard
  deviation replaced by the condition's (unbiased variance + 1e-5, as ``calc_mean_std`` there).

Images NHWC; both functions are jit-able and work on any range (DiffBIR applies them in [0, 1]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

WAVELET_LEVELS = 5
_BINOMIAL = np.array([0.25, 0.5, 0.25], np.float32)   # the 3×3 kernel is its outer product
ADAIN_EPS = 1e-5


def wavelet_blur(x: jax.Array, dilation: int) -> jax.Array:
    """The binomial 3×3 blur with taps ``dilation`` apart, replicate border (separable: rows, then columns)."""
    d = dilation
    p = jnp.pad(x, ((0, 0), (d, d), (d, d), (0, 0)), mode="edge")
    rows = _BINOMIAL[0] * p[:, :-2 * d] + _BINOMIAL[1] * p[:, d:-d] + _BINOMIAL[2] * p[:, 2 * d:]
    return _BINOMIAL[0] * rows[:, :, :-2 * d] + _BINOMIAL[1] * rows[:, :, d:-d] + _BINOMIAL[2] * rows[:, :, 2 * d:]


def wavelet_decomposition(x: jax.Array, levels: int = WAVELET_LEVELS) -> tuple[jax.Array, jax.Array]:
    """``(high, low)``: the sum of the detail bands ``x_i − x_{i+1}`` and the residual low band ``x_levels``."""
    high = jnp.zeros_like(x)
    for i in range(levels):
        low = wavelet_blur(x, 2 ** i)
        high = high + (x - low)
        x = low
    return high, x


def wavelet_color_fix(output: jax.Array, condition: jax.Array) -> jax.Array:
    """The output's wavelet detail bands on the condition's low band (module docstring)."""
    high, _ = wavelet_decomposition(output)
    _, low = wavelet_decomposition(condition)
    return high + low


def _mean_std(x: jax.Array):
    n = x.shape[1] * x.shape[2]
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.sum((x - mean) ** 2, axis=(1, 2), keepdims=True) / (n - 1)
    return mean, jnp.sqrt(var + ADAIN_EPS)


def adain_color_fix(output: jax.Array, condition: jax.Array) -> jax.Array:
    """``(output − μ_o)/σ_o · σ_c + μ_c`` per image and channel (module docstring)."""
    mean_o, std_o = _mean_std(output)
    mean_c, std_c = _mean_std(condition)
    return (output - mean_o) / std_o * std_c + mean_c


COLOR_FIXES = {"wavelet": wavelet_color_fix, "adain": adain_color_fix, "none": lambda output, condition: output}
