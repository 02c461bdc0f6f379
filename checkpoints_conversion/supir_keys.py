"""SUPIR: an SDXL base checkpoint + a SUPIR checkpoint (SUPIR-v0Q/v0F) → one jaxir checkpoint of kind ``supir``.

Sources, as SUPIR's ``create_SUPIR_model`` reads them (``load_state_dict(SDXL, strict=False)`` then
``load_state_dict(SUPIR, strict=False)``, so a tensor in both files is taken from the SUPIR file):

* SDXL (sgm layout): ``model.diffusion_model.*`` (the UNet), ``first_stage_model.*`` (the VAE),
  ``conditioner.embedders.0.transformer.*`` (CLIP ViT-L, transformers names), ``conditioner.embedders.1.model.*``
  (OpenCLIP bigG);
* SUPIR: ``model.control_model.*`` (GLVControl), ``model.diffusion_model.project_modules.*`` (ZeroSFT /
  ZeroCrossAttn), ``first_stage_model.denoise_encoder.*`` (the degradation-robust encoder).

Every tensor is used or ignored on purpose (schedule buffers, EMA copies, the text encoders' unused parts; see
``IGNORED`` and :mod:`checkpoints_conversion.text_keys`), every parameter is filled, shapes are checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from checkpoints_conversion.diffbir import SD_IGNORED
from checkpoints_conversion.errors import ConversionError, naming
from checkpoints_conversion.keymap import Rule, apply_rules, strip_prefix
from checkpoints_conversion.sources import read_state_dict
from checkpoints_conversion.text_keys import LAYOUTS as TEXT_LAYOUTS
from checkpoints_conversion.text_keys import convert_text_encoder
from checkpoints_conversion.unet_keys import ldm_rules
from checkpoints_conversion.vae_keys import LDM_IGNORED as VAE_IGNORED
from checkpoints_conversion.vae_keys import convert_vae
from checkpoints_conversion.vae_keys import ldm_rules as vae_ldm_rules
from jaxir.errors import JaxirInputError
from jaxir.models import supir
from jaxir.models.vae import param_shapes as vae_param_shapes

NETWORK_PREFIX = "model."
UNET_PREFIX = "model.diffusion_model."
CONTROL_PREFIX = "model.control_model."
VAE_PREFIX = "first_stage_model."
DENOISE_ENCODER = "denoise_encoder."
CLIP_L_PREFIX = TEXT_LAYOUTS["sdxl_clip_l"].prefix
CLIP_G_PREFIX = TEXT_LAYOUTS["sdxl_bigg"].prefix
# sgm's DiscreteDenoiser table and LatentDiffusion-style buffers: jaxir recomputes them.
IGNORED = (r"denoiser\.sigmas", *SD_IGNORED)


def _module(source: str, target: str, norm: bool = False) -> list[Rule]:
    return [Rule(source + r"\.weight", target + ("/scale" if norm else "/kernel")),
            Rule(source + r"\.bias", target + "/bias")]


def project_module_rules() -> list[Rule]:
    """``project_modules.{k}.*`` (ZeroSFT: ``param_free_norm``, ``mlp_shared.0``, ``zero_mul``, ``zero_add``,
    ``zero_conv``; ZeroCrossAttn: ``norm1``, ``norm2``, ``attn.to_{q,k,v}``, ``attn.to_out.0``)."""
    k = r"project_modules\.(?P<k>\d+)"
    out = r"project_modules_\g<k>"
    rules = _module(rf"{k}\.(?P<n>param_free_norm|norm1|norm2)", rf"{out}/\g<n>", norm=True)
    rules += _module(rf"{k}\.mlp_shared\.0", f"{out}/mlp_shared_0")
    rules += _module(rf"{k}\.(?P<n>zero_mul|zero_add|zero_conv)", rf"{out}/\g<n>")
    rules += [Rule(rf"{k}\.attn\.(?P<p>to_[qkv])\.weight", rf"{out}/attn/\g<p>/kernel")]
    return rules + _module(rf"{k}\.attn\.to_out\.0", f"{out}/attn/to_out_0")


def _prefixed(rules: list[Rule], source_prefix: str, target_prefix: str) -> list[Rule]:
    return [Rule(source_prefix + r.source, f"{target_prefix}/{r.target}", r.transform) for r in rules]


def network_rules() -> list[Rule]:
    """``ControlWrapper`` state-dict keys (``diffusion_model.*``, ``control_model.*``) → :class:`SUPIRNetwork`."""
    return (_prefixed(ldm_rules() + project_module_rules(), r"diffusion_model\.", "diffusion_model")
            + _prefixed(ldm_rules() + _module(r"input_hint_block\.0", "input_hint_block_0"), r"control_model\.",
                        "control_model"))


def convert_network(state: Mapping[str, np.ndarray], config: supir.SUPIRDiffusionConfig) -> dict:
    """:class:`jaxir.models.supir.SUPIRNetwork` parameters from ``ControlWrapper`` keys (``SUPIRModel.model``;
    strip ``model.`` from a whole checkpoint first)."""
    return apply_rules(state, network_rules(), supir.network_param_shapes(config), what="SUPIR network")


def convert_first_stage(state: Mapping[str, np.ndarray], config) -> dict:
    """``first_stage_model.*`` without prefix → :class:`SUPIRAutoencoder` parameters: the LDM VAE, and
    ``denoise_encoder.*`` by the encoder's rules."""
    denoise = {"encoder." + k: v for k, v in strip_prefix(state, DENOISE_ENCODER).items()}
    if not denoise:
        raise ConversionError(f"SUPIR: no {VAE_PREFIX}{DENOISE_ENCODER}* tensors (not a SUPIR checkpoint?)")
    params = convert_vae({k: v for k, v in state.items() if not k.startswith(DENOISE_ENCODER)}, config, "ldm")
    shapes = {"encoder": vae_param_shapes(config)["encoder"]}
    params["denoise_encoder"] = apply_rules(denoise, vae_ldm_rules(), shapes, ignore=VAE_IGNORED,
                                            what="SUPIR denoise_encoder")["encoder"]
    return params


