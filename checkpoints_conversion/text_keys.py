"""CLIP text encoders → :class:`jaxir.models.text.TextTransformer` parameters.

Two source styles, each found under a layout's prefix:

- open_clip (``src/open_clip/transformer.py``): ``token_embedding.weight``, ``positional_embedding``,
  ``transformer.resblocks.{i}.{ln_1, attn.in_proj_weight/in_proj_bias (fused, rows [q; k; v]), attn.out_proj,
  ln_2, mlp.c_fc, mlp.c_proj}``, ``ln_final``, ``text_projection`` (W, E), used as ``x @ P``). Layouts
  ``open_clip`` (a bare open_clip state dict), ``sd2`` (``cond_stage_model.model.``: SD 2.x and DiffBIR) and
  ``sdxl_bigg`` (``conditioner.embedders.1.model.``).
- transformers ``CLIPTextModel`` (``models/clip/modeling_clip.py``):
  ``text_model.embeddings.{token,position}_embedding``, ``text_model.encoder.layers.{i}.{layer_norm1,
  self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}``, ``text_model.final_layer_norm`` (the
  ``text_model.`` prefix is optional: transformers 5 saves ``CLIPTextModel`` without it), and for
  ``CLIPTextModelWithProjection``/``CLIPModel`` a bias-free ``text_projection`` Linear. q/k/v are fused into one
  ``in_proj`` first. Layouts ``transformers`` and ``sdxl_clip_l`` (``conditioner.embedders.0.transformer.``).

Ignored on purpose: the vision tower, ``logit_scale`` and transformers' ``position_ids`` buffer; and whatever the
configured outputs never reach — blocks after the last one run, ``ln_final`` when the output has no final norm and
nothing is pooled, ``text_projection`` when the config has none (DiffBIR's checkpoints carry one it never uses).
Everything else is accounted for strictly (:func:`checkpoints_conversion.keymap.apply_rules`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import Rule, apply_rules, strip_prefix
from jaxir.models.text import TextEncoderConfig, param_shapes

TEXT_MODEL = r"(?:text_model\.)?"   # transformers ≤ 4 saves CLIPTextModel under text_model., 5 without it
OPEN_CLIP_BLOCK = {
    "ln_1.weight": "ln_1/scale", "ln_1.bias": "ln_1/bias",
    "attn.in_proj_weight": "attn/in_proj/kernel", "attn.in_proj_bias": "attn/in_proj/bias",
    "attn.out_proj.weight": "attn/out_proj/kernel", "attn.out_proj.bias": "attn/out_proj/bias",
    "ln_2.weight": "ln_2/scale", "ln_2.bias": "ln_2/bias",
    "mlp.c_fc.weight": "mlp/c_fc/kernel", "mlp.c_fc.bias": "mlp/c_fc/bias",
    "mlp.c_proj.weight": "mlp/c_proj/kernel", "mlp.c_proj.bias": "mlp/c_proj/bias",
}
TRANSFORMERS_BLOCK = {
    "layer_norm1.weight": "ln_1/scale", "layer_norm1.bias": "ln_1/bias",
    "self_attn.in_proj.weight": "attn/in_proj/kernel", "self_attn.in_proj.bias": "attn/in_proj/bias",  # fused here
    "self_attn.out_proj.weight": "attn/out_proj/kernel", "self_attn.out_proj.bias": "attn/out_proj/bias",
    "layer_norm2.weight": "ln_2/scale", "layer_norm2.bias": "ln_2/bias",
    "mlp.fc1.weight": "mlp/c_fc/kernel", "mlp.fc1.bias": "mlp/c_fc/bias",
    "mlp.fc2.weight": "mlp/c_proj/kernel", "mlp.fc2.bias": "mlp/c_proj/bias",
}


def _block_rules(block_regex: str, table: dict[str, str]) -> tuple[Rule, ...]:
    """One rule per tensor of block i, found under ``block_regex`` + ``i.``."""
    return tuple(Rule(block_regex + r"(\d+)\." + re.escape(src), rf"transformer/resblocks_\1/{dst}")
                 for src, dst in table.items())


@dataclasses.dataclass(frozen=True)
class Style:
    rules: tuple[Rule, ...]
    ignore: tuple[str, ...]       # regexes of tensors the text encoder never uses
    fused_qkv: bool               # True: q/k/v come as one tensor; False: fuse them first


OPEN_CLIP = Style(
    rules=(
        Rule(r"token_embedding\.weight", "token_embedding/embedding"),
        Rule(r"positional_embedding", "positional_embedding"),
        *_block_rules(r"transformer\.resblocks\.", OPEN_CLIP_BLOCK),
        Rule(r"ln_final\.weight", "ln_final/scale"),
        Rule(r"ln_final\.bias", "ln_final/bias"),
        Rule(r"text_projection", "text_projection"),
    ),
    ignore=(r"visual\..*", r"logit_scale"),
    fused_qkv=True,
)
TRANSFORMERS = Style(
    rules=(
        Rule(TEXT_MODEL + r"embeddings\.token_embedding\.weight", "token_embedding/embedding"),
        Rule(TEXT_MODEL + r"embeddings\.position_embedding\.weight", "positional_embedding"),
        *_block_rules(TEXT_MODEL + r"encoder\.layers\.", TRANSFORMERS_BLOCK),
        Rule(TEXT_MODEL + r"final_layer_norm\.weight", "ln_final/scale"),
        Rule(TEXT_MODEL + r"final_layer_norm\.bias", "ln_final/bias"),
        Rule(r"text_projection\.weight", "text_projection", transform=np.transpose),  # Linear (E, W) → (W, E)
    ),
    ignore=(r"vision_model\..*", r"visual_projection\.weight", r"logit_scale",
            TEXT_MODEL + r"embeddings\.position_ids"),
    fused_qkv=False,
)


@dataclasses.dataclass(frozen=True)
class Layout:
    prefix: str     # where the text encoder's tensors sit in the checkpoint
    style: Style


LAYOUTS = {
    "open_clip": Layout("", OPEN_CLIP),
    "sd2": Layout("cond_stage_model.model.", OPEN_CLIP),                      # SD 2.x, DiffBIR
    "sdxl_bigg": Layout("conditioner.embedders.1.model.", OPEN_CLIP),         # SDXL / SUPIR, OpenCLIP bigG
    "transformers": Layout("", TRANSFORMERS),
    "sdxl_clip_l": Layout("conditioner.embedders.0.transformer.", TRANSFORMERS),  # SDXL / SUPIR, CLIP ViT-L
}


def fuse_qkv(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers' ``self_attn.{q,k,v}_proj`` as one ``self_attn.in_proj`` with rows [q; k; v] (torch's
    ``in_proj_weight`` order). Incomplete or mismatched triples are left as they are, for the strict accounting
    to report."""
    out = dict(state)
    for key in state:
        m = re.fullmatch(r"(.*\.self_attn\.)q_proj\.(weight|bias)", key)
        if not m:
            continue
        parts = [f"{m[1]}{p}_proj.{m[2]}" for p in "qkv"]
        if all(p in state for p in parts) and len({np.shape(state[p]) for p in parts}) == 1:
            out[f"{m[1]}in_proj.{m[2]}"] = np.concatenate([np.asarray(state[p]) for p in parts])
            for p in parts:
                del out[p]
    return out


