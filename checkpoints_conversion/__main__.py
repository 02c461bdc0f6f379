"""``python -m checkpoints_conversion <kind> <inputs…> --out DIR``: PyTorch checkpoints → a jaxir checkpoint.

  diffbir     --sd SD.ckpt --controlnet CN.pth [--config cldm.yaml]   DiffBIR ControlLDM (default: v2 sizes)
  vae         IN [--layout ldm|diffusers] [--preset sd|sdxl]          AutoencoderKL (LDM: whole SD file or VAE alone)
  unet        IN [--layout ldm|diffusers] --preset sd15|sd21_base|sdxl_base
  controlnet  IN [--layout ldm|diffusers] [--preset diffbir|sd15_hint]
  text        IN --layout sd2|open_clip|transformers|sdxl_clip_l|sdxl_bigg --preset openclip_vit_h|openai_clip_l|openclip_bigg

Every source tensor must be used or ignored on purpose and every parameter filled; otherwise the conversion
stops with one line naming the keys and shapes. The output holds config.json, the orbax params and
provenance.json (source paths and sha256).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from checkpoints_conversion import diffbir
from checkpoints_conversion.errors import ConversionError
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


def _diffbir(args):
    config = diffbir.load_config(args.config)
    params = diffbir.convert(args.sd, args.controlnet, config)
    sources = {"sd": args.sd, "controlnet": args.controlnet}
    if args.config:
        sources["config"] = args.config
    return "diffbir_cldm", config, params, sources


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m checkpoints_conversion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("diffbir", help="DiffBIR ControlLDM (SD checkpoint + ControlNet)")
    p.add_argument("--sd", required=True, help="Stable Diffusion 2.1 checkpoint in the LDM layout (.ckpt/.safetensors)")
    p.add_argument("--controlnet", required=True, help="DiffBIR ControlNet (v1_general.pth, v2.pth)")
    p.add_argument("--config", help="DiffBIR YAML (configs/inference/cldm.yaml format); default: v2 sizes")
    p.set_defaults(func=_diffbir)
    for name, func, layouts in (("vae", _vae, ("ldm", "diffusers")), ("unet", _unet, ("ldm", "diffusers")),
                                ("controlnet", _controlnet, ("ldm", "diffusers")),
                                ("text", _text, ("sd2", "open_clip", "transformers", "sdxl_clip_l", "sdxl_bigg"))):
        p = sub.add_parser(name, help=f"{name} alone")
        p.add_argument("input", help="checkpoint file (.ckpt, .pth, .safetensors, .bin)")
        p.add_argument("--layout", default=layouts[0], choices=layouts)
        p.add_argument("--preset", help="architecture preset (see the module docstring)")
        p.set_defaults(func=func)
    for p in sub.choices.values():
        p.add_argument("--out", required=True, help="new jaxir checkpoint directory")
        p.add_argument("--bf16", action="store_true", help="store parameters in bfloat16 (loaded as float32)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        kind, config, params, sources = args.func(args)
        import jax.numpy as jnp

        out = checkpoints.save(args.out, kind, config, params, converter=f"checkpoints_conversion {args.kind}",
                               sources={k: {"path": str(Path(v).resolve()), "sha256": sha256(v)}
                                        for k, v in sources.items()},
                               notes={"converter_version": CONVERTER_VERSION},
                               dtype=jnp.bfloat16 if args.bf16 else None)
    except (ConversionError, JaxirInputError, AttributeError) as err:
        message = f"unknown preset {args.preset!r}" if isinstance(err, AttributeError) else str(err)
        print(f"checkpoints_conversion: error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {kind} checkpoint to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
