"""One HYPIR restoration at 512², jaxir against the PyTorch code path (diffusers + peft) on this CPU, in one process.

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/bench_onestep.py --repeats 3 \\
        --out benchmarks/results_onestep.md
    # smoke test (a minute): --small --repeats 1

Model: SD 2.1-base sizes (diffusers ``UNet2DConditionModel`` with SD 2.1's config, ``AutoencoderKL`` with SD's),
random weights (torch's default initialisation), a peft LoRA of rank ``--rank`` (``lora_alpha = r``, HYPIR's
target modules, random A and B) kept unmerged on the PyTorch side as HYPIR runs it (``add_adapter``). jaxir converts
the same tensors (``checkpoints_conversion.unet_keys``/``vae_keys`` diffusers rules,
:func:`checkpoints_conversion.onestep.hypir_from_state`): base + dense delta with a traced LoRA scale.

One restoration, as HYPIR's ``BaseEnhancer.enhance`` with ``upscale=4, patch_size=512`` does it on a 128² LQ image
(one tile): bicubic ×4, VAE posterior sample (the same recorded noise on both sides), UNet at t = 200 with a given
prompt embedding (text encoders are not part of the benchmark), x0 from the DDPM posterior, decode, wavelet colour
fix, clamp. PyTorch: these steps written with diffusers modules and HYPIR's formulas (``torch.no_grad``, float32);
jaxir: :class:`jaxir.pipelines.onestep.OneStep` with the ``hypir`` preset (one jit). Each repeat times each side
Each side runs in its own child process (``--side``; SD-sized PyTorch and jaxir models together do not fit in 23 GiB
beside other work), ``--rounds`` rounds alternating which side goes first, each child timing ``--repeats``
restorations after one untimed (jaxir: compiling) call; the table shows the minimum, the jaxir compile time (first
call − best), the ratio PyTorch / jaxir (> 1: jaxir faster), the max abs difference of the outputs and the peak
resident set (``VmHWM``, reset after the model is built: model resident + the restorations; jaxir: base + dense LoRA
delta + the merged weights inside the program).
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxir.runtime import release_freed_host_memory

HYPIR_MODULES = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out", "proj_in",
                 "proj_out", "ff.net.2", "ff.net.0.proj"]
T = 200
LQ = 128
UPSCALE = 4


def torch_models(small: bool, rank: int, seed: int = 0):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(seed)
    if small:
        unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64, 64, 64), attention_head_dim=(1, 2, 2, 2),
                                    cross_attention_dim=64, use_linear_projection=True, norm_num_groups=32)
        vae = AutoencoderKL(block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2)
    else:   # stabilityai/stable-diffusion-2-1-base unet/ and vae/ configs
        unet = UNet2DConditionModel(sample_size=64, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
                                    use_linear_projection=True)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                            sample_size=512)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=HYPIR_MODULES))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.01)
    return unet.eval(), vae.eval()


def inputs(context_dim: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    lq = rng.uniform(size=(1, LQ, LQ, 3)).astype(np.float32)
    noise = rng.standard_normal((1, LQ * UPSCALE // 8, LQ * UPSCALE // 8, 4)).astype(np.float32)
    context = rng.standard_normal((1, 77, context_dim)).astype(np.float32)
    return lq, noise, context


def torch_restore(unet, vae, alphas_cumprod, lq, noise, context):
    """HYPIR's ``enhance`` for one 512² tile (module docstring), NHWC in and out."""
    import torch
    from torch.nn import functional as F

    def wavelet_decomposition(x):
        kernel = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=x.dtype)[None, None].repeat(3, 1, 1, 1) / 16
        high = torch.zeros_like(x)
        for i in range(5):
            r = 2 ** i
            low = F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), kernel, groups=3, dilation=r)
            high, x = high + (x - low), low
        return high, x

    with torch.no_grad():
        lq_up = F.interpolate(torch.from_numpy(lq).permute(0, 3, 1, 2), scale_factor=UPSCALE, mode="bicubic")
        posterior = vae.encode(lq_up * 2 - 1).latent_dist
        z = (posterior.mean + posterior.std * torch.from_numpy(noise).permute(0, 3, 1, 2)) * vae.config.scaling_factor
        eps = unet(z, torch.tensor([T]), encoder_hidden_states=torch.from_numpy(context)).sample
        a = alphas_cumprod[T]
        z0 = (z - (1 - a) ** 0.5 * eps) / a ** 0.5
        x = (vae.decode(z0 / vae.config.scaling_factor).sample + 1) / 2
        out = wavelet_decomposition(x)[0] + wavelet_decomposition(lq_up)[1]
        return out.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def jaxir_pipeline(unet, vae, small: bool):
    from checkpoints_conversion.onestep import hypir_from_state
    from checkpoints_conversion.sd_base import Base
    from checkpoints_conversion.unet_keys import convert_unet
    from checkpoints_conversion.vae_keys import convert_vae
    from jaxir.models.cldm import DiffusionProcess
    from jaxir.models.onestep import OneStepModel
    from jaxir.models.unet import UNetConfig
    from jaxir.models.vae import VAEConfig
    from jaxir.pipelines.onestep import OneStep, OneStepSettings

    state = {k: v.detach().numpy() for k, v in unet.state_dict().items()}
    base_state = {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
    lora_state = {k: v for k, v in state.items() if "lora_" in k}
    if small:
        unet_config = UNetConfig(model_channels=32, channel_mult=(1, 2, 2, 2), num_head_channels=32, context_dim=64)
        vae_config = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2))
    else:
        unet_config, vae_config = UNetConfig.sd21_base(), VAEConfig.sd()
    params = {"unet": convert_unet(base_state, unet_config, "diffusers"),
              "vae": convert_vae({k: v.detach().numpy() for k, v in vae.state_dict().items()}, vae_config,
                                 "diffusers")}
    base = Base(Path("random"), "diffusers", unet_config, vae_config, DiffusionProcess(), None, params)
    config, params, _ = hypir_from_state(base, lora_state)
    return OneStep(OneStepModel(config), params, OneStepSettings.preset("hypir"))


