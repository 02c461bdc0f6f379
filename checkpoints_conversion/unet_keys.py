"""Key maps for the LDM UNet (``jaxir.models.unet``) and the ControlNets (``jaxir.models.controlnet``).

Two source layouts:

* LDM (Stability-AI ``openaimodel``; SD/SDXL checkpoints under ``model.diffusion_model.``, DiffBIR's ControlNet
  releases without prefix, lllyasviel ControlNets under ``control_model.``): the flax names mirror the module paths,
  so the map is a few regular expressions and needs no config.
* diffusers (``UNet2DConditionModel``, ``ControlNetModel`` state dicts): ``down_blocks.{level}.resnets.{r}`` etc.
  map to ``input_blocks_{i}_{j}`` by walking the model's block layout (``encoder_layout``/``decoder_layout``), so the
  indices follow from the config. Written from the diffusers module structure, not from its converters.

Strict accounting (``apply_rules``): every source tensor used, every parameter filled once, shapes checked.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import Rule, apply_rules, strip_prefix
from jaxir.models import controlnet as cn
from jaxir.models import unet as un

LDM_UNET_PREFIX = "model.diffusion_model."
LDM_CONTROLNET_PREFIX = "control_model."
LAYOUTS = ("ldm", "diffusers")


def _module(source: str, target: str, norm: bool = False) -> list[Rule]:
    """``{source}.weight``/``.bias`` → ``{target}/kernel`` (``scale`` for a norm) and ``/bias``."""
    return [Rule(source + r"\.weight", target + ("/scale" if norm else "/kernel")),
            Rule(source + r"\.bias", target + "/bias")]


def _inner(source_prefix: str, target_prefix: str, inner) -> list[Rule]:
    """Rules for the submodules ``inner`` = [(source regex, target template, is_norm)] under a block prefix."""
    rules = []
    for source, target, norm in inner:
        rules += _module(rf"{source_prefix}\.{source}" if source else source_prefix,
                         f"{target_prefix}/{target}" if target else target_prefix, norm)
    return rules


_TRANSFORMER = [  # SpatialTransformer / diffusers Transformer2DModel: the same names
    ("norm", "norm", True), ("proj_in", "proj_in", False), ("proj_out", "proj_out", False),
    (r"transformer_blocks\.(?P<k>\d+)\.(?P<n>norm[123])", r"transformer_blocks_\g<k>/\g<n>", True),
    (r"transformer_blocks\.(?P<k>\d+)\.(?P<a>attn[12])\.(?P<p>to_[qkv])", r"transformer_blocks_\g<k>/\g<a>/\g<p>",
     False),
    (r"transformer_blocks\.(?P<k>\d+)\.(?P<a>attn[12])\.to_out\.0", r"transformer_blocks_\g<k>/\g<a>/to_out_0",
     False),
    (r"transformer_blocks\.(?P<k>\d+)\.ff\.net\.0\.proj", r"transformer_blocks_\g<k>/ff/net_0/proj", False),
    (r"transformer_blocks\.(?P<k>\d+)\.ff\.net\.2", r"transformer_blocks_\g<k>/ff/net_2", False),
]
_LDM_RESBLOCK = [(r"(?P<s>in_layers|out_layers)\.0", r"\g<s>_0", True), (r"in_layers\.2", "in_layers_2", False),
                 (r"emb_layers\.1", "emb_layers_1", False), (r"out_layers\.3", "out_layers_3", False),
                 ("skip_connection", "skip_connection", False)]
_DIFFUSERS_RESBLOCK = [("norm1", "in_layers_0", True), ("conv1", "in_layers_2", False),
                       ("time_emb_proj", "emb_layers_1", False), ("norm2", "out_layers_0", True),
                       ("conv2", "out_layers_3", False), ("conv_shortcut", "skip_connection", False)]


# ---- LDM layout --------------------------------------------------------------------------------------------------

def ldm_rules() -> list[Rule]:
    """``openaimodel.UNetModel`` state-dict keys (no ``model.diffusion_model.`` prefix) → UNet parameters; also
    the encoder half of a ControlNet."""
    rules = _module(r"time_embed\.(?P<i>[02])", r"time_embed_\g<i>")
    rules += _module(r"label_emb\.0\.(?P<i>[02])", r"label_emb_0_\g<i>")
    rules += _module(r"out\.0", "out_0", norm=True) + _module(r"out\.2", "out_2")
    blocks = [(r"(?P<b>input_blocks|output_blocks)\.(?P<i>\d+)\.(?P<j>\d+)", r"\g<b>_\g<i>_\g<j>"),
              (r"middle_block\.(?P<j>\d+)", r"middle_block_\g<j>")]
    layers = _LDM_RESBLOCK + _TRANSFORMER + [("", "", False), ("op", "op", False), ("conv", "conv", False)]
    for source, target in blocks:
        rules += _inner(source, target, layers)
    return rules


def controlnet_rules() -> list[Rule]:
    """ControlNet state-dict keys (DiffBIR's releases as they are; lllyasviel's without ``control_model.``)."""
    return (ldm_rules()
            + _module(r"zero_convs\.(?P<i>\d+)\.0", r"zero_convs_\g<i>_0")
            + _module(r"middle_block_out\.0", "middle_block_out_0")
            + _module(r"input_hint_block\.(?P<i>\d+)", r"input_hint_block_\g<i>"))


# ---- diffusers layout --------------------------------------------------------------------------------------------

def _diffusers_encoder_rules(config: un.UNetConfig) -> list[Rule]:
    rules = _module(r"time_embedding\.linear_1", "time_embed_0") + _module(r"time_embedding\.linear_2",
                                                                           "time_embed_2")
    rules += _module(r"add_embedding\.linear_1", "label_emb_0_0") + _module(r"add_embedding\.linear_2",
                                                                             "label_emb_0_2")
    blocks, _ = un.encoder_layout(config)
    rules += _module("conv_in", "input_blocks_0_0")
    level, r = 0, 0
    for i, block in enumerate(blocks[1:], start=1):
        if isinstance(block[0], un.Down):
            rules += _module(rf"down_blocks\.{level}\.downsamplers\.0\.conv", f"input_blocks_{i}_0/op")
            level, r = level + 1, 0
            continue
        rules += _inner(rf"down_blocks\.{level}\.resnets\.{r}", f"input_blocks_{i}_0", _DIFFUSERS_RESBLOCK)
        if len(block) > 1:
            rules += _inner(rf"down_blocks\.{level}\.attentions\.{r}", f"input_blocks_{i}_1", _TRANSFORMER)
        r += 1
    res, attn = 0, 0
    for j, layer in enumerate(un.middle_layout(config)):
        if isinstance(layer, un.Res):
            rules += _inner(rf"mid_block\.resnets\.{res}", f"middle_block_{j}", _DIFFUSERS_RESBLOCK)
            res += 1
        else:
            rules += _inner(rf"mid_block\.attentions\.{attn}", f"middle_block_{j}", _TRANSFORMER)
            attn += 1
    return rules


def diffusers_unet_rules(config: un.UNetConfig) -> list[Rule]:
    """``UNet2DConditionModel`` state-dict keys → UNet parameters."""
    rules = _diffusers_encoder_rules(config)
    up, r = 0, 0
    for i, block in enumerate(un.decoder_layout(config)):
        rules += _inner(rf"up_blocks\.{up}\.resnets\.{r}", f"output_blocks_{i}_0", _DIFFUSERS_RESBLOCK)
        for j, layer in enumerate(block[1:], start=1):
            if isinstance(layer, un.Attn):
                rules += _inner(rf"up_blocks\.{up}\.attentions\.{r}", f"output_blocks_{i}_{j}", _TRANSFORMER)
            else:
                rules += _module(rf"up_blocks\.{up}\.upsamplers\.0\.conv", f"output_blocks_{i}_{j}/conv")
        r += 1
        if isinstance(block[-1], un.Up):
            up, r = up + 1, 0
    return rules + _module("conv_norm_out", "out_0", norm=True) + _module("conv_out", "out_2")


def diffusers_controlnet_rules(config: cn.ControlNetConfig) -> list[Rule]:
    """``ControlNetModel`` state-dict keys → ControlNet parameters (``controlnet_cond_embedding`` only in
    ``"hint_block"`` mode; the strict accounting rejects it otherwise)."""
    rules = _diffusers_encoder_rules(config.unet)
    rules += _module(r"controlnet_down_blocks\.(?P<i>\d+)", r"zero_convs_\g<i>_0")
    rules += _module("controlnet_mid_block", "middle_block_out_0")
    n_blocks = 2 * (len(config.hint_block_channels) - 1)
    rules += _module(r"controlnet_cond_embedding\.conv_in", "input_hint_block_0")
    rules += [rule for b in range(n_blocks)
              for rule in _module(rf"controlnet_cond_embedding\.blocks\.{b}", f"input_hint_block_{2 * b + 2}")]
    return rules + _module(r"controlnet_cond_embedding\.conv_out", f"input_hint_block_{2 * n_blocks + 2}")


# ---- conversion --------------------------------------------------------------------------------------------------

def _select(state: Mapping[str, np.ndarray], prefix: str) -> Mapping[str, np.ndarray]:
    """The tensors under ``prefix`` (stripped) when any key has it, else ``state`` as it is."""
    return strip_prefix(state, prefix) if any(k.startswith(prefix) for k in state) else state


def _check_layout(layout: str):
    if layout not in LAYOUTS:
        raise ConversionError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def convert_unet(state: Mapping[str, np.ndarray], config: un.UNetConfig, layout: str = "ldm") -> dict:
    """UNet parameters from an LDM state dict (a whole SD/SDXL checkpoint: only ``model.diffusion_model.*`` is
    read) or a diffusers ``UNet2DConditionModel`` state dict."""
    _check_layout(layout)
    if layout == "ldm":
        return apply_rules(_select(state, LDM_UNET_PREFIX), ldm_rules(), un.param_shapes(config), what="LDM UNet")
    return apply_rules(state, diffusers_unet_rules(config), un.param_shapes(config), what="diffusers UNet")


def convert_controlnet(state: Mapping[str, np.ndarray], config: cn.ControlNetConfig, layout: str = "ldm") -> dict:
    """ControlNet parameters from an LDM-layout state dict (DiffBIR's release, or lllyasviel's with or without
    ``control_model.``) or a diffusers ``ControlNetModel`` state dict."""
    _check_layout(layout)
    shapes = cn.param_shapes(config)
    if layout == "ldm":
        return apply_rules(_select(state, LDM_CONTROLNET_PREFIX), controlnet_rules(), shapes, what="LDM ControlNet")
    return apply_rules(state, diffusers_controlnet_rules(config), shapes, what="diffusers ControlNet")