def _unused_by_design(path: str, config: TextEncoderConfig) -> bool:
    """Parameters of the source architecture that the configured outputs never reach (module docstring)."""
    block = re.fullmatch(r"transformer/resblocks_(\d+)/.*", path)
    if block:
        return config.blocks_used <= int(block[1]) < config.layers
    if path.startswith("ln_final/"):
        return not config.final_norm_used
    return path == "text_projection" and config.projection_dim is None


def _target(key: str, rules: tuple[Rule, ...]) -> str | None:
    for rule in rules:
        m = re.fullmatch(rule.source, key)
        if m:
            return m.expand(rule.target)
    return None


def convert_text_encoder(state: Mapping[str, np.ndarray], config: TextEncoderConfig, layout: str) -> dict:
    """The ``TextTransformer(config)`` parameters from a checkpoint's flat state dict (e.g.
    :func:`checkpoints_conversion.sources.read_state_dict`), its text encoder found by ``layout`` (``LAYOUTS``)."""
    if layout not in LAYOUTS:
        raise ConversionError(f"unknown text-encoder layout {layout!r}; known: {', '.join(LAYOUTS)}")
    prefix, style = LAYOUTS[layout].prefix, LAYOUTS[layout].style
    source = strip_prefix(state, prefix)
    if not source:
        raise ConversionError(f"text encoder ({layout}): no tensors under {prefix!r}")
    if not style.fused_qkv:
        source = fuse_qkv(source)
    source = {k: v for k, v in source.items()
              if not ((path := _target(k, style.rules)) and _unused_by_design(path, config))}
    return apply_rules(source, style.rules, param_shapes(config), ignore=style.ignore, what=f"text encoder ({layout})")