def jaxir_restore(pipeline, lq, noise, context):
    import jax.numpy as jnp

    x, ref = pipeline.program.prepare(jnp.asarray(lq), (LQ * UPSCALE, LQ * UPSCALE))
    return np.asarray(pipeline.restore_prepared(x, ref, context, noise[None]).block_until_ready())


def build(side: str, small: bool, rank: int):
    """``(restore(lq, noise, context) → image, context_dim)`` of one side."""
    from jaxir.diffusion import schedule as S

    unet, vae = torch_models(small, rank)
    context_dim = unet.config.cross_attention_dim
    if side == "torch":
        alphas = S.alphas_cumprod(S.sd_linear_betas(1000, 0.00085, 0.012))
        return functools.partial(torch_restore, unet, vae, alphas), context_dim
    return functools.partial(jaxir_restore, jaxir_pipeline(unet, vae, small)), context_dim   # torch copies dropped


def peak_resident_gib() -> float:
    """VmHWM of this process (the peak resident set since the last reset), GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def run_side(side: str, small: bool, rank: int, repeats: int, out: Path) -> dict:
    """Child mode: build ``side``, restore once (jaxir: compilation), then ``repeats`` timed restorations; the
    output image is saved to ``out``. Peak memory is measured from after the build (VmHWM reset)."""
    restore, context_dim = build(side, small, rank)
    release_freed_host_memory()
    Path("/proc/self/clear_refs").write_text("5")   # reset the peak resident set (VmHWM) to the current one
    data = inputs(context_dim)
    start = time.perf_counter()
    image = restore(*data)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        image = restore(*data)
        times.append(time.perf_counter() - start)
    np.save(out, image)
    return {"first": first, "times": times, "peak_gib": peak_resident_gib()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed restorations per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="child processes per side, alternating sides")
    parser.add_argument("--rank", type=int, default=256, help="LoRA rank (HYPIR's release: 256)")
    parser.add_argument("--small", action="store_true", help="a small UNet/VAE (smoke test)")
    parser.add_argument("--side", choices=("torch", "jaxir"), help="child mode: one side (see run_side)")
    parser.add_argument("--image", help="child mode: where to save the output image (.npy)")
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args(argv)
    if args.side:
        print(json.dumps(run_side(args.side, args.small, args.rank, args.repeats, Path(args.image))))
        return 0
    import jax
    import torch

    results = {"torch": [], "jaxir": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for side in (("torch", "jaxir") if round_ % 2 == 0 else ("jaxir", "torch")):
                cmd = [sys.executable, __file__, "--side", side, "--rank", str(args.rank), "--repeats",
                       str(args.repeats), "--image", f"{tmp}/{side}.npy"] + (["--small"] if args.small else [])
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results[side].append(json.loads(out.strip().splitlines()[-1]))
                print(side, results[side][-1], flush=True)
        diff = float(np.abs(np.load(f"{tmp}/torch.npy") - np.load(f"{tmp}/jaxir.npy")).max())
    best = {side: min(t for r in rs for t in r["times"]) for side, rs in results.items()}
    memory = {side: max(r["peak_gib"] for r in rs) for side, rs in results.items()}
    compile_s = min(r["first"] for r in results["jaxir"]) - best["jaxir"]
    size = "small UNet/VAE" if args.small else "SD 2.1-base sizes"
    lines = [
        "# One-step restoration (HYPIR): jaxir vs PyTorch (diffusers + peft), same CPU, same run", "",
        f"`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/bench_onestep.py --repeats "
        f"{args.repeats} --rounds {args.rounds} --rank {args.rank}{' --small' if args.small else ''}`  ",
        f"{time.strftime('%Y-%m-%d')}, jax {jax.__version__}, torch {torch.__version__} on "
        f"{torch.get_num_threads()} threads; {size}, random weights, LoRA rank {args.rank} (unmerged on both sides); "
        f"{LQ}² LQ → {LQ * UPSCALE}² (one 512² tile); each side in its own child process (the two SD-sized models "
        f"do not fit in this machine's memory together), {args.rounds} rounds alternating which side goes first, "
        f"min over {args.rounds}×{args.repeats} restorations per side.", "",
        "| side | restoration s | peak memory GiB (model resident + one restoration) |", "|---|---|---|",
        f"| PyTorch (diffusers + peft) | {best['torch']:.2f} | {memory['torch']:.2f} |",
        f"| jaxir | {best['jaxir']:.2f} | {memory['jaxir']:.2f} |", "",
        f"PyTorch / jaxir: **{best['torch'] / best['jaxir']:.2f}×** (> 1: jaxir faster); jaxir compile "
        f"{compile_s:.1f} s; max abs difference of the outputs (in [0, 1]) {diff:.1e}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
