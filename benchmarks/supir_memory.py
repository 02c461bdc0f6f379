"""How much memory does a SUPIR restoration at 1024² need? Compile-only estimates from XLA's buffer assignment:
nothing is allocated (parameters are ``jax.eval_shape`` structures, inputs ``jax.ShapeDtypeStruct``s); every piece
is ``jax.jit(fn).lower(...).compile()`` and its ``memory_analysis()`` read.

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/supir_memory.py --dtype bf16 \\
        --out benchmarks/results_supir_memory.md
    python benchmarks/supir_memory.py --tiny          # the same pieces on a small SUPIR config (about a minute)

Model: :meth:`jaxir.models.supir.SUPIRConfig.supir_v0` (SDXL base UNet + GLVControl, SDXL VAE with SUPIR's
``denoise_encoder``, CLIP ViT-L + OpenCLIP bigG), parameters in ``--dtype`` (inputs: see ``--activations``).

Pieces (``--pieces``, comma-separated; sizes in image pixels, latents are /8):

* ``text``: the conditioner (``SUPIRNet.condition``: both text towers, size embeddings) on one prompt.
* ``step``: one guided denoiser evaluation of the sampler at ``--size``² (latent 128² at 1024²), untiled:
  ``DiscreteDenoiserWithControl`` (EpsScaling) around GLVControl + LightGLVUNet on the CFG batch of 2 =
  [uncond; cond], then ``uncond + s·(cond − uncond)`` (``jaxir.pipelines.supir.sample_restore_edm``'s denoiser). The
  sampler's ``lax.scan`` over steps adds only a few latents to this.
* ``step-tiled``: the same with SUPIR's tiled sampling (``--tile``/``--tile-stride`` latent pixels, 128/64 as in
  ``options/SUPIR_v0_tiled.yaml``): :func:`jaxir.tiling.tiled_blend` (one tile at a time in a
  ``lax.scan``, Gaussian blending) as the pipeline's tiled sampler runs it. At 1024² the latent is one 128² tile,
  so this equals ``step`` (and is left out of the default pieces); ``step-large`` / ``step-large-tiled`` are the
  pair at ``--large``² (1536²: latent 192², 2 × 2 tiles).
* ``vae-encode``: SUPIR's degradation-robust encoder (``denoise_encode``: ``denoise_encoder`` + ``quant_conv``) of
  one ``--size``² image; the standard encoder used for ``x_center`` has the same shapes. ``vae-decode``: the
  decoder of the 128² latent.
* ``vae-encode-tiled`` / ``vae-decode-tiled``: as the pipeline tiles them (``vae_tile``/``vae_tile_overlap``,
  :func:`jaxir.tiling.tiled_apply`, called eagerly): one jitted program per tile (``--vae-tile``² pixels; the
  decoder gets the ``--vae-tile``/8 latent tile) plus the full-size input and blending buffers (output sum and
  weights, ×2 for the functional ``.at[].add`` updates), which are added to the estimate.

Activations (``--activations``): ``jaxir`` — the code as it is, parameters stored in ``--dtype``, inputs
(latents, images, text conditions) float32: jaxir has no reduced-precision compute path (its GroupNorm returns
float32, LDM's GroupNorm32; the timestep embedding is float32; float32 · bf16 promotes to float32; and bf16 text
conditions fail in ``jax.nn.dot_product_attention``, whose query then is float32 and key bf16), so this is "bf16
weights, fp32 activations", each weight converted where it is used (XLA may keep float32 copies in temp).
``cast`` — parameters and inputs in ``--dtype`` and every Flax module's output cast to it (``nn.intercept_methods``;
GroupNorm statistics still float32 inside), approximating a bf16 compute path like SUPIR's bf16/fp16 autocast,
which jaxir does not have. ``both`` — each piece twice. The "conv/dot ops" column counts the convolutions and dot
products of the lowered program by result type, to show which of the two a program is.

Table: for each piece the parameter bytes it reads, XLA's argument / output / temp / alias sizes, the piece's own
peak (``argument + output + temp − alias``) and the estimated peak during a restoration = that + every other SUPIR
parameter (all are resident for the whole run: ``SUPIRPipeline`` holds them on the device) + tiled blending buffers,
compared with an 80 GB accelerator (80·10⁹ B) and this 24 GiB CPU machine. Parameter totals are printed for bf16
and fp32. Caveat: the buffer assignment is the compiling backend's, so run the script on the target device for its
numbers (compilation there is equally allocation-free). XLA:CPU computes bf16 convolutions and dot products in
float32 and keeps float32 copies of the bf16 weights in temp, in both activation modes (tiny config: bf16 step temp
0.174 GiB = the fp32 weight bytes, against 0.009 GiB with ``--dtype fp32``), so on a CPU bf16 needs more memory
than fp32; ``--dtype fp32`` shows the activations alone. Fusion also differs from XLA:GPU. JAX's runtime
overheads (allocator fragmentation, the compilation itself) come on top.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxir.diffusion import restore_edm
from jaxir.diffusion.denoiser import denoiser
from jaxir.diffusion.guidance import classifier_free_guidance
from jaxir.models import supir
from jaxir.models.text import TextEncoderConfig
from jaxir.models.vae import VAEConfig
from jaxir.tiling import tile_starts, tiled_blend

PIECES = ("text", "step", "step-tiled", "step-large", "step-large-tiled", "vae-encode", "vae-encode-tiled",
          "vae-decode", "vae-decode-tiled")
DEFAULT_PIECES = tuple(p for p in PIECES if p != "step-tiled")   # at 1024² one tile is the whole latent
DTYPES = {"bf16": jnp.bfloat16, "fp32": jnp.float32}
ACCELERATOR = 80e9
CPU_MACHINE = 24 * 2**30
GiB = 2**30


def tiny_config() -> supir.SUPIRConfig:
    """A small SUPIR of the same structure (3 UNet levels, attention at [4, 2], VAE downsampling 8): model_channels
    64, depth [1, 2, 1], 32-channel heads, context 96, adm 40; VAE 32 channels; text towers 32 + 64 wide."""
    common = dict(adm_in_channels=40, num_classes="sequential", in_channels=4, out_channels=4, model_channels=64,
                  attention_resolutions=[4, 2], num_res_blocks=2, channel_mult=[1, 2, 4], num_head_channels=32,
                  use_spatial_transformer=True, use_linear_in_transformer=True, transformer_depth=[1, 2, 1],
                  context_dim=96, legacy=False)
    diffusion = supir.SUPIRDiffusionConfig.from_options({
        "control_stage_config": {"params": common},
        "network_config": {"params": {"mode": "XL-base", "project_type": "ZeroSFT", "project_channel_scale": 2,
                                      **common}}})
    vae = VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, resolution=64, scale_factor=0.13025)
    clip_l = TextEncoderConfig(vocab_size=1000, width=32, heads=2, layers=2, act="quick_gelu", output_layer=1)
    clip_g = TextEncoderConfig(vocab_size=1000, width=64, heads=4, layers=2, act="gelu", output_layer=1, pooled=True,
                               projection_dim=16)
    return supir.SUPIRConfig(diffusion, vae, clip_l, clip_g, size_embed_dim=4)


# ---- helpers -------------------------------------------------------------------------------------------------------

def nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def as_dtype(tree, dtype):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype if jnp.issubdtype(s.dtype, jnp.floating)
                                                       else s.dtype), tree)


def cast_outputs(dtype):
    """An ``nn.intercept_methods`` interceptor casting every module's ``__call__`` output to ``dtype``."""
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        return jax.tree.map(lambda a: a.astype(dtype) if isinstance(a, jax.Array)
                            and jnp.issubdtype(a.dtype, jnp.floating) else a, out)
    return interceptor


