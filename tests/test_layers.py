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
