"""Where the time and memory of bench_ldm's ControlNet + UNet step go, and what measured changes to the JAX side
would buy (the model code itself is not changed: variants are applied here, at run time).

    python benchmarks/profile_ldm.py --side torch --size 64 --trace
    python benchmarks/profile_ldm.py --side jax --size 64 --trace
    python benchmarks/profile_ldm.py --side jax --size 64 --attention chunk:1024 --malloc-trim

Uses the weights ``bench_ldm.py`` prepared (``--cache-dir``, default /tmp/jaxir_bench_ldm/full) and compares the
output with the PyTorch output it saved there (``outputs/torch_unet_{size}.npy``). One side, one configuration per
process; prints one JSON summary line (prefixed ``RESULT``) and, with ``--trace``, a breakdown of one call:

* JAX: ``jax.profiler`` trace (perfetto JSON) of one call; every XLA:CPU thunk is mapped to its HLO instruction and
  that instruction's ``op_name`` metadata (the flax module path), then summed by network (ControlNet / UNet) and by
  kind (convolutions, attention core, attention projections, feed-forward, norms, other).
* PyTorch: ``torch.profiler`` self CPU time per aten op, summed by the same kinds, and per network
  (``record_function``).

Variants (JAX): ``--attention xla`` (jaxir's ``jax.nn.dot_product_attention``), ``chunk:N`` (the same maths over
query chunks of N tokens through ``lax.map``: logits N×T instead of T×T per head), ``hmchunk:N``
(``bench_ldm.chunked_attention(N, heads_major=True)``) or ``none`` (ablation: the attention core replaced by ``v``,
to time everything else); ``--part controlnet`` times the ControlNet alone; ``--precision`` sets
``jax.default_matmul_precision``; ``--malloc-trim`` returns freed heap to the OS after loading and compiling
(glibc ``malloc_trim(0)``). XLA flags: set ``XLA_FLAGS`` in the environment.

Caveat: with ``--xla_cpu_experimental_ynn_fusion_type=`` the trace under-counts (convolution and dot thunks seem
to be recorded at dispatch only): use the per-op breakdown of the default flags, or ablations.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_ldm as B

KINDS = ("convolution", "attention core", "attention projections", "feed-forward", "norms", "other")


def kind_of_op_name(op_name: str) -> str:
    parts = op_name.split("/")
    last = parts[-1]
    if "conv_general_dilated" in last:
        return "convolution"
    if any(p in ("attn1", "attn2") for p in parts):
        if any(p in ("to_q", "to_k", "to_v", "to_out_0") for p in parts):
            return "attention projections"
        return "attention core"
    if "ff" in parts:
        return "feed-forward"
    if any(re.fullmatch(r"(norm\d?|in_layers_0|out_layers_0|out_0)", p) for p in parts):
        return "norms"
    if any(p in ("proj_in", "proj_out", "emb_layers_1", "skip_connection") or p.startswith("zero_convs")
           or p == "middle_block_out_0" for p in parts) and "dot_general" in last:
        return "attention projections" if any(p in ("proj_in", "proj_out") for p in parts) else "other"
    return "other"


def net_of_op_name(op_name: str) -> str:
    if "/ControlNet/" in op_name:
        return "ControlNet"
    if "/UNetModel/" in op_name:
        return "UNet"
    return "other"


def rss() -> int:
    return B.current_rss_bytes()


def malloc_trim():
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def chunked_attention(chunk: int):
    from jaxir.layers import attention

    def attn(q, k, v, heads, causal=False):
        import jax

        b, tq, c = q.shape
        if causal or tq <= chunk or tq % chunk:
            return attention(q, k, v, heads, causal)
        n = tq // chunk
        qs = q.reshape(b, n, chunk, c).swapaxes(0, 1)
        out = jax.lax.map(lambda qc: attention(qc, k, v, heads), qs)
        return out.swapaxes(0, 1).reshape(b, tq, c)

    return attn


def jax_side(args) -> dict:
    import jax
    import jax.numpy as jnp

    import jaxir.models.unet as unet_module
    from checkpoints_conversion.unet_keys import convert_controlnet, convert_unet
    from jaxir.models.controlnet import ControlNet
    from jaxir.models.unet import UNetModel

    res = dict(side="jax", size=args.size, attention=args.attention, precision=args.precision,
               malloc_trim=args.malloc_trim, xla_flags=os.environ.get("XLA_FLAGS", ""), part=args.part)
    if args.attention.startswith("chunk:"):
        unet_module.attention = chunked_attention(int(args.attention.split(":")[1]))
    elif args.attention.startswith("hmchunk:"):
        unet_module.attention = B.chunked_attention(int(args.attention.split(":")[1]), heads_major=True)
    elif args.attention == "none":   # ablation: the attention core replaced by v (shapes kept, no softmax/products)
        unet_module.attention = lambda q, k, v, heads, causal=False: (
            v if v.shape[1] == q.shape[1] else jax.numpy.broadcast_to(v.mean(1, keepdims=True), q.shape))
    res["rss_imports"] = rss()
    unet_cfg, control_cfg, _ = B.jaxir_configs(args.tiny)
    kw = B.diffusers_kwargs(args.tiny)
    cache = Path(args.cache_dir)


    t0 = time.perf_counter()
    data = {k: jnp.asarray(v) for k, v in B.inputs("unet", args.size, args.batch, kw["context_dim"]).items()}
    up = B.to_device(convert_unet(B.NpyDir(cache / "unet"), unet_cfg, layout="diffusers"))
    cp = B.to_device(convert_controlnet(B.NpyDir(cache / "controlnet"), control_cfg, layout="diffusers"))
    res["load_s"] = time.perf_counter() - t0
    res["rss_loaded"] = rss()
    if args.malloc_trim:
        malloc_trim()
        res["rss_loaded_trimmed"] = rss()
    unet, control = UNetModel(unet_cfg), ControlNet(control_cfg)
    scales = jnp.ones((control_cfg.num_outputs,), jnp.float32)

    def step(up, cp, x, hint, t, ctx, scales):
        if args.part == "controlnet":
            return control.apply({"params": cp}, x, hint, t, ctx, control_scales=scales)
        features = control.apply({"params": cp}, x, hint, t, ctx, control_scales=scales)
        if args.part == "unet":   # the UNet alone, with precomputed-looking features (stop_gradient: still computed)
            features = jax.tree.map(jnp.zeros_like, features)
        return unet.apply({"params": up}, x, t, ctx, control=features)

    call_args = (up, cp, data["x"], data["hint"], data["t"], data["ctx"], scales)
    t0 = time.perf_counter()
    if args.precision:
        with jax.default_matmul_precision(args.precision):
            compiled = jax.jit(step).lower(*call_args).compile()
    else:
        compiled = jax.jit(step).lower(*call_args).compile()
    res["compile_s"] = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    res["temp_bytes"] = mem.temp_size_in_bytes
    res["rss_compiled"] = rss()
    if args.malloc_trim:
        malloc_trim()
        res["rss_compiled_trimmed"] = rss()
    hlo = compiled.as_text()
    res["peak_setup"] = B.peak_rss_bytes()
    B.reset_peak_rss()
    out = jax.block_until_ready(compiled(*call_args))
    times, cpu = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(compiled(*call_args))
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    res.update(times=times, cpu=cpu, load=os.getloadavg(), peak_calls=B.peak_rss_bytes())
    ref = Path(args.cache_dir) / "outputs" / f"torch_unet_{args.size}.npy"
    if args.part == "step" and ref.exists() and args.batch == 1:
        res["rel_err_vs_torch"] = B.rel_err(np.asarray(out), np.load(ref))
    if args.trace:
        res["breakdown"] = jax_trace(compiled, call_args, hlo)
    return res


def jax_trace(compiled, call_args, hlo: str) -> dict:
    import jax

    names = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?metadata=\{op_name=\"([^\"]*)\"", hlo, re.MULTILINE):
        names[m.group(1)] = m.group(2)
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        t = time.perf_counter()
        jax.block_until_ready(compiled(*call_args))
        wall = time.perf_counter() - t
        jax.profiler.stop_trace()
        path = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)[0]
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by = collections.Counter()
    unmapped = collections.Counter()
    top = collections.Counter()
    for e in events:
        if e.get("ph") != "X":
            continue
        name, dur = e["name"], e.get("dur", 0) / 1e6
        if name in names:
            op = names[name]
            by[(net_of_op_name(op), kind_of_op_name(op))] += dur
            top[re.sub(r"_\d+", "_N", "/".join(op.split("/")[2:]))] += dur
        elif re.fullmatch(r"[\w\-]+(\.\d+)?", name) and not name[0].isupper():
            unmapped[name] += dur
    return dict(wall=wall, by={f"{n} | {k}": v for (n, k), v in sorted(by.items())},
                unmapped=dict(unmapped.most_common(12)), unmapped_total=sum(unmapped.values()),
                top_ops=dict(top.most_common(25)))


def torch_side(args) -> dict:
    import torch

    class A:
        pass

    a = A()
    a.what, a.size, a.batch, a.tiny = "unet", args.size, args.batch, args.tiny
    side = B.TorchSide(a, Path(args.cache_dir))
    res = dict(side="torch", size=args.size, load_s=side.load_s, rss_loaded=rss())
    res["peak_setup"] = B.peak_rss_bytes()
    B.reset_peak_rss()
    side.run()
    times, cpu = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        side.run()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    res.update(times=times, cpu=cpu, load=os.getloadavg(), peak_calls=B.peak_rss_bytes())
    if args.trace:
        import diffusers
        from torch.profiler import ProfilerActivity, profile

        # per network: wrap the two module calls
        orig = {}
        for cls, tag in ((diffusers.ControlNetModel, "ControlNet"), (diffusers.UNet2DConditionModel, "UNet")):
            orig[cls] = cls.forward

            def wrapped(self, *a_, __f=cls.forward, __tag=tag, **k_):
                with torch.profiler.record_function(f"NET {__tag}"):
                    return __f(self, *a_, **k_)
            cls.forward = wrapped
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            side.run()
            wall = time.perf_counter() - t
        for cls, f in orig.items():
            cls.forward = f
        kinds = collections.Counter()
        ops = collections.Counter()
        nets = {}
        for ev in prof.key_averages():
            if ev.key.startswith("NET "):
                nets[ev.key[4:]] = ev.cpu_time_total / 1e6
                continue
            self_s = ev.self_cpu_time_total / 1e6
            ops[ev.key] += self_s
            kinds[torch_kind(ev.key)] += self_s
        res["breakdown"] = dict(wall=wall, nets=nets, kinds=dict(kinds), top_ops=dict(ops.most_common(20)))
    return res


def torch_kind(key: str) -> str:
    if "conv" in key:
        return "convolution"
    if "scaled_dot_product" in key or "flash_attention" in key or key in ("aten::bmm", "aten::baddbmm",
                                                                           "aten::_softmax"):
        return "attention core"
    if key in ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul"):
        return "dense (all linear layers)"
    if "norm" in key:
        return "norms"
    return "other"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", choices=("jax", "torch"), required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--attention", default="xla", help="xla | chunk:N | hmchunk:N | none (ablation)")
    p.add_argument("--precision", default=None, help="jax.default_matmul_precision value")
    p.add_argument("--malloc-trim", action="store_true")
    p.add_argument("--part", choices=("step", "controlnet", "unet"), default="step")
    p.add_argument("--trace", action="store_true")
    args = p.parse_args()
    args.cache_dir = args.cache_dir or f"/tmp/jaxir_bench_ldm/{'tiny' if args.tiny else 'full'}"
    res = jax_side(args) if args.side == "jax" else torch_side(args)
    res["median_s"] = statistics.median(res["times"])
    res["min_s"] = min(res["times"])
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