def op_types(lowered) -> str:
    """Convolutions and dot products of the lowered (StableHLO) program counted by result element type."""
    counts: dict[str, int] = {}
    for line in lowered.as_text().splitlines():
        m = re.search(r"stablehlo\.(convolution|dot_general)\b.*->\s*tensor<[^>]*?x?([a-z]+[0-9]+)>", line)
        if m:
            counts[m.group(2)] = counts.get(m.group(2), 0) + 1
    return ", ".join(f"{n} {t}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "–"


@dataclasses.dataclass
class Piece:
    name: str
    activations: str
    detail: str
    params_used: int     # parameter bytes the program reads (argument bytes − other inputs)
    inputs: int
    output: int
    temp: int
    alias: int
    extra: int           # tiled blending buffers outside the program
    ops: str
    compile_s: float

    @property
    def own_peak(self) -> int:
        return self.params_used + self.inputs + self.output + self.temp - self.alias

    def restoration_peak(self, all_params: int) -> int:
        """The estimated peak during a restoration: every parameter resident (``all_params`` bytes) + this
        piece's inputs, output and temp + the blending buffers outside it."""
        return all_params - self.params_used + self.own_peak + self.extra


def with_activations(fn, activations: str, dtype):
    """``fn`` as it is (``jaxir``), or with every Flax module's output cast to ``dtype`` (``cast``)."""
    if activations != "cast":
        return fn

    def wrapped(*args):
        with nn.intercept_methods(cast_outputs(dtype)):
            return fn(*args)

    return wrapped


def analyse(name, activations, detail, fn, params, inputs, dtype, extra=0) -> Piece:
    """Compile ``fn(params, *inputs)`` (``jax.jit`` drops parameters the program does not use) and read its
    buffer sizes."""
    t0 = time.perf_counter()
    lowered = jax.jit(with_activations(fn, activations, dtype)).lower(params, *inputs)
    compiled = lowered.compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    if mem is None:
        raise SystemExit(f"{jax.default_backend()}: no memory_analysis() on this backend")
    other = nbytes(inputs)
    return Piece(name, activations, detail, mem.argument_size_in_bytes - other, other, mem.output_size_in_bytes,
                 mem.temp_size_in_bytes, mem.alias_size_in_bytes, extra, op_types(lowered), seconds)


# ---- the pieces ----------------------------------------------------------------------------------------------------

def step_fn(config: supir.SUPIRConfig, tile: int | None = None, stride: int | None = None):
    """``fn(params, x, sigma, cond_ctx, cond_vec, uncond_ctx, uncond_vec, control, cfg, control_scale)``: one
    CFG-guided denoiser evaluation (untiled, or tiled as the pipeline's tiled sampler does it)."""
    net = supir.SUPIRNetwork(config.diffusion)
    d = config.diffusion
    table = restore_edm.legacy_ddpm_sigmas(d.num_timesteps, d.linear_start, d.linear_end)

    def guided(params, x, sigma, c_ctx, c_vec, u_ctx, u_vec, control, cfg, control_scale):
        def denoise_cond(x_in, level, c, step):
            def network(z, t, i):
                return net.apply({"params": params}, z, jnp.broadcast_to(t, (z.shape[0],)), c, control_scale)

            return denoiser(network, "eps", table, np.arange(len(table)), quantize=True)(x_in, level, step)

        cond = {"crossattn": c_ctx, "vector": c_vec, "control": control}
        uncond = {"crossattn": u_ctx, "vector": u_vec, "control": control}
        out = classifier_free_guidance(denoise_cond, cond, uncond, cfg)(x, sigma, 0)
        return out.astype(x.dtype)   # the σ table is float32

    if tile is None:
        return guided

    def tiled(params, x, sigma, c_ctx, c_vec, u_ctx, u_vec, control, cfg, control_scale):
        c = x.shape[-1]
        fn = lambda t: guided(params, t[..., :c], sigma, c_ctx, c_vec, u_ctx, u_vec, t[..., c:], cfg,  # noqa: E731
                              control_scale)
        return tiled_blend(fn, jnp.concatenate([x, control], axis=-1), tile, stride)

    return tiled


def step_inputs(config: supir.SUPIRConfig, latent: int, dtype):
    u = config.diffusion.unet
    s = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    lat = s(1, latent, latent, u.in_channels)
    return (lat, s(), s(1, 77, u.context_dim), s(1, u.adm_in_channels), s(1, 77, u.context_dim),
            s(1, u.adm_in_channels), lat, s(), s())


def input_dtype(dtype, activations):
    return dtype if activations == "cast" else jnp.float32


def text_piece(config, params, dtype, activations):
    net = supir.SUPIRNet(config)
    fn = lambda p, tl, tg, sizes: net.apply({"params": p}, tl, tg, sizes, method="condition")  # noqa: E731
    n = config.clip_l.context_length
    inputs = (jax.ShapeDtypeStruct((1, n), jnp.int32), jax.ShapeDtypeStruct((1, n), jnp.int32),
              jax.ShapeDtypeStruct((1, 6), input_dtype(dtype, activations)))
    return analyse("text", activations, "CLIP-L + bigG, 1 prompt", fn, params, inputs, dtype)


def step_piece(name, config, params, dtype, activations, size, tile=None, stride=None):
    f = config.vae.downsample_factor
    latent = size // f
    inputs = step_inputs(config, latent, input_dtype(dtype, activations))
    if tile is None:
        detail = f"{size}² image, latent {latent}², untiled, batch 2"
    else:
        t = min(tile, latent)
        n = len(tile_starts(latent, t, max(t - stride, 0))) ** 2
        detail = f"{size}² image, latent {latent}², {n} tile(s) {t}² stride {stride}, batch 2"
    fn = step_fn(config, tile, stride)
    return analyse(name, activations, detail, lambda p, *a: fn(p["model"], *a), params, inputs, dtype)


def vae_piece(name, config, params, dtype, activations, size, vae_tile=None, overlap=None):
    f = config.vae.downsample_factor
    ae = supir.SUPIRAutoencoder(config.vae)
    encode = name.startswith("vae-encode")
    in_dtype = input_dtype(dtype, activations)
    side = size if vae_tile is None else min(vae_tile, size)
    extra, detail = 0, f"{size}² image, untiled"
    if vae_tile is not None:
        n = len(tile_starts(size, side, overlap)) ** 2
        out_side, out_c = (size // f, config.vae.embed_dim) if encode else (size, config.vae.out_channels)
        itemsize = jnp.dtype(in_dtype).itemsize
        in_side, in_c = (size, config.vae.in_channels) if encode else (size // f, config.vae.embed_dim)
        # 2 × (sum, weights) of the blend, and the whole input
        extra = (2 * out_side * out_side * (out_c + 1) + in_side * in_side * in_c) * itemsize
        detail = f"{size}² image, {n} tiles of {side}² px (overlap {overlap}); per-tile program + blend buffers"
    if encode:
        fn = lambda p, x: ae.apply({"params": p["first_stage_model"]}, x, method="denoise_encode")  # noqa: E731
        inputs = (jax.ShapeDtypeStruct((1, side, side, config.vae.in_channels), in_dtype),)
    else:
        fn = lambda p, z: ae.apply({"params": p["first_stage_model"]}, z, method="decode")  # noqa: E731
        inputs = (jax.ShapeDtypeStruct((1, side // f, side // f, config.vae.embed_dim), in_dtype),)
    return analyse(name, activations, detail, fn, params, inputs, dtype, extra)


# ---- main ----------------------------------------------------------------------------------------------------------

def fmt(n: int) -> str:
    return f"{n / GiB:.3g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    parser.add_argument("--pieces", default=",".join(DEFAULT_PIECES),
                        help=f"comma-separated subset of {','.join(PIECES)} (default: all but step-tiled)")
    parser.add_argument("--activations", choices=("jaxir", "cast", "both"), default="jaxir")
    parser.add_argument("--tiny", action="store_true", help="a small SUPIR config and sizes /8 (compiles in seconds)")
    parser.add_argument("--size", type=int, help="image side (default 1024; --tiny 128)")
    parser.add_argument("--large", type=int, help="image side of step-large (default 1536; --tiny 192)")
    parser.add_argument("--tile", type=int, help="latent tile of tiled sampling (default 128; --tiny 16)")
    parser.add_argument("--tile-stride", type=int, help="latent tile stride (default 64; --tiny 8)")
    parser.add_argument("--vae-tile", type=int, help="tiled VAE tile in pixels (default 512; --tiny 64)")
    parser.add_argument("--vae-tile-overlap", type=int, help="tiled VAE overlap in pixels (default 64; --tiny 16)")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    pieces = [p for p in args.pieces.split(",") if p]
    unknown = set(pieces) - set(PIECES)
    if unknown:
        parser.error(f"unknown pieces {sorted(unknown)}; choose from {', '.join(PIECES)}")
    d = (128, 192, 16, 8, 64, 16) if args.tiny else (1024, 1536, 128, 64, 512, 64)
    size, large, tile, stride, vae_tile, overlap = (
        d[i] if v is None else v for i, v in enumerate(
            (args.size, args.large, args.tile, args.tile_stride, args.vae_tile, args.vae_tile_overlap)))
    dtype = DTYPES[args.dtype]
    config = tiny_config() if args.tiny else supir.SUPIRConfig.supir_v0()
    start = time.perf_counter()

    shapes = supir.param_shapes(config)                 # eval_shape: nothing allocated
    counts = {k: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v)) for k, v in shapes.items()}
    total = sum(counts.values())
    params = as_dtype(shapes, dtype)
    all_params = nbytes(params)
    lines = [f"config: {'tiny (benchmarks/supir_memory.py tiny_config)' if args.tiny else 'SUPIRConfig.supir_v0()'}; "
             f"parameters {total:,} = " + ", ".join(f"{k} {n:,}" for k, n in counts.items()),
             f"parameter bytes: bf16 {fmt(2 * total)} GiB, fp32 {fmt(4 * total)} GiB "
             f"(this run: {args.dtype}, {fmt(all_params)} GiB resident during a restoration)"]
    print("\n".join(lines), flush=True)

    variants = ("jaxir", "cast") if args.activations == "both" else (args.activations,)
    if args.dtype == "fp32" and "cast" in variants:
        variants = ("jaxir",)
        print("fp32: --activations cast is the same program as jaxir; compiled once")
    results = []
    for name in pieces:
        for act in variants:
            if name == "text":
                r = text_piece(config, params, dtype, act)
            elif name in ("step", "step-large"):
                r = step_piece(name, config, params, dtype, act, size if name == "step" else large)
            elif name in ("step-tiled", "step-large-tiled"):
                r = step_piece(name, config, params, dtype, act, size if name == "step-tiled" else large, tile,
                               stride)
            else:
                tiled = name.endswith("-tiled")
                r = vae_piece(name, config, params, dtype, act, size, vae_tile if tiled else None,
                              overlap if tiled else None)
            results.append(r)
            peak = r.restoration_peak(all_params)
            print(f"{name} [{act}]: compiled in {r.compile_s:.1f} s; params {fmt(r.params_used)}, temp "
                  f"{fmt(r.temp)}, est. peak {fmt(peak)} GiB", flush=True)

    header = ("| piece | activations | what | params read GiB | other args GiB | output GiB | temp GiB | alias GiB "
              "| piece peak GiB | est. peak in a restoration GiB | fits 80 GB | fits 24 GiB | conv/dot ops | "
              "compile s |")
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        peak = r.restoration_peak(all_params)
        rows.append(f"| {r.name} | {r.activations} | {r.detail} | {fmt(r.params_used)} | {fmt(r.inputs)} | "
                    f"{fmt(r.output)} | {fmt(r.temp)} | {fmt(r.alias)} | {fmt(r.own_peak)} | {fmt(peak)} | "
                    f"{'yes' if peak <= ACCELERATOR else 'NO'} | {'yes' if peak <= CPU_MACHINE else 'NO'} | "
                    f"{r.ops} | {r.compile_s:.1f} |")
    machine = (f"jax {jax.__version__}, backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
               f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; dtype {args.dtype}; total "
               f"{(time.perf_counter() - start) / 60:.1f} min")
    notes = ("Est. peak in a restoration = every SUPIR parameter (resident) + the piece's inputs, output and XLA temp "
             "(+ blending buffers of the eager tiled VAE). 80 GB = 80·10⁹ B (74.5 GiB).")
    table = "\n".join(rows)
    print(f"\n{machine}\n\n{table}\n\n{notes}")
    if args.out:
        command = "python benchmarks/supir_memory.py " + " ".join(sys.argv[1:])
        args.out.write_text(f"# supir_memory: compile-only memory estimates of a SUPIR restoration\n\n"
                            f"Command: `{command}`  \n{machine}  \n" + "  \n".join(lines) +
                            f"\n\n{table}\n\n{notes}\n")
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
