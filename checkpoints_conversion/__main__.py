"""``python -m checkpoints_conversion <kind> <inputs…> --out DIR``: PyTorch checkpoints → a jaxir checkpoint.

  diffbir     --sd SD.ckpt --controlnet CN.pth [--config cldm.yaml]   DiffBIR ControlLDM (default: v2 sizes)
  supir       --sdxl SDXL.safetensors --supir SUPIR-v0Q.ckpt [--config SUPIR_v0.yaml]   SUPIR (default: v0)
  vae         IN [--layout ldm|diffusers] [--preset sd|sdxl]          AutoencoderKL (LDM: whole SD file or VAE alone)
  unet        IN [--layout ldm|diffusers] --preset sd15|sd21_base|sdxl_base
  controlnet  IN [--layout ldm|diffusers] [--preset diffbir|sd15_hint]
  text        IN --layout sd2|open_clip|transformers|sdxl_clip_l|sdxl_bigg --preset openclip_vit_h|openai_clip_l|openclip_bigg
  dinov2      IN [--layout hub|timm] [--preset vitb14|vits14|vitl14|vitg14[_reg4]]   DINOv2 ViT backbone
  stripformer IN [--preset gopro]                                      Stripformer (Stripformer_gopro.pth)
  rrdbnet     IN --preset realesrgan_x4plus|realesrgan_x2plus|bsrnet       RRDBNet (BasicSR or BSRGAN keys)
  scunet      IN [--preset scunet_color]                                SCUNet (scunet_color_real_psnr.pth)
  lpips       --net alex|vgg|squeeze --backbone TV.pth [--linear LIN.pth]   LPIPS v0.1 (torchvision + lpips heads)
  swinir      IN --preset classical_x2|classical_x4|realsr_m_x4|realsr_l_x4|diffbir_v1   SwinIR (releases, DiffBIR)
  hypir       --base SD21 --weights HYPIR_sd2.pth         HYPIR (SD 2.1 + UNet LoRA), one step at t = 200
  osediff     --base SD21 --weights osediff.pkl           OSEDiff (UNet + VAE-encoder LoRA, conv_in), t = 999
  pisa_sr     --base SD21 --weights pisa_sr.pkl           PiSA-SR (pixel + semantic UNet LoRAs), t = 1
              (SD21: a diffusers folder like stabilityai/stable-diffusion-2-1-base, or v2-1_512-ema-pruned.ckpt)

Every source tensor must be used or ignored on purpose and every parameter filled; otherwise the conversion
stops with one line naming the keys and shapes. The output holds config.json, the orbax params and
provenance.json (source paths and sha256).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

from checkpoints_conversion import diffbir
from checkpoints_conversion.errors import naming
from checkpoints_conversion.keymap import strip_prefix
from checkpoints_conversion.sources import read_state_dict, sha256
from jaxir import checkpoints
from jaxir.errors import JaxirInputError

CONVERTER_VERSION = "1"


def _vae(args):
    from checkpoints_conversion.vae_keys import convert_vae
    from jaxir.models.vae import VAEConfig

    config = getattr(VAEConfig, args.preset or "sd")()
    state = read_state_dict(args.input)
    if args.layout == "ldm" and any(k.startswith(diffbir.VAE_PREFIX) for k in state):
        state = strip_prefix(state, diffbir.VAE_PREFIX)
    return "vae", config, convert_vae(state, config, args.layout), {"vae": args.input}


def _unet(args):
    from checkpoints_conversion.unet_keys import convert_unet
    from jaxir.models.unet import UNetConfig

    config = getattr(UNetConfig, args.preset or "sd21_base")()
    return "unet", config, convert_unet(read_state_dict(args.input), config, args.layout), {"unet": args.input}


def _controlnet(args):
    from checkpoints_conversion.unet_keys import convert_controlnet
    from jaxir.models.controlnet import ControlNetConfig

    config = getattr(ControlNetConfig, args.preset or "diffbir")()
    params = convert_controlnet(read_state_dict(args.input), config, args.layout)
    return "controlnet", config, params, {"controlnet": args.input}


def _text(args):
    from checkpoints_conversion.text_keys import convert_text_encoder
    from jaxir.models import text

    config = getattr(text, args.preset or "openclip_vit_h")()
    params = convert_text_encoder(read_state_dict(args.input), config, args.layout)
    return "text_encoder", config, params, {"text": args.input}


def _dinov2(args):
    from checkpoints_conversion.dinov2_keys import convert_dinov2
    from jaxir.models.dinov2 import preset

    config = preset(args.preset or "vitb14")
    return "dinov2", config, convert_dinov2(read_state_dict(args.input), config, args.layout), {"dinov2": args.input}


def _diffbir(args):
    config = diffbir.load_config(args.config)
    config = dataclasses.replace(config, process=diffbir.load_process(args.diffusion_config, args.parameterization,
                                                                      args.zero_snr))
    params = diffbir.convert(args.sd, args.controlnet, config)
    sources = {"sd": args.sd, "controlnet": args.controlnet}
    if args.config:
        sources["config"] = args.config
    if args.diffusion_config:
        sources["diffusion_config"] = args.diffusion_config
    return "diffbir_cldm", config, params, sources


def _supir(args):
    from checkpoints_conversion import supir_keys

    config = supir_keys.load_config(args.config)
    sources = {"sdxl": args.sdxl, "supir": args.supir, **({"config": args.config} if args.config else {})}
    return "supir", config, supir_keys.convert(args.sdxl, args.supir, config), sources


def _stripformer(args):
    from checkpoints_conversion.stripformer_keys import convert_stripformer
    from jaxir.models.stripformer import StripformerConfig

    config = getattr(StripformerConfig, args.preset or "gopro")()
    return "stripformer", config, convert_stripformer(read_state_dict(args.input), config), {"stripformer": args.input}


def _rrdbnet(args):
    from checkpoints_conversion.rrdbnet_keys import convert_rrdbnet
    from jaxir.models.rrdbnet import RRDBNetConfig

    config = getattr(RRDBNetConfig, args.preset)()
    return "rrdbnet", config, convert_rrdbnet(read_state_dict(args.input), config), {"rrdbnet": args.input}


def _scunet(args):
    from checkpoints_conversion.scunet_keys import convert_scunet
    from jaxir.models.scunet import SCUNetConfig

    config = getattr(SCUNetConfig, args.preset)()
    return "scunet", config, convert_scunet(read_state_dict(args.input), config), {"scunet": args.input}


def _lpips(args):
    from checkpoints_conversion.lpips_keys import convert_lpips, default_linear_weights
    from jaxir.models.lpips_backbones import LPIPSConfig

    config = LPIPSConfig(args.net)
    linear = args.linear or default_linear_weights(args.net)
    params = convert_lpips(read_state_dict(args.backbone), read_state_dict(linear), config,
                           backbone_name=str(args.backbone), linear_name=str(linear))
    return "lpips", config, params, {"backbone": args.backbone, "linear": linear}


def _swinir(args):
    from checkpoints_conversion.swinir_keys import convert_swinir
    from jaxir.models.swinir import preset

    config = preset(args.preset)
    params = convert_swinir(read_state_dict(args.input), config, what=str(args.input))
    return "swinir", config, params, {"swinir": args.input}


def _onestep(args):
    from checkpoints_conversion.onestep import convert

    config, params, sources, notes = convert(args.kind, args.base, args.weights)
    return "onestep", config, params, sources, notes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m checkpoints_conversion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("diffbir", help="DiffBIR ControlLDM (SD checkpoint + ControlNet)")
    p.add_argument("--sd", required=True, help="Stable Diffusion 2.1 checkpoint in the LDM layout (.ckpt/.safetensors)")
    p.add_argument("--controlnet", required=True, help="DiffBIR ControlNet (v1_general.pth, v2.pth)")
    p.add_argument("--config", help="DiffBIR YAML (configs/inference/cldm.yaml format); default: v2 sizes")
    p.add_argument("--diffusion-config", help="DiffBIR's diffusion YAML (configs/inference/diffusion_v2.1.yaml for "
                   "v2.1); default: diffusion.yaml, SD 2.1's linear schedule with eps-prediction")
    p.add_argument("--parameterization", choices=("eps", "v"), help="what the UNet predicts (overrides the YAML)")
    p.add_argument("--zero-snr", action=argparse.BooleanOptionalAction, default=None,
                   help="the schedule rescaled to zero terminal SNR (overrides the YAML)")
    p.set_defaults(func=_diffbir)
    p = sub.add_parser("supir", help="SUPIR (SDXL base checkpoint + SUPIR-v0Q/v0F checkpoint)")
    p.add_argument("--sdxl", required=True, help="SDXL base 1.0 checkpoint in the sgm layout (.safetensors/.ckpt)")
    p.add_argument("--supir", required=True, help="SUPIR checkpoint (SUPIR-v0Q.ckpt, SUPIR-v0F.ckpt)")
    p.add_argument("--config", help="SUPIR option file (options/SUPIR_v0.yaml format, any sizes; local text-tower "
                   "configs are read relative to it); default: v0 sizes")
    p.set_defaults(func=_supir)
    for name, func, layouts, presets in (
            ("vae", _vae, ("ldm", "diffusers"), ("sd", "sdxl")),
            ("unet", _unet, ("ldm", "diffusers"), ("sd15", "sd21_base", "sdxl_base")),
            ("controlnet", _controlnet, ("ldm", "diffusers"), ("diffbir", "sd15_hint")),
            ("text", _text, ("sd2", "open_clip", "transformers", "sdxl_clip_l", "sdxl_bigg"),
             ("openclip_vit_h", "openai_clip_l", "openclip_bigg")),
            ("dinov2", _dinov2, ("hub", "timm"), None)):   # dinov2.preset names an unknown one itself
        p = sub.add_parser(name, help=f"{name} alone")
        p.add_argument("input", help="checkpoint file (.ckpt, .pth, .safetensors, .bin)")
        p.add_argument("--layout", default=layouts[0], choices=layouts)
        p.add_argument("--preset", choices=presets, help="architecture preset (default: see the module docstring)")
        p.set_defaults(func=func)
    p = sub.add_parser("stripformer", help="Stripformer deblurring (Stripformer_gopro.pth, DataParallel keys)")
    p.add_argument("input", help="Stripformer_gopro.pth (or a RealBlur one: same architecture)")
    p.add_argument("--preset", choices=("gopro",), help="architecture preset: gopro (default)")
    p.set_defaults(func=_stripformer)
    p = sub.add_parser("rrdbnet", help="RRDBNet: Real-ESRGAN x4plus/x2plus (BasicSR keys), BSRNet (BSRGAN keys)")
    p.add_argument("input", help="RealESRGAN_x4plus.pth, RealESRGAN_x2plus.pth or BSRNet.pth")
    p.add_argument("--preset", required=True, choices=("realesrgan_x4plus", "realesrgan_x2plus", "bsrnet"))
    p.set_defaults(func=_rrdbnet)
    p = sub.add_parser("scunet", help="SCUNet blind denoiser (cszn/SCUNet, DiffBIR v2 stage 1)")
    p.add_argument("input", help="scunet_color_real_psnr.pth (or scunet_color_real_gan.pth)")
    p.add_argument("--preset", default="scunet_color", choices=("scunet_color",))
    p.set_defaults(func=_scunet)
    p = sub.add_parser("lpips", help="LPIPS v0.1: torchvision ImageNet backbone + the lpips linear heads")
    p.add_argument("--net", required=True, choices=("alex", "vgg", "squeeze"))
    p.add_argument("--backbone", required=True, help="alexnet-owt-7be5be79.pth, vgg16-397923af.pth or "
                   "squeezenet1_1-b8a52dc0.pth (download.pytorch.org/models)")
    p.add_argument("--linear", help="LPIPS linear weights; default: lpips/weights/v0.1/<net>.pth of the lpips package")
    p.set_defaults(func=_lpips)
    p = sub.add_parser("swinir", help="SwinIR: classical/real-world SR releases, DiffBIR's stage-1 model")
    p.add_argument("input", help="001_classicalSR_*.pth, 003_realSR_*.pth or general_swinir_v1.ckpt")
    p.add_argument("--preset", required=True, choices=("classical_x2", "classical_x4", "realsr_m_x4", "realsr_l_x4",
                                                       "diffbir_v1"))
    p.set_defaults(func=_swinir)
    for name, release in (("hypir", "HYPIR_sd2.pth"), ("osediff", "osediff.pkl"), ("pisa_sr", "pisa_sr.pkl")):
        p = sub.add_parser(name, help=f"{name}: one-step restorer ({release} on SD 2.1)")
        p.add_argument("--base", required=True, help="SD 2.1-base: a diffusers folder (unet/, vae/, scheduler/, "
                       "optionally text_encoder/) or the LDM checkpoint v2-1_512-ema-pruned.ckpt")
        p.add_argument("--weights", required=True, help=f"the release file ({release})")
        p.set_defaults(func=_onestep)
    for p in sub.choices.values():
        p.add_argument("--out", required=True, help="new jaxir checkpoint directory")
        p.add_argument("--bf16", action="store_true", help="store parameters in bfloat16 (loaded as float32)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # a single-input converter's errors name its file; the two-file ones name the file themselves
        with naming(args.input) if hasattr(args, "input") else contextlib.nullcontext():
            kind, config, params, sources, *notes = args.func(args)
        import jax.numpy as jnp

        out = checkpoints.save(args.out, kind, config, params, converter=f"checkpoints_conversion {args.kind}",
                               sources={k: {"path": str(Path(v).resolve()), "sha256": sha256(v)}
                                        for k, v in sources.items()},
                               notes={"converter_version": CONVERTER_VERSION, **(notes[0] if notes else {})},
                               dtype=jnp.bfloat16 if args.bf16 else None)
    except JaxirInputError as err:
        print(f"checkpoints_conversion: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {kind} checkpoint to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
