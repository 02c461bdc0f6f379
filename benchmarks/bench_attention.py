"""Self-attention at the SD 2.1 UNet's level-0 shape (4096 tokens = latent 64², 5 heads of 64, float32, batch 1):
jaxir's ``jaxir.layers.attention`` (``jax.nn.dot_product_attention``, XLA implementation) against formulations that
could replace it, and PyTorch's ``F.scaled_dot_product_attention`` (what diffusers calls) on the same CPU.

    python benchmarks/bench_attention.py [--tokens 4096] [--heads 5] [--repeats 5]
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/bench_attention.py

JAX variants (same maths, all jitted, inputs (B, T, heads·64) as jaxir's CrossAttention passes them):
  jaxir           jaxir.layers.attention (jax.nn.dot_product_attention)
  softmax         einsum logits, jax.nn.softmax, einsum
  deferred        einsum logits, p = exp(l − max), out = (p·v) / Σp: the division on (T, d) instead of (T, T)
  heads_major     deferred, q/k/v transposed to (B, heads, T, d) first
  flashQxK        (--flash) heads-major, query chunks of Q × key blocks of K, online softmax (running max and sum)
  chunk{N}_X      variant X over query chunks of N tokens (lax.map): logits N×T per head
  unrolled{N}_X   the same chunks as a Python loop (independent ops, which XLA:CPU may run concurrently)
Reported: min and median wall time, CPU time, XLA temp memory, max |Δ| against the jaxir variant.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--kv-tokens", type=int, default=None, help="default: --tokens (self-attention)")
    p.add_argument("--heads", type=int, default=5)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chunks", default="1024,512,256")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--flash", action="store_true", help="also the online-softmax (flash-style) variants")
    args = p.parse_args()

    import jax
    import jax.numpy as jnp

    from jaxir.layers import attention

    b, t, h, d = 1, args.tokens, args.heads, args.head_dim
    s = args.kv_tokens or t
    rng = np.random.default_rng(0)
    q = rng.standard_normal((b, t, h * d), dtype=np.float32)
    k = rng.standard_normal((b, s, h * d), dtype=np.float32)
    v = rng.standard_normal((b, s, h * d), dtype=np.float32)

    def split(z):
        return z.reshape(z.shape[0], z.shape[1], h, d)

    def softmax_attn(q, k, v, heads):
        logits = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(k)) / np.sqrt(d)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), split(v))
        return out.reshape(q.shape[0], q.shape[1], -1)

    def deferred_attn(q, k, v, heads):
        logits = jnp.einsum("bqhd,bkhd->bhqk", split(q) / np.sqrt(d), split(k))
        pexp = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
        out = jnp.einsum("bhqk,bkhd->bqhd", pexp, split(v))
        out = out / jnp.swapaxes(pexp.sum(-1), 1, 2)[..., None]
        return out.reshape(q.shape[0], q.shape[1], -1)

    def heads_major(q, k, v, heads):
        """deferred, with q, k, v transposed to (B, heads, T, d) once, so both products are plain batched matmuls
        over contiguous (T, d) / (d, S) panels."""
        qh, kh, vh = (jnp.swapaxes(split(z), 1, 2) for z in (q / np.sqrt(d), k, v))
        logits = jnp.einsum("bhqd,bhkd->bhqk", qh, kh)
        pexp = jnp.exp(logits - logits.max(-1, keepdims=True))
        out = jnp.einsum("bhqk,bhkd->bhqd", pexp, vh) / pexp.sum(-1)[..., None]
        return jnp.swapaxes(out, 1, 2).reshape(q.shape[0], q.shape[1], -1)

    def flash(qn, kn):
        """heads-major, query chunks of qn (lax.map) × key blocks of kn (lax.scan) with the running max / sum of the
        online softmax: the logits block (heads, qn, kn) stays small."""
        def attn(q, k, v, heads):
            b, tq, c = q.shape
            qh, kh, vh = (jnp.swapaxes(split(z), 1, 2) for z in (q / np.sqrt(d), k, v))
            ks = jnp.moveaxis(kh.reshape(b, h, s // kn, kn, d), 2, 0)
            vs = jnp.moveaxis(vh.reshape(b, h, s // kn, kn, d), 2, 0)

            def one(qc):
                def body(carry, kv):
                    m, l, acc = carry
                    kb, vb = kv
                    logits = jnp.einsum("bhqd,bhkd->bhqk", qc, kb)
                    m_new = jnp.maximum(m, logits.max(-1))
                    p = jnp.exp(logits - m_new[..., None])
                    corr = jnp.exp(m - m_new)
                    l = l * corr + p.sum(-1)
                    acc = acc * corr[..., None] + jnp.einsum("bhqk,bhkd->bhqd", p, vb)
                    return (m_new, l, acc), None
                init = (jnp.full(qc.shape[:3], -jnp.inf, qc.dtype), jnp.zeros(qc.shape[:3], qc.dtype),
                        jnp.zeros(qc.shape, qc.dtype))
                (_, l, acc), _ = jax.lax.scan(body, init, (ks, vs))
                return acc / l[..., None]

            qs = jnp.moveaxis(qh.reshape(b, h, tq // qn, qn, d), 2, 0)
            out = jnp.moveaxis(jax.lax.map(one, qs), 0, 2).reshape(b, h, tq, d)
            return jnp.swapaxes(out, 1, 2).reshape(b, tq, c)
        return attn

    def chunked(fn, n):
        def attn(q, k, v, heads):
            qs = q.reshape(q.shape[0], q.shape[1] // n, n, q.shape[2]).swapaxes(0, 1)
            out = jax.lax.map(lambda qc: fn(qc, k, v, heads), qs)
            return out.swapaxes(0, 1).reshape(q.shape)
        return attn

    def unrolled(fn, n):
        def attn(q, k, v, heads):
            parts = [fn(q[:, i:i + n], k, v, heads) for i in range(0, q.shape[1], n)]
            return jnp.concatenate(parts, axis=1)
        return attn

    variants = {"jaxir": attention, "softmax": softmax_attn, "deferred": deferred_attn, "heads_major": heads_major}
    for qn, kn in ((256, 1024), (512, 512), (256, 512), (1024, 1024)):
        if t % qn == 0 and s % kn == 0 and args.flash:
            variants[f"flash{qn}x{kn}"] = flash(qn, kn)
    for n in [int(c) for c in args.chunks.split(",") if c]:
        if t % n == 0 and n < t:
            variants[f"chunk{n}_jaxir"] = chunked(attention, n)
            variants[f"chunk{n}_deferred"] = chunked(deferred_attn, n)
            variants[f"chunk{n}_heads_major"] = chunked(heads_major, n)
            variants[f"unrolled{n}_jaxir"] = unrolled(attention, n)
            variants[f"unrolled{n}_deferred"] = unrolled(deferred_attn, n)

    print(f"# attention B={b} T={t} S={s} heads={h}×{d}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
          f"load {os.getloadavg()}")
    print("| variant | min s | median s | CPU s (min) | XLA temp (MiB) | max abs diff vs jaxir |")
    print("|---|---|---|---|---|---|")
    qj, kj, vj = map(jnp.asarray, (q, k, v))
    ref = None
    for name, fn in variants.items():
        compiled = jax.jit(lambda q, k, v, fn=fn: fn(q, k, v, h)).lower(qj, kj, vj).compile()
        out = np.asarray(jax.block_until_ready(compiled(qj, kj, vj)))
        ref = out if ref is None else ref
        times, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(compiled(qj, kj, vj))
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
        print(f"| {name} | {min(times):.3f} | {statistics.median(times):.3f} | {min(cpu):.3f} | {temp:.0f} | "
              f"{np.abs(out - ref).max():.1e} |", flush=True)
    if not args.no_torch:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(2)
        tq, tk, tv = (torch.from_numpy(split(a).transpose(0, 2, 1, 3).copy()) for a in (q, k, v))
        with torch.inference_mode():
            out = F.scaled_dot_product_attention(tq, tk, tv)
            times, cpu = [], []
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                F.scaled_dot_product_attention(tq, tk, tv)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        diff = np.abs(out.numpy().transpose(0, 2, 1, 3).reshape(b, t, h * d) - ref).max()
        print(f"| torch SDPA (flash, CPU) | {min(times):.3f} | {statistics.median(times):.3f} | {min(cpu):.3f} | "
              f"- | {diff:.1e} |")
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