def merge_sources(sdxl: Mapping[str, np.ndarray], supir_state: Mapping[str, np.ndarray], sdxl_path="SDXL",
                  supir_path="SUPIR") -> dict[str, np.ndarray]:
    """SDXL's tensors overridden by SUPIR's (the official load order), after checking each file is what it
    claims to be."""
    if not any(k.startswith(UNET_PREFIX) for k in sdxl) or not any(k.startswith(CLIP_G_PREFIX) for k in sdxl):
        found = ", ".join(sorted({k.split(".")[0] for k in sdxl})[:5])
        raise ConversionError(f"{sdxl_path}: not an SDXL checkpoint in the sgm layout (needs {UNET_PREFIX}* and "
                              f"{CLIP_G_PREFIX}*; top-level names: {found})")
    if not any(k.startswith(CONTROL_PREFIX) for k in supir_state):
        found = ", ".join(sorted({k.split(".")[0] for k in supir_state})[:5])
        raise ConversionError(f"{supir_path}: not a SUPIR checkpoint (no {CONTROL_PREFIX}* tensors; top-level "
                              f"names: {found})")
    return {**sdxl, **supir_state}


def convert_state(state: Mapping[str, np.ndarray], config: supir.SUPIRConfig) -> dict:
    """The :class:`jaxir.models.supir.SUPIRNet` parameter tree from the merged sgm-layout state dict."""
    known = (NETWORK_PREFIX, VAE_PREFIX, CLIP_L_PREFIX, CLIP_G_PREFIX)
    stray = [k for k in state if not k.startswith(known) and not any(re.fullmatch(p, k) for p in IGNORED)]
    if stray:
        raise ConversionError(f"SUPIR: unused source tensors: {', '.join(sorted(stray)[:6])}")
    return {"model": convert_network(strip_prefix(state, NETWORK_PREFIX), config.diffusion),
            "first_stage_model": convert_first_stage(strip_prefix(state, VAE_PREFIX), config.vae),
            "clip_l": convert_text_encoder(state, config.clip_l, "sdxl_clip_l"),
            "clip_g": convert_text_encoder(state, config.clip_g, "sdxl_bigg")}


def load_config(path: str | Path | None) -> supir.SUPIRConfig:
    """The architecture from a SUPIR option file (``options/SUPIR_v0.yaml`` format), or the v0 preset."""
    if path is None:
        return supir.SUPIRConfig.supir_v0()
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConversionError(f"{path}: not a readable YAML config ({type(err).__name__})") from None
    try:
        return supir.SUPIRConfig.from_options(data, Path(path).parent)
    except JaxirInputError as err:   # the config's own check: it names what is missing, not the file
        raise ConversionError(f"{path}: {err}") from None
    except (AttributeError, KeyError, TypeError, ValueError) as err:   # a YAML of something else
        raise ConversionError(f"{path}: not a SUPIR option file ({type(err).__name__}: {err})") from None


def convert(sdxl_path, supir_path, config: supir.SUPIRConfig) -> dict:
    """Read both files and convert (see the module docstring). Reading errors name the file and its option;
    the tensors of the two files are merged before they are mapped (SUPIR overrides SDXL's), so an error
    of the mapping names both."""
    with naming(sdxl_path, "--sdxl"):
        sdxl = read_state_dict(sdxl_path)
    with naming(supir_path, "--supir"):
        supir_state = read_state_dict(supir_path)
    state = merge_sources(sdxl, supir_state, f"{sdxl_path} (--sdxl)", f"{supir_path} (--supir)")
    with naming(f"{sdxl_path} (--sdxl) merged with {supir_path} (--supir)"):
        return convert_state(state, config)
