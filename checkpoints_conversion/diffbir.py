"""DiffBIR ControlLDM: a Stable Diffusion checkpoint (LDM layout) + a DiffBIR ControlNet state dict → one jaxir
checkpoint of kind ``diffbir_cldm``.

The SD file carries the UNet (``model.diffusion_model.``), the VAE (``first_stage_model.``) and the OpenCLIP text
encoder (``cond_stage_model.``); its diffusion-schedule buffers and EMA copies are ignored on purpose (jaxir
recomputes schedules from the diffusion process recorded in the checkpoint's config: DiffBIR's ``diffusion.yaml``
(``--diffusion-config``; SD 2.1's ε-prediction by default, v-prediction with zero terminal SNR for v2.1). The
ControlNet file is DiffBIR's release format (``v1_general.pth``, ``v2.pth``): the
IRControlNet's tensors without prefix.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from checkpoints_conversion.errors import ConversionError, naming
from checkpoints_conversion.keymap import strip_prefix
from checkpoints_conversion.sources import read_state_dict
from checkpoints_conversion.text_keys import convert_text_encoder
from checkpoints_conversion.unet_keys import convert_controlnet, convert_unet
from checkpoints_conversion.vae_keys import convert_vae
from jaxir.errors import JaxirInputError
from jaxir.models.cldm import ControlLDMConfig, DiffusionProcess

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."
# LatentDiffusion's registered buffers (betas, ᾱ, posterior coefficients, …) and EMA shadows.
SD_IGNORED = (r"betas", r"alphas_cumprod(_prev)?", r"sqrt_(recip|recipm1|one_minus)?_?alphas_cumprod",
              r"log_one_minus_alphas_cumprod", r"posterior_.*", r"lvlb_weights", r"logvar", r"model_ema\..*",
              r"scale_factor")


def _yaml_params(path: str | Path, what: str) -> dict:
    """The ``params`` mapping of one of DiffBIR's ``{target, params}`` YAML files (or the mapping itself)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConversionError(f"{path}: not a readable YAML config ({type(err).__name__})") from None
    params = data.get("params", data) if isinstance(data, dict) else None
    if not isinstance(params, dict):
        raise ConversionError(f"{path}: not a DiffBIR {what} config")
    return params


def load_config(path: str | Path | None) -> ControlLDMConfig:
    """The architecture from DiffBIR's YAML (``configs/inference/cldm.yaml`` format), or the v2 preset."""
    if path is None:
        return ControlLDMConfig.diffbir_v2()
    params = _yaml_params(path, "ControlLDM")
    try:
        return ControlLDMConfig.from_diffbir_yaml(params)
    except JaxirInputError as err:   # the config's own check: it names what is missing, not the file
        raise ConversionError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError) as err:   # a YAML of something else
        raise ConversionError(f"{path}: not a DiffBIR ControlLDM config ({type(err).__name__}: {err})") from None


def load_process(path: str | Path | None, parameterization: str | None, zero_snr: bool | None):
    """The diffusion process from DiffBIR's ``diffusion*.yaml`` (default: ``configs/inference/diffusion.yaml``,
    SD 2.1's ε-prediction), with ``parameterization`` / ``zero_snr`` given on the command line taking precedence."""
    process = DiffusionProcess()
    if path is not None:
        try:
            process = DiffusionProcess.from_diffbir_yaml(_yaml_params(path, "diffusion"))
        except (JaxirInputError, TypeError, ValueError) as err:
            raise ConversionError(f"{path}: {err}") from None
    changes = {k: v for k, v in (("parameterization", parameterization), ("zero_snr", zero_snr)) if v is not None}
    return dataclasses.replace(process, **changes)


def _split_sd(state: dict, path) -> dict[str, dict]:
    parts = {name: strip_prefix(state, prefix) for name, prefix in
             (("unet", UNET_PREFIX), ("vae", VAE_PREFIX), ("text", TEXT_PREFIX))}
    if not parts["unet"]:
        prefixes = sorted({k.split(".")[0] for k in state})[:5]
        raise ConversionError(f"{path}: not a Stable Diffusion checkpoint in the LDM layout (no {UNET_PREFIX}* "
                              f"tensors; top-level names: {', '.join(prefixes)})")
    for name in ("vae", "text"):
        if not parts[name]:
            raise ConversionError(f"{path}: has no {name} tensors ({VAE_PREFIX if name == 'vae' else TEXT_PREFIX}*)")
    stray = [k for k in state if not k.startswith((UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX))
             and not any(re.fullmatch(p, k) for p in SD_IGNORED)]
    if stray:
        raise ConversionError(f"{path}: unused source tensors: {', '.join(sorted(stray)[:6])}")
    return parts


def convert(sd_path, controlnet_path, config: ControlLDMConfig) -> dict:
    """The ``ControlLDMNet`` parameter tree ``{unet, controlnet, vae, text}``; an error names the file at fault
    and its command-line option (``--sd`` or ``--controlnet``)."""
    with naming(sd_path, "--sd"):
        parts = _split_sd(read_state_dict(sd_path), sd_path)
    with naming(controlnet_path, "--controlnet"):   # both files are what they claim before the long conversion
        control = read_state_dict(controlnet_path)
        if any(k.startswith(UNET_PREFIX) for k in control):
            raise ConversionError("this is a Stable Diffusion checkpoint, not a DiffBIR ControlNet")
    with naming(sd_path, "--sd"):
        params = {"unet": convert_unet(parts["unet"], config.unet, "ldm"),
                  "vae": convert_vae(parts["vae"], config.vae, "ldm"),
                  "text": convert_text_encoder({TEXT_PREFIX + k: v for k, v in parts["text"].items()}, config.text,
                                               "sd2")}
    with naming(controlnet_path, "--controlnet"):
        params["controlnet"] = convert_controlnet(control, config.controlnet, "ldm")
    return params
