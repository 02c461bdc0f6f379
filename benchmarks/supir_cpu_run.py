"""A real SUPIR restoration at 1024² on this CPU machine: does it fit in 24 GiB, and how long does it take?

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/supir_cpu_run.py --steps 2 \\
        --out benchmarks/results_supir_cpu_run.md
    python benchmarks/supir_cpu_run.py --tiny --size 128     # the same path on a small SUPIR (seconds)
    python benchmarks/supir_cpu_run.py --dtype bf16          # on an accelerator: the 80 GB bf16 check

What runs: :class:`jaxir.pipelines.supir.SUPIRPipeline` — the whole restoration of ``jaxir restore --restorer
supir`` — on SUPIR v0 (:meth:`jaxir.models.supir.SUPIRConfig.supir_v0`: SDXL base UNet + GLVControl, SDXL VAE with
the ``denoise_encoder``, CLIP ViT-L + OpenCLIP bigG; 4.79 B parameters) in float32 (``--dtype bf16``: parameters
stored in bfloat16, as ``jaxir.load(path, dtype=jnp.bfloat16)`` gives them), with the tiled settings of
SUPIR's ``options/SUPIR_v0_tiled.yaml`` (sampling tiles of 128 latent pixels, stride 64; VAE tiles ``--vae-tile``).
The input is the bundled ``astronaut`` photo (512²) restored for SR ×2, so SUPIR samples at 1024² (latent 128²).

The weights are random (no checkpoint can be downloaded here): every kernel ``N(0, 1/fan_in)``, norms' scales 1,
biases 0, embeddings ``N(0, 0.02²)``, drawn leaf by leaf — on a CPU with NumPy, so no initialiser program is
compiled; on an accelerator on the device, one small jitted draw per distinct shape (89 for SUPIR v0), since
NumPy needs about a minute for 4.79 B numbers. Memory and time do not depend on the weights' values; the output is
checked to be finite and of the right size only.
The sampler's ``lax.scan`` over steps makes the peak independent of ``--steps``; the time per step is reported,
so a 50-step run's time is ``setup + 50 × step``.

Reported per phase (wall seconds, first call, so compilation included) and the process's peak RSS
(``getrusage``) and, on an accelerator, the device's peak allocation (``memory_stats()["peak_bytes_in_use"]``)
after each: parameters, building the pipeline (it encodes the two prompts with CLIP-L + bigG and
keeps no text tower), stage 1 (degradation-robust encoding, decoding and re-encoding, tiled), sampling, decoding +
colour fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.data import bundled_photos
from jaxir.models import supir
from jaxir.pipelines.supir import SUPIRPipeline, SUPIRSettings, stage1_color_fix

sys.path.insert(0, str(Path(__file__).parent))
from supir_memory import tiny_config  # noqa: E402

GiB = 2 ** 30
COMPILE_EVENTS = "/jax/core/compile/"
compile_seconds = [0.0]


def _count_compile(event: str, seconds: float, **_):
    if event.startswith(COMPILE_EVENTS):
        compile_seconds[0] += seconds


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB


def peak_device_gib() -> float | None:
    """The default device's peak allocation so far; None where the backend keeps no statistics (the CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / GiB if "peak_bytes_in_use" in stats else None


def random_params(config: supir.SUPIRConfig, dtype=jnp.float32, seed: int = 0):
    """Random parameters of ``config``'s shapes in ``dtype`` (module docstring), one leaf at a time."""
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    on_device = jax.default_backend() != "cpu"
    normal = jax.jit(lambda k, std, shape: jax.random.normal(k, shape, dtype) * std.astype(dtype),
                     static_argnums=2)

    def fill(index, path, shape):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "scale":
            return jnp.ones(shape.shape, dtype)
        if name == "bias":
            return jnp.zeros(shape.shape, dtype)
        std = 0.02 if name == "embedding" or len(shape.shape) < 2 else float(np.prod(shape.shape[:-1])) ** -0.5
        if on_device:
            return normal(jax.random.fold_in(key, index), np.float32(std), shape.shape)
        return jnp.asarray(rng.standard_normal(shape.shape, dtype=np.float32) * np.float32(std), dtype)

    shapes = supir.param_shapes(config)
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    return jax.tree.unflatten(treedef, [fill(i, path, shape) for i, (path, shape) in enumerate(paths)])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a small SUPIR of the same structure")
    parser.add_argument("--size", type=int, default=1024, help="sampling size in pixels")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--vae-tile", type=int, default=512)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="parameter storage")
    parser.add_argument("--out", help="write the table (markdown) here too")
    return parser.parse_args(argv)


