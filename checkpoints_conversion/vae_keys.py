"""Key maps for the LDM/Stable Diffusion ``AutoencoderKL`` (:mod:`jaxir.models.vae`) from two layouts.

* ``ldm``: the original CompVis/Stability/DiffBIR names (``encoder.down.0.block.1.conv1.weight``), i.e. the
  ``first_stage_model.`` tensors of an SD checkpoint with that prefix removed (see ``keymap.strip_prefix``), or a
  stand-alone LDM VAE checkpoint. Training checkpoints also hold the LPIPS/discriminator loss (``loss.*``) and EMA
  buffers (``model_ema.*``); both are skipped on purpose.
* ``diffusers``: ``diffusers.AutoencoderKL.state_dict()`` names. Diffusers numbers the decoder's ``up_blocks``
  from the deepest level, the reverse of LDM's ``up.{i}``; its attention projections are ``Linear`` (O, I) where
  LDM has 1×1 convolutions (O, I, 1, 1); older diffusers files name them ``query``/``key``/``value``/``proj_attn``
  instead of ``to_q``/``to_k``/``to_v``/``to_out.0`` (both are accepted).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import Rule, apply_rules
from jaxir.models.vae import VAEConfig, param_shapes

LDM_IGNORED = (r"loss\..*", r"model_ema\..*")
DIFFUSERS_IGNORED = ()


def _linear_as_1x1(weight: np.ndarray) -> np.ndarray:
    """``Linear`` weight (O, I) → flax 1×1 conv kernel (1, 1, I, O)."""
    return weight.T[None, None]


_LEAF = {"conv": ("kernel", None), "norm": ("scale", None), "linear": ("kernel", _linear_as_1x1)}


def _module_rules(source: str, target: str, layers) -> list[Rule]:
    """Rules for the layers ``(source_name, target_name, kind)`` of one module: ``{source}.{name}.weight|bias`` →
    ``{target}/{name}/kernel|scale|bias``; an empty ``source``/``target`` is the top level."""
    rules = []
    for src, dst, kind in layers:
        leaf, transform = _LEAF[kind]
        src = f"{source}\\.{src}" if source else src
        dst = f"{target}/{dst}" if target else dst
        rules += [Rule(src + r"\.weight", f"{dst}/{leaf}", transform), Rule(src + r"\.bias", f"{dst}/bias")]
    return rules


_LDM_RESNET = [("norm1", "norm1", "norm"), ("conv1", "conv1", "conv"), ("norm2", "norm2", "norm"),
               ("conv2", "conv2", "conv"), ("nin_shortcut", "nin_shortcut", "conv")]
_LDM_ATTN = [("norm", "norm", "norm"), ("q", "q", "conv"), ("k", "k", "conv"), ("v", "v", "conv"),
             ("proj_out", "proj_out", "conv")]
_CONV = [("conv", "conv", "conv")]
_ENDS = [("conv_in", "conv_in", "conv"), ("conv_out", "conv_out", "conv")]
_QUANT = [("quant_conv", "quant_conv", "conv"), ("post_quant_conv", "post_quant_conv", "conv")]


def ldm_rules() -> list[Rule]:
    """LDM names (without ``first_stage_model.``): the parameter paths mirror them (see :mod:`jaxir.models.vae`)."""
    part = r"(encoder|decoder)"
    return [
        *_module_rules(part + r"\.(down|up)\.(\d+)\.block\.(\d+)", r"\1/\2_\3/block_\4", _LDM_RESNET),
        *_module_rules(part + r"\.(down|up)\.(\d+)\.attn\.(\d+)", r"\1/\2_\3/attn_\4", _LDM_ATTN),
        *_module_rules(part + r"\.(down|up)\.(\d+)\.(downsample|upsample)", r"\1/\2_\3/\4", _CONV),
        *_module_rules(part + r"\.mid\.(block_1|block_2)", r"\1/mid/\2", _LDM_RESNET),
        *_module_rules(part + r"\.mid\.attn_1", r"\1/mid/attn_1", _LDM_ATTN),
        *_module_rules(part, r"\1", [*_ENDS, ("norm_out", "norm_out", "norm")]),
        *_module_rules("", "", _QUANT),
    ]


_DIFFUSERS_RESNET = [("norm1", "norm1", "norm"), ("conv1", "conv1", "conv"), ("norm2", "norm2", "norm"),
                     ("conv2", "conv2", "conv"), ("conv_shortcut", "nin_shortcut", "conv")]
_DIFFUSERS_ATTN = [("group_norm", "norm", "norm"), ("(?:to_q|query)", "q", "linear"),
                   ("(?:to_k|key)", "k", "linear"), ("(?:to_v|value)", "v", "linear"),
                   (r"(?:to_out\.0|proj_attn)", "proj_out", "linear")]


def diffusers_rules(config: VAEConfig) -> list[Rule]:
    """``diffusers.AutoencoderKL`` names; the config gives the level count that reverses ``up_blocks``.
    Diffusers has no attention inside levels, so it cannot hold a config with ``attn_resolutions``."""
    levels = len(config.ch_mult)
    part = r"(encoder|decoder)"
    rules = [
        *_module_rules(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)", r"encoder/down_\1/block_\2", _DIFFUSERS_RESNET),
        *_module_rules(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder/down_\1/downsample", _CONV),
    ]
    for i in range(levels):
        ldm_level = levels - 1 - i
        rules += [
            *_module_rules(rf"decoder\.up_blocks\.{i}\.resnets\.(\d+)", rf"decoder/up_{ldm_level}/block_\1",
                           _DIFFUSERS_RESNET),
            *_module_rules(rf"decoder\.up_blocks\.{i}\.upsamplers\.0", f"decoder/up_{ldm_level}/upsample", _CONV),
        ]
    return rules + [
        *_module_rules(part + r"\.mid_block\.resnets\.0", r"\1/mid/block_1", _DIFFUSERS_RESNET),
        *_module_rules(part + r"\.mid_block\.resnets\.1", r"\1/mid/block_2", _DIFFUSERS_RESNET),
        *_module_rules(part + r"\.mid_block\.attentions\.0", r"\1/mid/attn_1", _DIFFUSERS_ATTN),
        *_module_rules(part, r"\1", [*_ENDS, ("conv_norm_out", "norm_out", "norm")]),
        *_module_rules("", "", _QUANT),
    ]


def convert_vae(state_dict: Mapping[str, np.ndarray], config: VAEConfig, layout: str = "ldm") -> dict:
    """Flax parameters of ``AutoencoderKL(config)`` from a VAE state dict in the ``"ldm"`` or ``"diffusers"``
    layout (keys without any ``first_stage_model.``/``vae.`` prefix); strict: see ``keymap.apply_rules``."""
    if layout == "ldm":
        rules, ignore = ldm_rules(), LDM_IGNORED
    elif layout == "diffusers":
        rules, ignore = diffusers_rules(config), DIFFUSERS_IGNORED
    else:
        raise ConversionError(f"unknown VAE layout {layout!r}; expected 'ldm' or 'diffusers'")
    return apply_rules(state_dict, rules, param_shapes(config), ignore=ignore, what=f"VAE ({layout} layout)")
