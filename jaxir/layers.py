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


# Query-chunk length above which non-causal attention is computed chunk by chunk (see ``attention``).
ATTENTION_QUERY_CHUNK = 256


def _attention_heads_major(q, k, v):
    """softmax(q·kᵀ)·v on heads-major (B, heads, T, d) arrays, q pre-scaled by 1/√d; normalised after the product
    with v (``exp(l − max)·v / Σ exp(l − max)``), so the division runs over (T, d) instead of (T, S)."""
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k)
    p = jnp.exp(logits - logits.max(-1, keepdims=True))
    return jnp.einsum("bhqk,bhkd->bhqd", p, v) / p.sum(-1)[..., None]


def attention(q, k, v, heads: int, causal: bool = False):
    """Scaled dot-product attention ``softmax(q·kᵀ/√d)·v`` (Vaswani et al. 2017, eq. 1) over (B, T, heads·d)
    projections; ``causal`` lets query i see keys j ≤ i only (CLIP's text mask, ``triu(-inf, 1)``).

    Short or causal sequences go through ``jax.nn.dot_product_attention``. Long non-causal ones (more than
    ``ATTENTION_QUERY_CHUNK`` queries, a multiple of it: the UNet/VAE self-attention at latent 64²) are computed
    on heads-major q/k/v over query chunks (``lax.map``), so one logits block is (heads, chunk, S) instead of
    (heads, T, S): on XLA:CPU this halves the SD 2.1 step's attention time and keeps peak memory at PyTorch's
    (``benchmarks/results_attention.md``); outputs agree with the unchunked form to float32 rounding (≈1e-7).
    """
    b, tq, c = q.shape
    d = c // heads
    dtype = jnp.result_type(q, k, v)   # e.g. bf16 weights: float32 queries, bfloat16 text keys → one dtype
    q, k, v = (z.astype(dtype) for z in (q, k, v))
    split = lambda z: z.reshape(z.shape[0], z.shape[1], heads, d)  # noqa: E731
    chunk = ATTENTION_QUERY_CHUNK
    if causal or tq <= chunk or tq % chunk:
        return jax.nn.dot_product_attention(split(q), split(k), split(v), is_causal=causal).reshape(b, tq, c)
    qh, kh, vh = (jnp.swapaxes(split(z), 1, 2) for z in (q * d**-0.5, k, v))
    q_chunks = jnp.moveaxis(qh.reshape(b, heads, tq // chunk, chunk, d), 2, 0)
    out = jax.lax.map(lambda qc: _attention_heads_major(qc, kh, vh), q_chunks)
    return jnp.swapaxes(jnp.moveaxis(out, 0, 2).reshape(b, heads, tq, d), 1, 2).reshape(b, tq, c)
