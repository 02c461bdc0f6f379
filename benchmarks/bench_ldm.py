"""One DiffBIR denoising step (IRControlNet + UNet, SD 2.1-base sizes) and the SD VAE: jaxir (JAX/Flax) against
diffusers (PyTorch) on this CPU, time and peak memory.

    python benchmarks/bench_ldm.py              # full: UNet step at latent 32² and 64², VAE at 256² and 512²
    python benchmarks/bench_ldm.py --quick      # smoke test: latent 32² step and VAE 256², 1 timed round
    python benchmarks/bench_ldm.py --tiny       # the same protocol with small channel widths (fast iteration)
    python benchmarks/bench_ldm.py --what restore --restore-sizes 512 --steps 50 --variants no-ynn --repeats 1

What is compared (random weights, seeded, float32, batch ``--batch``, default 1):

* ``unet``: ControlLDM's ε step, the IRControlNet's 13 residuals (all control scales 1) added to the UNet.
  PyTorch: diffusers ``ControlNetModel(in_channels=8)`` fed ``cat(z_t, c_img)`` as its sample, with its hint
  network (``controlnet_cond_embedding``) replaced by a zero — IRControlNet has none, so this is exactly
  DiffBIR's function — then ``UNet2DConditionModel`` with ``down_block_additional_residuals`` /
  ``mid_block_additional_residual``; SD 2.1-base config (320/640/1280/1280, 64-channel heads, linear projections,
  context 77×1024). JAX: ``jaxir.models.controlnet.ControlNet(ControlNetConfig.diffbir())`` and
  ``UNetModel(UNetConfig.sd21_base())`` with the same weights through our diffusers converters
  (``convert_controlnet``/``convert_unet``, layout "diffusers"), both inside one ``jax.jit``.
* ``vae-encode``: ``0.18215 · mode(E(2x − 1))`` of an image in [0, 1]; ``vae-decode``: ``D(z / 0.18215)``.
  diffusers ``AutoencoderKL`` (SD config: 128/256/512/512) against ``jaxir.models.vae.AutoencoderKL``
  (``encode_latent`` / ``decode``), weights through ``convert_vae(layout="diffusers")``.

* ``restore``: a whole ``--steps``-step restoration of an image of the given side: ``c = 0.18215 · mode(E(2x − 1))``,
  deterministic DDIM (η = 0, DiffBIR's ``DDIMSampler`` schedule: IDDPM-spaced timesteps, ending at ᾱ[0]) from a
  given x_T with the IRControlNet + UNet step above (no CFG), then ``D(z / 0.18215)``. PyTorch: the diffusers
  modules in a Python loop with the DDIM update written out; JAX: jaxir's pipeline code, ``CLDM`` +
  :func:`jaxir.pipelines.sampling.sample_latent` (one ``lax.scan``) between ``encode_condition`` and ``decode``,
  in one jit. The first call of each side is round 1 (no separate warm-up: JAX compiled in setup).

Processes: every (side, task) runs in its own worker process (this script re-invoked with ``--side torch|jax
--what unet|vae-encode|vae-decode --size N``), driven over a pipe by the parent, so that ``ru_maxrss`` (peak RSS,
read at the end of the worker) belongs to one side only. Weights are created once by a ``--side prepare`` worker
(diffusers modules, seeded) and stored as one ``.npy`` per tensor under ``--cache-dir``; both sides read them tensor
by tensor (PyTorch: modules built on the meta device, ``load_state_dict(assign=True)``; JAX: converted lazily,
each leaf ``device_put`` then its NumPy copy dropped), so loading adds no second copy of the weights to the peak.

Timing: per task one PyTorch worker and, in turn, one JAX worker per variant (``--variants``). Variants: the XLA
flags, "default" (XLA_FLAGS without the flag) or "no-ynn" (``--xla_cpu_experimental_ynn_fusion_type=``,
jaxir.runtime's default), optionally with changes proposed for jaxir and applied here at run time, jaxir's files
untouched: "+chunk512" replaces ``jaxir.layers.attention`` in the UNet and VAE modules by
:func:`chunked_attention` (query chunks of 512, normalised after P·V), "+hmchunk256" the same with chunks of 256
on q/k/v transposed heads-major, "+flash512x512" :func:`flash_attention` (online softmax over key blocks), "+trim" calls glibc ``malloc_trim(0)``
after loading and after compiling. Both workers are set up (JAX: ``jit(...).lower().compile()``, timed
separately), called once each (warm-up), then called alternately ``--repeats`` times (who goes first alternates).
The table gives min and median wall time per call; ``os.getloadavg()`` is recorded at every round. PyTorch:
``torch.set_num_threads(2)``, ``torch.inference_mode()``.
Agreement: max |jax − torch| / max |torch| of the outputs of the last call.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLAG = "--xla_cpu_experimental_ynn_fusion_type="
VARIANTS = ("default", "no-ynn", "default+chunk512+trim", "no-ynn+chunk512+trim")
SEED = 0
SCALE = 0.18215
TOKENS = 77


# ---- configurations ------------------------------------------------------------------------------------------------

def diffusers_kwargs(tiny: bool) -> dict:
    """Constructor arguments of the diffusers models (full: SD 2.1-base; tiny: small widths, same structure)."""
    widths, heads, ctx = ((32, 64, 64, 64), (4, 8, 8, 8), 64) if tiny else \
        ((320, 640, 1280, 1280), (5, 10, 20, 20), 1024)
    common = dict(block_out_channels=widths, layers_per_block=2, attention_head_dim=heads, cross_attention_dim=ctx,
                  use_linear_projection=True,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",))
    unet = dict(common, sample_size=64, in_channels=4, out_channels=4,
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    controlnet = dict(common, in_channels=8, conditioning_channels=3)
    vae = dict(block_out_channels=(32, 32, 64, 64) if tiny else (128, 256, 512, 512), layers_per_block=2,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
               latent_channels=4, norm_num_groups=32, in_channels=3, out_channels=3, scaling_factor=SCALE)
    return dict(unet=unet, controlnet=controlnet, vae=vae, context_dim=ctx)


def to_device(tree):
    """Leaf by leaf, dropping each NumPy array once it is on the device (no second copy at the peak)."""
    import jax  # imported late: workers set XLA_FLAGS first
    from flax import traverse_util

    flat = traverse_util.flatten_dict(tree)
    tree.clear()
    for k in list(flat):
        flat[k] = jax.device_put(flat[k])
    return traverse_util.unflatten_dict(flat)


def jaxir_configs(tiny: bool):
    from jaxir.models.controlnet import ControlNetConfig
    from jaxir.models.unet import UNetConfig
    from jaxir.models.vae import VAEConfig

    if tiny:
        unet = UNetConfig(model_channels=32, channel_mult=(1, 2, 2, 2), num_head_channels=8, context_dim=64)
        vae = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2))
    else:
        unet, vae = UNetConfig.sd21_base(), VAEConfig.sd()
    return unet, ControlNetConfig(unet, hint_channels=4, hint_mode="concat"), vae


def inputs(what: str, size: int, batch: int, context_dim: int) -> dict:
    """NHWC float32 inputs, the same on both sides (seeded)."""
    rng = np.random.default_rng(1234 + size)
    if what == "unet":
        return dict(x=rng.standard_normal((batch, size, size, 4), dtype=np.float32),
                    hint=rng.standard_normal((batch, size, size, 4), dtype=np.float32),
                    t=np.full((batch,), 500, np.int64),
                    ctx=rng.standard_normal((batch, TOKENS, context_dim), dtype=np.float32))
    if what == "vae-encode":
        return dict(x=rng.random((batch, size, size, 3), dtype=np.float32))
    if what == "restore":
        return dict(x=rng.random((batch, size, size, 3), dtype=np.float32),
                    x_T=rng.standard_normal((batch, size // 8, size // 8, 4), dtype=np.float32),
                    ctx=rng.standard_normal((batch, TOKENS, context_dim), dtype=np.float32))
    return dict(z=rng.standard_normal((batch, size // 8, size // 8, 4), dtype=np.float32))


def ddim_values(steps: int):
    """jaxir's sampler values for DiffBIR's DDIM on SD 2.1's ᾱ (``.schedule``: timesteps descending, ᾱ at them, ᾱ of
    the step after, ᾱ[0] last); the PyTorch loop reads the same tables."""
    sys.path.insert(0, str(ROOT))
    from jaxir.pipelines.sampling import SamplerSpec, sampler_values

    return sampler_values(sd_alphas_cumprod(), SamplerSpec("ddim", steps, use_cfg=False), eta=0.0)


def sd_alphas_cumprod():
    sys.path.insert(0, str(ROOT))
    from jaxir.diffusion import schedule as S

    return S.alphas_cumprod(S.sd_linear_betas())


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def reset_peak_rss() -> None:
    """Restart the peak-RSS count (Linux ``clear_refs`` 5; ``ru_maxrss`` restarts too)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- weights: created once, one .npy per tensor -------------------------------------------------------------------

