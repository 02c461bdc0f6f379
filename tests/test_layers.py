"""Shared layers against PyTorch: attention (both the short and the query-chunked path)."""

import numpy as np
import pytest
import torch

from jaxir import layers


@pytest.mark.parametrize("tq, causal", [(77, True), (200, False), (2 * layers.ATTENTION_QUERY_CHUNK, False),
                                        (3 * layers.ATTENTION_QUERY_CHUNK, False)])
def test_attention_matches_torch_sdpa(tq, causal):
    rng = np.random.default_rng(tq)
    heads, d, s = 3, 16, tq if causal else 96
    q = rng.standard_normal((2, tq, heads * d)).astype(np.float32) * 2
    k = rng.standard_normal((2, s, heads * d)).astype(np.float32) * 2
    v = rng.standard_normal((2, s, heads * d)).astype(np.float32)
    to_torch = lambda z: torch.from_numpy(z).reshape(2, z.shape[1], heads, d).transpose(1, 2)  # noqa: E731
    want = torch.nn.functional.scaled_dot_product_attention(to_torch(q), to_torch(k), to_torch(v), is_causal=causal)
    want = want.transpose(1, 2).reshape(2, tq, heads * d).numpy()
    got = np.asarray(layers.attention(q, k, v, heads, causal=causal))
    assert np.abs(got - want).max() <= 3e-6 * np.abs(want).max()


@pytest.mark.parametrize("tq", [77, 2 * layers.ATTENTION_QUERY_CHUNK])
def test_attention_takes_mixed_precision_inputs(tq):
    """bf16 weights give float32 queries (after float32 GroupNorm) and bfloat16 keys/values (a bf16 text feature):
    both are brought to their common dtype, and the result equals the float32 attention on the same rounded
    inputs."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, tq, 32)).astype(np.float32)
    k, v = (jnp.asarray(rng.standard_normal((1, 77, 32)), jnp.bfloat16) for _ in range(2))
    got = layers.attention(jnp.asarray(q), k, v, heads=2)
    want = layers.attention(jnp.asarray(q), k.astype(jnp.float32), v.astype(jnp.float32), heads=2)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
