"""Blurring an NHWC batch with a kernel, border handled by reflection (as BasicSR's ``filter2D``).

The separable path convolves rows and columns with a 1-D kernel (isotropic Gaussians); the general path
convolves with a 2-D kernel per image (a traced kernel is fine: Real-ESRGAN draws one per sample).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxir.errors import JaxirInputError

_HI = jax.lax.Precision.HIGHEST


def _reflect_pad(x: jax.Array, ph: int, pw: int) -> jax.Array:
    h, w = x.shape[-3], x.shape[-2]
    if ph >= h or pw >= w:
        raise JaxirInputError(f"a {2 * ph + 1}x{2 * pw + 1} blur kernel needs images larger than "
                              f"{ph}x{pw} pixels for reflection padding, got {h}x{w}")
    pad = [(0, 0)] * (x.ndim - 3) + [(ph, ph), (pw, pw), (0, 0)]
    return jnp.pad(x, pad, mode="reflect")


def _planes(x: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
    """NHWC → (N·C, H, W, 1) so one single-channel convolution serves every channel."""
    n, h, w, c = x.shape
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(n * c, h, w, 1), (n, c)


def _unplanes(y: jax.Array, nc: tuple[int, ...]) -> jax.Array:
    n, c = nc
    return jnp.transpose(y.reshape(n, c, y.shape[1], y.shape[2]), (0, 2, 3, 1))


def _conv(planes: jax.Array, kernel_hw: jax.Array) -> jax.Array:
    # correlation with the flipped kernel == convolution; kernels here are symmetric or drawn at random,
    # and we follow F.conv2d (correlation), as BasicSR's filter2D does.
    return jax.lax.conv_general_dilated(planes, kernel_hw[:, :, None, None].astype(planes.dtype), (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HI)


def correlate_separable_valid(x: jax.Array, kernel_1d) -> jax.Array:
    """Correlate the H then W axes of an NHWC batch with one 1-D kernel, keeping only the valid region."""
    k = jnp.asarray(kernel_1d, x.dtype)
    planes, nc = _planes(x)
    return _unplanes(_conv(_conv(planes, k[:, None]), k[None, :]), nc)


def blur_separable(x: jax.Array, kernel_1d) -> jax.Array:
    """Convolve H then W with the same odd-length 1-D kernel, reflecting the border."""
    r = len(kernel_1d) // 2
    squeeze = x.ndim == 3
    x = x[None] if squeeze else x
    y = correlate_separable_valid(_reflect_pad(x, r, r), kernel_1d)
    return y[0] if squeeze else y


def blur_2d(x: jax.Array, kernel) -> jax.Array:
    """Correlate with one odd-size 2-D kernel (shared by the batch), reflecting the border."""
    k = jnp.asarray(kernel)
    squeeze = x.ndim == 3
    x = x[None] if squeeze else x
    planes, nc = _planes(_reflect_pad(x, k.shape[0] // 2, k.shape[1] // 2))
    y = _unplanes(_conv(planes, k), nc)
    return y[0] if squeeze else y


def blur_per_sample(x: jax.Array, kernels: jax.Array) -> jax.Array:
    """Correlate each image of an NHWC batch with its own (K, K) kernel from ``kernels`` (N, K, K)."""
    return jax.vmap(lambda im, k: blur_2d(im, k))(x, kernels)