def prepare(cache: Path, tiny: bool) -> None:
    """diffusers modules with random weights everywhere (zero-initialised layers and norms included): matrices and
    kernels N(0, 1/fan_in), norm scales 1 + 0.1·N, biases 0.1·N; one generator per model, seeded. The modules are
    built on the meta device: only their parameter names and shapes are used."""
    import math

    import diffusers
    import torch

    kw = diffusers_kwargs(tiny)
    counts = {}
    for seed, (name, cls) in enumerate((("unet", diffusers.UNet2DConditionModel),
                                        ("controlnet", diffusers.ControlNetModel),
                                        ("vae", diffusers.AutoencoderKL))):
        with torch.device("meta"):
            model = cls(**kw[name])
        if name == "controlnet":
            del model.controlnet_cond_embedding   # IRControlNet has no hint network (see ZeroHint)
        gen = torch.Generator().manual_seed(SEED + seed)
        out = cache / name
        tmp = cache / (name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        keys = []
        with torch.no_grad():
            for key, p in model.named_parameters():
                noise = torch.randn(p.shape, generator=gen)
                if p.ndim > 1:
                    value = noise / math.sqrt(p[0].numel())
                elif key.endswith("weight"):
                    value = 1 + 0.1 * noise
                else:
                    value = 0.1 * noise
                np.save(tmp / f"{key}.npy", value.numpy().astype(np.float32))
                keys.append(key)
        assert len(keys) == len(model.state_dict()), "no buffers expected"
        (tmp / "keys.json").write_text(json.dumps(keys))
        counts[name] = sum(p.numel() for p in model.parameters())
        del model
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        print(f"  prepared {name}: {counts[name]:,} parameters", file=sys.stderr, flush=True)
    (cache / "manifest.json").write_text(json.dumps(dict(tiny=tiny, seed=SEED, counts=counts, kwargs=kw)))


class NpyDir(Mapping):
    """A read-only ``{key: ndarray}`` view of a prepared folder that reads each tensor when asked (no mmap)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.keys_ = json.loads((folder / "keys.json").read_text())

    def __getitem__(self, key):
        return np.load(self.folder / f"{key}.npy")

    def __iter__(self):
        return iter(self.keys_)

    def __len__(self):
        return len(self.keys_)


# ---- JAX variants (proposals measured here; jaxir itself is unchanged) ----------------------------------------------

def malloc_trim() -> None:
    """Give the heap that loading and compiling freed back to the OS (glibc)."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)


def chunked_attention(chunk: int, heads_major: bool = False):
    """A drop-in for ``jaxir.layers.attention`` (non-causal): softmax(q·kᵀ/√d)·v computed over query chunks of
    ``chunk`` tokens (``lax.map``; logits chunk × keys per head instead of queries × keys), each chunk normalised
    after the product with v (``(exp(l − max)·v) / Σ exp(l − max)``: the division on (chunk, d), not on the
    logits). ``heads_major``: q, k, v are first transposed to (B, heads, T, d), so that both products are plain
    batched matrix products. Sequences of at most ``chunk`` queries (or not a multiple of it) take the same formula
    unchunked."""
    import jax
    import jax.numpy as jnp

    def one(q, k, v, heads):
        b, tq, c = q.shape
        d = c // heads
        qh = q.reshape(b, tq, heads, d) * (d ** -0.5)
        kh, vh = (z.reshape(z.shape[0], z.shape[1], heads, d) for z in (k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", qh, kh)
        p = jnp.exp(logits - logits.max(-1, keepdims=True))
        out = jnp.einsum("bhqk,bkhd->bqhd", p, vh) / jnp.swapaxes(p.sum(-1), 1, 2)[..., None]
        return out.reshape(b, tq, c)

    def one_heads_major(qh, kh, vh):   # (B, heads, T, d), q already scaled
        logits = jnp.einsum("bhqd,bhkd->bhqk", qh, kh)
        p = jnp.exp(logits - logits.max(-1, keepdims=True))
        return jnp.einsum("bhqk,bhkd->bhqd", p, vh) / p.sum(-1)[..., None]

    def attention(q, k, v, heads: int, causal: bool = False):
        assert not causal
        b, tq, c = q.shape
        if not heads_major:
            if tq <= chunk or tq % chunk:
                return one(q, k, v, heads)
            qs = q.reshape(b, tq // chunk, chunk, c).swapaxes(0, 1)
            return jax.lax.map(lambda qc: one(qc, k, v, heads), qs).swapaxes(0, 1).reshape(b, tq, c)
        d = c // heads
        qh, kh, vh = (jnp.swapaxes(z.reshape(z.shape[0], z.shape[1], heads, d), 1, 2) for z in (q * d ** -0.5, k, v))
        if tq <= chunk or tq % chunk:
            out = one_heads_major(qh, kh, vh)
        else:
            qs = jnp.moveaxis(qh.reshape(b, heads, tq // chunk, chunk, d), 2, 0)
            out = jnp.moveaxis(jax.lax.map(lambda qc: one_heads_major(qc, kh, vh), qs), 0, 2).reshape(b, heads, tq, d)
        return jnp.swapaxes(out, 1, 2).reshape(b, tq, c)

    return attention


def flash_attention(q_chunk: int, k_chunk: int):
    """A drop-in for ``jaxir.layers.attention`` (non-causal), flash-style: q, k, v heads-major (B, heads, T, d);
    query chunks of ``q_chunk`` (``lax.map``), and for each a ``lax.scan`` over key blocks of ``k_chunk`` keeping
    the running max, the running sum and the unnormalised output (online softmax), so that one logits block is
    (heads, q_chunk, k_chunk). A length that is not a larger multiple of its chunk is taken whole."""
    import jax
    import jax.numpy as jnp

    def attention(q, k, v, heads: int, causal: bool = False):
        assert not causal
        b, tq, c = q.shape
        s = k.shape[1]
        d = c // heads
        qn = q_chunk if tq > q_chunk and tq % q_chunk == 0 else tq
        kn = k_chunk if s > k_chunk and s % k_chunk == 0 else s
        qh, kh, vh = (jnp.swapaxes(z.reshape(z.shape[0], z.shape[1], heads, d), 1, 2) for z in (q * d ** -0.5, k, v))
        ks = jnp.moveaxis(kh.reshape(b, heads, s // kn, kn, d), 2, 0)
        vs = jnp.moveaxis(vh.reshape(b, heads, s // kn, kn, d), 2, 0)

        def one(qc):
            def body(carry, kv):
                m, l, acc = carry
                logits = jnp.einsum("bhqd,bhkd->bhqk", qc, kv[0])
                m_new = jnp.maximum(m, logits.max(-1))
                p = jnp.exp(logits - m_new[..., None])
                corr = jnp.exp(m - m_new)
                acc = acc * corr[..., None] + jnp.einsum("bhqk,bhkd->bhqd", p, kv[1])
                return (m_new, l * corr + p.sum(-1), acc), None

            init = (jnp.full(qc.shape[:3], -jnp.inf, qc.dtype), jnp.zeros(qc.shape[:3], qc.dtype),
                    jnp.zeros(qc.shape, qc.dtype))
            (_, l, acc), _ = jax.lax.scan(body, init, (ks, vs))
            return acc / l[..., None]

        qs = jnp.moveaxis(qh.reshape(b, heads, tq // qn, qn, d), 2, 0)
        out = jnp.moveaxis(jax.lax.map(one, qs), 0, 2).reshape(b, heads, tq, d)
        return jnp.swapaxes(out, 1, 2).reshape(b, tq, c)

    return attention


# ---- the compared functions, built once for bench_ldm's workers and device_check's ----------------------------

def torch_networks(cache: Path, tiny: bool, names) -> dict:
    """diffusers modules (``unet``, ``controlnet``, ``vae``) from the prepared weights, in eval mode on the CPU:
    built on the meta device and filled with ``load_state_dict(assign=True)`` (no second copy of the weights).
    The ControlNet's hint network is replaced by a zero: IRControlNet has none."""
    import diffusers
    import torch

    class ZeroHint(torch.nn.Module):
        """Stands for the hint network IRControlNet lacks: adds nothing to ``conv_in``'s output."""

        def forward(self, cond):
            return torch.zeros((), dtype=cond.dtype, device=cond.device)

    classes = {"unet": diffusers.UNet2DConditionModel, "controlnet": diffusers.ControlNetModel,
               "vae": diffusers.AutoencoderKL}
    kw = diffusers_kwargs(tiny)
    models = {}
    for name in names:
        with torch.device("meta"):
            model = classes[name](**kw[name])
        if name == "controlnet":
            model.controlnet_cond_embedding = ZeroHint()
        state = {k: torch.from_numpy(v) for k, v in NpyDir(cache / name).items()}
        model.load_state_dict(state, strict=True, assign=True)
        models[name] = model.eval()
    return models


def torch_eps(unet, control, ctx):
    """ControlLDM's ε(x, hint, t) on NCHW tensors: the IRControlNet fed ``cat(x, hint)``, its residuals (scale 1)
    added to the UNet."""
    import torch

    def eps(x, hint, t):
        down, mid = control(torch.cat([x, hint], dim=1), t, encoder_hidden_states=ctx, controlnet_cond=x,
                            conditioning_scale=1.0, return_dict=False)
        return unet(x, t, encoder_hidden_states=ctx, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid, return_dict=False)[0]

    return eps


def torch_ddim_restore(vae, eps, steps: int):
    """``restore(image, x_T)``: encode the condition, ``steps`` deterministic DDIM steps from ``x_T``, decode."""
    import torch

    sched = ddim_values(steps).schedule

    def restore(image, x_T):
        c = vae.encode(2 * image - 1).latent_dist.mode() * SCALE
        z = x_T
        for t, a, a_prev in zip(sched.timesteps, sched.alphas_cumprod, sched.alphas_cumprod_prev):
            e = eps(z, c, torch.full((z.shape[0],), int(t), device=z.device))
            x0 = (z - float(np.sqrt(1 - a)) * e) / float(np.sqrt(a))
            z = float(np.sqrt(a_prev)) * x0 + float(np.sqrt(1 - a_prev)) * e
        return vae.decode(z / SCALE).sample

    return restore


def jax_params(cache: Path, tiny: bool, names) -> dict:
    """jaxir parameters (``unet``, ``controlnet``, ``vae``) converted from the prepared weights by the diffusers
    converters, leaf by leaf onto the default device."""
    sys.path.insert(0, str(ROOT))
    from checkpoints_conversion.unet_keys import convert_controlnet, convert_unet
    from checkpoints_conversion.vae_keys import convert_vae

    unet_cfg, control_cfg, vae_cfg = jaxir_configs(tiny)
    convert = {"unet": lambda d: convert_unet(d, unet_cfg, layout="diffusers"),
               "controlnet": lambda d: convert_controlnet(d, control_cfg, layout="diffusers"),
               "vae": lambda d: convert_vae(d, vae_cfg, layout="diffusers")}
    return {name: to_device(convert[name](NpyDir(cache / name))) for name in names}


def jax_eps(tiny: bool):
    """``eps(unet_params, control_params, x, hint, t, ctx, scales)``: the same ε as :func:`torch_eps` (NHWC)."""
    from jaxir.models.controlnet import ControlNet
    from jaxir.models.unet import UNetModel

    unet_cfg, control_cfg, _ = jaxir_configs(tiny)
    unet, control = UNetModel(unet_cfg), ControlNet(control_cfg)

    def eps(unet_params, control_params, x, hint, t, ctx, scales):
        features = control.apply({"params": control_params}, x, hint, t, ctx, control_scales=scales)
        return unet.apply({"params": unet_params}, x, t, ctx, control=features)

    return eps


def jax_ddim_restore(tiny: bool, steps: int):
    """``restore(params, image, x_T, ctx, values)``: :func:`torch_ddim_restore` with jaxir's pipeline code
    (``CLDM.encode_condition``, :func:`jaxir.pipelines.sampling.sample_latent`, ``decode``); ``values`` is
    :func:`ddim_values`."""
    import jax.numpy as jnp

    from jaxir.models.cldm import CLDM, ControlLDMConfig
    from jaxir.models.text import TextEncoderConfig
    from jaxir.pipelines.sampling import Conditions, SamplerSpec, sample_latent

    model = CLDM(ControlLDMConfig(*jaxir_configs(tiny), TextEncoderConfig()))
    spec = SamplerSpec("ddim", steps, use_cfg=False)

    def restore(params, image, x_T, ctx, values):
        c = model.encode_condition(params, image)
        noise = jnp.zeros((spec.steps, *x_T.shape), jnp.float32)   # η = 0: unused
        z = sample_latent(model, params, spec, Conditions(c, ctx, ctx), x_T, noise, values)
        return model.decode(params, z)

    return restore


# ---- workers ------------------------------------------------------------------------------------------------------

class TorchSide:
    def __init__(self, args, cache: Path):
        import torch

        torch.set_num_threads(2)
        self.torch = torch
        self.rss_imports = current_rss_bytes()
        kw = diffusers_kwargs(args.tiny)
        t0 = time.perf_counter()
        data = inputs(args.what, args.size, args.batch, kw["context_dim"])

        def nchw(a):
            return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))

        if args.what in ("unet", "restore"):
            names = ("unet", "controlnet") + (("vae",) if args.what == "restore" else ())
            nets = torch_networks(cache, args.tiny, names)
            eps = torch_eps(nets["unet"], nets["controlnet"], torch.from_numpy(data["ctx"]))
            if args.what == "unet":
                x, hint, t = nchw(data["x"]), nchw(data["hint"]), torch.from_numpy(data["t"])

                def step():
                    return eps(x, hint, t)
            else:
                restore = torch_ddim_restore(nets["vae"], eps, args.steps)
                image, x_T = nchw(data["x"]), nchw(data["x_T"])

                def step():
                    return restore(image, x_T)
        else:
            nets = torch_networks(cache, args.tiny, ("vae",))
            vae = nets["vae"]
            if args.what == "vae-encode":
                x = nchw(data["x"])

                def step():
                    return vae.encode(2 * x - 1).latent_dist.mode() * SCALE
            else:
                z = nchw(data["z"])

                def step():
                    return vae.decode(z / SCALE).sample
        self.params = sum(p.numel() for net in nets.values() for p in net.parameters())
        self.load_s = time.perf_counter() - t0
        self.step = step
        self.compile_s = None
        self.extra = {}

    def run(self):
        with self.torch.inference_mode():
            return self.step()

    def to_numpy(self, out):
        return out.numpy().transpose(0, 2, 3, 1)


class JaxSide:
    def __init__(self, args, cache: Path):
        import jax
        import jax.numpy as jnp

        sys.path.insert(0, str(ROOT))
        from jaxir.models.vae import AutoencoderKL

        self.jax = jax
        self.rss_imports = current_rss_bytes()
        options = args.variant.split("+")[1:]
        for option in options:
            if option.startswith("flash"):
                import jaxir.models.unet
                import jaxir.models.vae

                qn, kn = (int(n) for n in option[5:].split("x"))
                jaxir.models.unet.attention = jaxir.models.vae.attention = flash_attention(qn, kn)
            elif option.startswith(("chunk", "hmchunk")):
                import jaxir.models.unet
                import jaxir.models.vae

                hm = option.startswith("hm")
                fn = chunked_attention(int(option[7 if hm else 5:]), heads_major=hm)
                jaxir.models.unet.attention = jaxir.models.vae.attention = fn
            elif option != "trim":
                raise SystemExit(f"unknown variant option {option!r}")
        kw = diffusers_kwargs(args.tiny)
        t0 = time.perf_counter()
        data = {k: jnp.asarray(v) for k, v in inputs(args.what, args.size, args.batch, kw["context_dim"]).items()}
        if args.what == "unet":
            params = jax_params(cache, args.tiny, ("unet", "controlnet"))
            scales = jnp.ones((jaxir_configs(args.tiny)[1].num_outputs,), jnp.float32)
            step = jax_eps(args.tiny)
            self.args = (params["unet"], params["controlnet"], data["x"], data["hint"], data["t"], data["ctx"],
                         scales)
        elif args.what == "restore":
            params = jax_params(cache, args.tiny, ("unet", "controlnet", "vae"))
            step = jax_ddim_restore(args.tiny, args.steps)
            self.args = (params, data["x"], data["x_T"], data["ctx"], ddim_values(args.steps))
        else:
            params = jax_params(cache, args.tiny, ("vae",))["vae"]
            model = AutoencoderKL(jaxir_configs(args.tiny)[2])
            method = "encode_latent" if args.what == "vae-encode" else "decode"

            def step(vae_params, inp):
                return model.apply({"params": vae_params}, inp, method=method)

            self.args = (params, data["x"] if args.what == "vae-encode" else data["z"])
        self.params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
        self.load_s = time.perf_counter() - t0
        if "trim" in options:
            malloc_trim()
        t0 = time.perf_counter()
        lowered = jax.jit(step).lower(*self.args)
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t0
        text = self.compiled.as_text()
        mem = self.compiled.memory_analysis()
        self.extra = dict(ynn_fusions=text.count("__ynn_fusion"), hlo_chars=len(text),
                          xla_flags=os.environ.get("XLA_FLAGS", ""))
        if mem is not None:
            for f in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                      "generated_code_size_in_bytes"):
                self.extra[f] = getattr(mem, f, None)
        if args.dump_hlo:
            Path(args.dump_hlo).write_text(text)
        del text, lowered
        if "trim" in options:
            malloc_trim()

    def run(self):
        return self.jax.block_until_ready(self.compiled(*self.args))

    def to_numpy(self, out):
        return np.asarray(out)


def worker(args) -> None:
    """Answer JSON-line commands from the parent on the original stdout (everything else printed goes to stderr)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    cache = Path(args.cache_dir)
    side = out = None
    peak_setup = 0

    def reply(**kw):
        proto.write(json.dumps(kw) + "\n")

    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            name = cmd["cmd"]
            if name == "setup":
                side = (TorchSide if args.side == "torch" else JaxSide)(args, cache)
                peak_setup = peak_rss_bytes()
                reset_peak_rss()   # from here on ru_maxrss counts the calls only
                reply(load_s=side.load_s, compile_s=side.compile_s, params=side.params,
                      rss_imports=side.rss_imports, rss_loaded=current_rss_bytes(), peak_setup=peak_setup,
                      extra=side.extra)
            elif name == "run":
                t, c = time.perf_counter(), time.process_time()
                out = side.run()
                reply(wall=time.perf_counter() - t, cpu=time.process_time() - c, load=os.getloadavg())
            elif name == "save":
                np.save(cmd["path"], side.to_numpy(out))
                reply(ok=True)
            elif name == "finish":
                reply(peak_runs=peak_rss_bytes(), peak_rss=max(peak_rss_bytes(), peak_setup),
                      rss_now=current_rss_bytes())
                return
            else:
                reply(error=f"unknown command {name}")
        except Exception:  # noqa: BLE001 (reported to the parent, which stops)
            reply(error=traceback.format_exc())
            return


class Worker:
    """A worker process and its pipe."""

    def __init__(self, side: str, what: str, size: int, args, variant: str | None = None):
        env = dict(os.environ)
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(FLAG)]
        if variant and variant.split("+")[0] == "no-ynn":
            flags.append(FLAG)
        if flags:
            env["XLA_FLAGS"] = " ".join(flags)
        else:
            env.pop("XLA_FLAGS", None)
        env.pop("JAX_COMPILATION_CACHE_DIR", None)   # compile from scratch
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--what", what, "--size", str(size),
               "--batch", str(args.batch), "--cache-dir", str(args.cache_dir), "--steps", str(args.steps)]
        if args.tiny:
            cmd.append("--tiny")
        if variant:
            cmd += ["--variant", variant]
        if args.dump_hlo and side == "jax":
            cmd += ["--dump-hlo", f"{args.dump_hlo}_{what}_{size}_{variant}.txt"]
        self.name = f"{side}{'/' + variant if variant else ''} {what} {size}"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def __call__(self, cmd: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps(dict(cmd=cmd, **kw)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (exit code {self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"worker {self.name}: {answer['error']}")
        return answer

    def finish(self) -> dict:
        answer = self("finish")
        self.proc.wait()
        return answer


# ---- the parent ---------------------------------------------------------------------------------------------------

def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def load_str(load) -> str:
    return "/".join(f"{v:.2f}" for v in load)


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours.astype(np.float64) - ref).max() / np.abs(ref).max())


def run_task(what: str, size: int, repeats: int, args, tmp: Path) -> list[dict]:
    """One PyTorch worker; one JAX worker per variant in turn, timed alternately with it."""
    print(f"\n## {what} {size}: PyTorch setup", flush=True)
    torch_w = Worker("torch", what, size, args)
    torch_setup = torch_w("setup")
    print(f"  torch: {torch_setup['params']:,} parameters, load {torch_setup['load_s']:.1f} s, "
          f"RSS after imports {gib(torch_setup['rss_imports'])} GiB, loaded {gib(torch_setup['rss_loaded'])} GiB",
          flush=True)
    first = torch_w("run")
    print(f"  torch first call {first['wall']:.2f} s (load {load_str(first['load'])})", flush=True)
    warm_up = what != "restore"   # a restoration is long: its first calls are timed round 1
    ref_path = tmp / f"torch_{what}_{size}.npy"
    torch_w("save", path=str(ref_path))
    torch_times_all = []
    rows = []
    try:
        for variant in args.variants:
            jax_w = Worker("jax", what, size, args, variant)
            js = jax_w("setup")
            print(f"  jax/{variant}: {js['params']:,} parameters, load {js['load_s']:.1f} s, compile "
                  f"{js['compile_s']:.1f} s, RSS after imports {gib(js['rss_imports'])} GiB, loaded "
                  f"{gib(js['rss_loaded'])} GiB; {json.dumps(js['extra'])}", flush=True)
            jfirst = jax_w("run")
            print(f"  jax/{variant} first call {jfirst['wall']:.2f} s", flush=True)
            tt, jt, loads, tcpu, jcpu = [], [], [], [], []
            if not warm_up:
                tt, jt, loads = [first["wall"]], [jfirst["wall"]], [jfirst["load"]]
                tcpu, jcpu = [first["cpu"]], [jfirst["cpu"]]
            for r in range(repeats if warm_up else repeats - 1):
                order = (("torch", torch_w), ("jax", jax_w)) if r % 2 == 0 else (("jax", jax_w), ("torch", torch_w))
                got = {}
                for side, w in order:
                    got[side] = w("run")
                tt.append(got["torch"]["wall"])
                jt.append(got["jax"]["wall"])
                tcpu.append(got["torch"]["cpu"])
                jcpu.append(got["jax"]["cpu"])
                loads.append(got[order[-1][0]]["load"])
                print(f"  round {r + 1}/{repeats}: torch {tt[-1]:.3f} s, jax/{variant} {jt[-1]:.3f} s "
                      f"(ratio {tt[-1] / jt[-1]:.2f}), load {load_str(loads[-1])}", flush=True)
            out_path = tmp / f"jax_{what}_{size}_{variant}.npy"
            jax_w("save", path=str(out_path))
            jfin = jax_w.finish()
            err = rel_err(np.load(out_path), np.load(ref_path))
            print(f"  jax/{variant}: peak RSS {gib(jfin['peak_rss'])} GiB (calls only {gib(jfin['peak_runs'])} GiB; "
                  f"load + compile {gib(js['peak_setup'])} GiB); max |jax − torch| / max |torch| = "
                  f"{err:.2e}", flush=True)
            torch_times_all += tt
            rows.append(dict(what=what, size=size, variant=variant, torch=tt, jax=jt, torch_cpu=tcpu, jax_cpu=jcpu,
                             loads=loads, jax_setup=js, jax_first=jfirst["wall"], jax_peak=jfin["peak_rss"],
                             jax_peak_runs=jfin["peak_runs"],
                             err=err, torch_setup=torch_setup, torch_first=first["wall"]))
    finally:
        tfin = torch_w.finish()
    print(f"  torch: peak RSS {gib(tfin['peak_rss'])} GiB (calls only {gib(tfin['peak_runs'])} GiB)", flush=True)
    for row in rows:
        row["torch_peak"], row["torch_peak_runs"] = tfin["peak_rss"], tfin["peak_runs"]
    return rows


LABELS = {"unet": "ControlNet + UNet step (latent)", "vae-encode": "VAE encode (image)",
          "vae-decode": "VAE decode (image)", "restore": "whole restoration, DDIM (image)"}


def table(rows: list[dict]) -> str:
    lines = [("| what | size | JAX variant | torch s (min / median) | jax s (min / median) | ratio torch/jax (min) "
              "| CPU s torch / jax (min) | peak RSS torch (GiB) | peak RSS jax (GiB) | ratio jax/torch | jax compile s "
              "| max rel. err | load (1/5/15 min) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tmin, jmin = min(r["torch"]), min(r["jax"])
        tmed, jmed = statistics.median(r["torch"]), statistics.median(r["jax"])
        lines.append(
            f"| {LABELS[r['what']]} | {r['size']}² | {r['variant']} | {tmin:.3f} / {tmed:.3f} | {jmin:.3f} / "
            f"{jmed:.3f} | {tmin / jmin:.2f} | {min(r['torch_cpu']):.2f} / {min(r['jax_cpu']):.2f} | {gib(r['torch_peak'])} | {gib(r['jax_peak'])} | "
            f"{r['jax_peak'] / r['torch_peak']:.2f} | {r['jax_setup']['compile_s']:.1f} | {r['err']:.1e} | "
            f"{load_str(r['loads'][-1])} |")
    return "\n".join(lines)


def details(rows: list[dict]) -> str:
    lines = [("| what | size | JAX variant | torch CPU s (min) | jax CPU s (min) | torch first call s | jax first call s "
              "| RSS after imports torch / jax (GiB) | RSS after setup torch / jax (GiB) "
              "| peak RSS of the setup torch / jax (GiB) | peak RSS of the calls torch / jax (GiB) | params torch / jax "
              "| XLA temp (GiB) | ynn fusions |"), "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ts, js = r["torch_setup"], r["jax_setup"]
        temp = js["extra"].get("temp_size_in_bytes")
        lines.append(
            f"| {r['what']} | {r['size']}² | {r['variant']} | {min(r['torch_cpu']):.2f} | {min(r['jax_cpu']):.2f} | "
            f"{r['torch_first']:.2f} | {r['jax_first']:.2f} | {gib(ts['rss_imports'])} / {gib(js['rss_imports'])} | "
            f"{gib(ts['rss_loaded'])} / {gib(js['rss_loaded'])} | {gib(ts['peak_setup'])} / {gib(js['peak_setup'])} | "
            f"{gib(r['torch_peak_runs'])} / {gib(r['jax_peak_runs'])} | {ts['params']:,} / {js['params']:,} | "
            f"{gib(temp) if temp is not None else '?'} | {js['extra'].get('ynn_fusions')} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="only the latent-32² step and VAE 256², 1 round")
    p.add_argument("--tiny", action="store_true", help="small channel widths (same structure)")
    p.add_argument("--repeats", type=int, help="timed rounds (default: 5 at latent 32²/VAE 256², 3 above)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--what", default=None, help="comma-separated tasks among unet, vae-encode, vae-decode "
                                                "(worker: one task)")
    p.add_argument("--sizes", default=None, help="comma-separated latent sides for unet (default 32,64)")
    p.add_argument("--vae-sizes", default=None, help="comma-separated image sides for the VAE (default 256,512)")
    p.add_argument("--restore-sizes", default="512", help="comma-separated image sides for restore (default 512)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps of restore (default 50)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="JAX variants, comma-separated: default or no-ynn (XLA flags), optionally followed by "
                        "+chunkN (attention over query chunks of N, normalised after P·V), +hmchunkN (the same on (B, heads, T, d) "
                        "transposed q/k/v), +flashQxK (online softmax, query chunks Q, key blocks K) and/or +trim "
                        "(malloc_trim after loading and compiling); e.g. no-ynn+chunk512+trim")
    p.add_argument("--cache-dir", default=None, help="prepared weights (default /tmp/jaxir_bench_ldm/<full|tiny>)")
    p.add_argument("--out", default=None, help="markdown output (default benchmarks/results_ldm.md for a full run, "
                                               "none for --quick/--tiny)")
    p.add_argument("--dump-hlo", default=None, help=argparse.SUPPRESS)
    p.add_argument("--side", choices=("torch", "jax", "prepare"), help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.cache_dir = Path(args.cache_dir or f"/tmp/jaxir_bench_ldm/{'tiny' if args.tiny else 'full'}")
    if args.side == "prepare":
        prepare(args.cache_dir, args.tiny)
        return
    if args.side:
        worker(args)
        return

    args.variants = args.variants.split(",")
    tasks = []
    whats = args.what.split(",") if args.what else ["unet", "vae-encode", "vae-decode"]
    for what in whats:
        default_sizes = (32, 64) if what == "unet" else (256, 512)
        given = {"unet": args.sizes, "restore": args.restore_sizes}.get(what, args.vae_sizes)
        sizes = [int(s) for s in given.split(",")] if given else default_sizes[:1 if args.quick else 2]
        for size in sizes:
            small = size == default_sizes[0]
            tasks.append((what, size, args.repeats or (1 if args.quick else 5 if small else 3)))
    command = "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]) if argv is None else str(argv)
    print(f"# bench_ldm: {command}; load {load_str(os.getloadavg())}", flush=True)

    if not (args.cache_dir / "manifest.json").exists():
        t0 = time.perf_counter()
        print(f"preparing weights in {args.cache_dir} ...", flush=True)
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--side", "prepare", "--cache-dir",
                        str(args.cache_dir)] + (["--tiny"] if args.tiny else []), check=True)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    manifest = json.loads((args.cache_dir / "manifest.json").read_text())

    tmp = args.cache_dir / "outputs"
    tmp.mkdir(exist_ok=True)
    rows = []
    t_start = time.perf_counter()
    for what, size, repeats in tasks:
        rows += run_task(what, size, repeats, args, tmp)
    elapsed = time.perf_counter() - t_start

    import platform
    from importlib.metadata import version

    versions = {mod: version(mod) for mod in ("torch", "jax", "jaxlib", "flax", "diffusers")}
    report = "\n".join([
        "# bench_ldm: jaxir vs diffusers on CPU" + (" (tiny widths)" if args.tiny else ""),
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; batch {args.batch}, float32  ",
        "Parameters (diffusers count): " + ", ".join(f"{k} {v:,}" for k, v in manifest["counts"].items()) + "  ",
        (f"Load averages at the start / end: {load_str(rows[0]['loads'][0])} / {load_str(os.getloadavg())}; "
         f"total {elapsed / 60:.1f} min"),
        "",
        table(rows),
        "",
        "Ratios: torch/jax of the minimum wall time (> 1: JAX faster; goal ≥ 1.3); CPU s: process CPU time of the call "
        "(all threads; less disturbed by other processes than wall time, but blind to idle threads); jax/torch of the peak RSS "
        "(goal ≤ 1.2). 'default': XLA_FLAGS unset; 'no-ynn': `XLA_FLAGS=" + FLAG + "` (jaxir.runtime's default); "
        "'+chunk512': attention over query chunks of 512 normalised after P·V (bench_ldm.chunked_attention, "
        "patched in at run time); '+hmchunk256': the same over chunks of 256 of heads-major (B, heads, T, d) q/k/v; '+flashQxK': online softmax, query chunks of Q × key blocks of K (bench_ldm.flash_attention); '+trim': glibc malloc_trim(0) after loading and compiling. "
        "The torch numbers of a row are the calls alternated with that row's JAX worker. Peak RSS is `ru_maxrss` of "
        "the worker process over its life (imports, weights, JAX compilation, the calls); the details give the peak of "
        "the setup (imports, weights, compilation) and of the calls alone (the count restarted after the setup via "
        "`/proc/self/clear_refs`).",
        "",
        "Details:",
        "",
        details(rows),
        "",
    ])
    print("\n" + report)
    out = args.out or (None if (args.quick or args.tiny) else str(HERE / "results_ldm.md"))
    if out:
        Path(out).write_text(report)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
