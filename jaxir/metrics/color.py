"""Colour conversions with the conventions of the metrics literature.

* :func:`rgb_to_y` — ITU-R BT.601 luma on the studio range, as MATLAB ``rgb2ycbcr`` and BasicSR's
  ``bgr2ycbcr(y_only=True)``: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1]; the
  result is on the 0..255 scale (16..235).
* :func:`rgb_to_gray_uint8` — MATLAB ``rgb2gray`` of a uint8 image (the input of the NIQE release code):
  ``round(0.298936021293775 R + 0.587043074451121 G + 0.114020904255103 B)`` on 0..255 values, where the
  coefficients are the first row of the inverse NTSC (YIQ) matrix.
"""

from __future__ import annotations

import jax.numpy as jnp

BT601_Y = (65.481, 128.553, 24.966)
MATLAB_RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def quantize_uint8(x):
    """[0, 1] → integer values 0..255 (as float), rounding half up as ``im2uint8``/image writers do."""
    return jnp.floor(jnp.clip(x, 0.0, 1.0) * 255.0 + 0.5)


def rgb_to_y(x):
    """BT.601 Y (0..255 scale) of RGB in [0, 1], keeping a trailing channel axis of 1."""
    r, g, b = BT601_Y
    return 16.0 + (r * x[..., 0:1] + g * x[..., 1:2] + b * x[..., 2:3])


def rgb_to_gray_uint8(x):
    """MATLAB ``rgb2gray`` on the uint8 version of RGB ``x`` in [0, 1]; returns 0..255 integers as float (..., H, W)."""
    q = quantize_uint8(x)
    r, g, b = MATLAB_RGB2GRAY
    return jnp.floor(r * q[..., 0] + g * q[..., 1] + b * q[..., 2] + 0.5)