def run(args) -> dict:
    """The restoration, phase by phase: ``rows`` (name, wall s, compiling s, peak RSS GiB, peak device GiB or
    None), the sampling time per step after compilation, the total, and the output's checks."""
    config = supir.SUPIRConfig.supir_v0()
    if args.tiny:   # the tokenizers emit CLIP's ids, so the tiny towers get CLIP's vocabulary
        config = tiny_config()
        config = dataclasses.replace(config, clip_l=dataclasses.replace(config.clip_l, vocab_size=49408),
                                     clip_g=dataclasses.replace(config.clip_g, vocab_size=49408))
    rows, t_all = [], time.perf_counter()

    jax.monitoring.register_event_duration_secs_listener(_count_compile)

    def phase(name, fn):
        t0, c0 = time.perf_counter(), compile_seconds[0]
        out = jax.block_until_ready(fn())
        rows.append((name, time.perf_counter() - t0, compile_seconds[0] - c0, peak_rss_gib(), peak_device_gib()))
        print(f"{name}: {rows[-1][1]:.1f} s (compiling {rows[-1][2]:.1f} s), peak RSS {rows[-1][3]:.2f} GiB, "
              f"peak device {gib_or_dash(rows[-1][4])} GiB", flush=True)
        return out

    dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[args.dtype]
    params = phase(f"parameters (random, {args.dtype})", lambda: random_params(config, dtype))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    settings = SUPIRSettings(steps=args.steps, min_size=args.size, tile_size=128, tile_stride=64,
                             vae_tile=args.vae_tile, vae_tile_overlap=64)
    model = supir.SUPIR(config)
    pipeline = phase("pipeline: both prompts encoded (CLIP-L + bigG), text towers released",
                     lambda: SUPIRPipeline(model, params, settings))
    del params   # the pipeline holds all but the text towers
    photo = jnp.asarray(bundled_photos(["astronaut"])[0].image)[None]
    lq = jax.image.resize(photo, (1, args.size // 2, args.size // 2, 3), "linear") if args.size != 1024 else photo
    image = pipeline.sampling_image(lq, 2.0)
    center, init, steps = pipeline.noise(jax.random.key(0), image.shape[:3], np.arange(1))
    z_lq, x_stage1, x_center = phase("stage 1: encode, decode, re-encode (tiled VAE)",
                                     lambda: pipeline.stage1(image, center))
    cond, uncond = pipeline.conditions(z_lq)
    z = phase(f"sampling, {args.steps} steps (tiled, CFG batch 2)",
              lambda: pipeline.sample(init, steps, x_center, cond, uncond))
    restored = phase("decode (tiled) + wavelet colour fix",
                     lambda: stage1_color_fix(settings.color_fix, pipeline.decode(z), x_stage1))
    total = time.perf_counter() - t_all
    _, sampling, sampling_compile, _, _ = next(row for row in rows if row[0].startswith("sampling"))
    return dict(rows=rows, n_params=n_params, image=image.shape[1:3], latent=z.shape[1:3],
                finite=bool(jnp.isfinite(restored).all()), right_size=restored.shape[1:3] == image.shape[1:3],
                total=total, sampling=sampling, per_step=(sampling - sampling_compile) / args.steps)


def gib_or_dash(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def report(result: dict, args, argv) -> str:
    """The markdown report of :func:`run`."""
    per_step, total = result["per_step"], result["total"]
    return "\n".join([
        f"# SUPIR {'tiny' if args.tiny else 'v0'} at {result['image'][0]}×{result['image'][1]} on "
        f"{jax.devices()[0].device_kind}, {args.dtype} parameters, random weights",
        "",
        f"Command: `python benchmarks/supir_cpu_run.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
        f"Machine: {platform.machine()}, {jax.local_device_count()} device(s), {len(jax.devices('cpu'))} "
        f"CPU device(s), jax {jax.__version__}; {result['n_params']:,} parameters; latent "
        f"{result['latent'][0]}×{result['latent'][1]}; output finite: {result['finite']}; total {total:.0f} s",
        "",
        "| phase | wall s (first call) | of which compiling s | peak RSS so far (GiB) | peak device memory so far (GiB) |",
        "|---|---|---|---|---|",
        *[f"| {name} | {seconds:.1f} | {comp:.1f} | {rss:.2f} | {gib_or_dash(dev)} |"
          for name, seconds, comp, rss, dev in result["rows"]],
        "",
        f"Sampling: {per_step:.1f} s per step after compilation (one guided denoiser evaluation, CFG batch 2), so "
        f"SUPIR's 50 steps take about {50 * per_step / 60:.0f} min here; everything else "
        f"{total - result['sampling']:.0f} s (first calls)."])


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    text = report(result, args, argv)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if result["finite"] and result["right_size"] else 1


if __name__ == "__main__":
    sys.exit(main())
