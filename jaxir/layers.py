"""Flax building blocks shared by the ported networks, with PyTorch-exact semantics.

Conventions: NHWC activations; parameter names follow flax (``kernel``/``bias``/``scale``); PyTorch's
``Conv2d`` weight (O, I, kH, kW) maps to a flax kernel (kH, kW, I, O), ``Linear`` (O, I) to (I, O).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def group_norm(epsilon: float = 1e-5, num_groups: int = 32, name: str | None = None) -> nn.GroupNorm:
    """``torch.nn.GroupNorm(num_groups, C, eps)`` over NHWC: statistics in float32 (LDM's GroupNorm32) with the
    two-pass variance (flax's fast ``E[x²] − E[x]²`` loses digits on large activations)."""
    return nn.GroupNorm(num_groups=num_groups, epsilon=epsilon, use_fast_variance=False, dtype=jnp.float32,
                        name=name)


def conv(features: int, kernel: int = 3, stride: int = 1, padding: int | None = None, name: str | None = None,
         dtype=None) -> nn.Conv:
    """``torch.nn.Conv2d(…, kernel, stride, padding)`` with symmetric padding (default ``kernel // 2``)."""
    pad = kernel // 2 if padding is None else padding
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   name=name, dtype=dtype)


def upsample_nearest2x(x):
    """``F.interpolate(x, scale_factor=2, mode="nearest")`` on NHWC."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
    """Sinusoidal timestep embedding of LDM's ``openaimodel.timestep_embedding``: ``[cos(t·f), sin(t·f)]`` with
    ``f_i = max_period^(−i/half)``, i < half = dim // 2 (zero-padded for odd dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


def gelu_exact(x):
    """PyTorch's default GELU, ``x·Φ(x)`` (not the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


def attention(q, k, v, heads: int, causal: bool = False):
    """Scaled dot-product attention over (B, T, heads·d) projections, via ``jax.nn.dot_product_attention``;
    ``causal`` lets query i see keys j ≤ i only (CLIP's text mask, ``triu(-inf, 1)``)."""
    b, tq, c = q.shape
    d = c // heads
    split = lambda z: z.reshape(z.shape[0], z.shape[1], heads, d)  # noqa: E731
    out = jax.nn.dot_product_attention(split(q), split(k), split(v), is_causal=causal)
    return out.reshape(b, tq, c)
