"""DINOv2 ViT checkpoints → :class:`jaxir.models.dinov2.DINOv2` parameters.

Two layouts of the same network:

- ``hub``: the official torch-hub files (``dinov2_vitb14_pretrain.pth``, ``…_reg4_pretrain.pth``; the state
  dict of ``DinoVisionTransformer`` with ``block_chunks=0``): ``cls_token``, ``pos_embed`` (1, 1 + 37², D),
  ``register_tokens``, ``patch_embed.proj``, ``blocks.{i}.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
  mlp.fc1/fc2 or mlp.w12/w3, ls2.gamma}``, ``norm``. ``mask_token`` (the masked-image-modelling token, unused at
  inference) is ignored on purpose.
- ``timm``: timm's ``vit_*_patch14[_reg4]_dinov2`` (``timm/models/vision_transformer.py``, ``_convert_dinov2``):
  the same block names except ViT-g's SwiGLU ``mlp.fc1``/``mlp.fc2`` (= ``w12``/``w3``, same halves order),
  ``reg_token`` for ``register_tokens``, and for ``_reg4`` models (``no_embed_class``) a ``pos_embed`` without
  the class row and a ``cls_token`` that already holds ``cls_token + pos_embed[:, 0]``: the class row is
  restored as zeros, which gives the same network (the class row is only ever added to the class token).
  A classifier ``head`` is not part of the backbone and is refused like any other unknown tensor.

Everything else is accounted for strictly (:func:`checkpoints_conversion.keymap.apply_rules`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import Rule, apply_rules
from jaxir.models.dinov2 import PRESETS, DINOv2Config, param_shapes

LAYOUTS = ("hub", "timm")
BLOCK = {
    "norm1.weight": "norm1/scale", "norm1.bias": "norm1/bias",
    "attn.qkv.weight": "attn/qkv/kernel", "attn.qkv.bias": "attn/qkv/bias",
    "attn.proj.weight": "attn/proj/kernel", "attn.proj.bias": "attn/proj/bias",
    "ls1.gamma": "ls1/gamma", "ls2.gamma": "ls2/gamma",
    "norm2.weight": "norm2/scale", "norm2.bias": "norm2/bias",
    "mlp.fc1.weight": "mlp/fc1/kernel", "mlp.fc1.bias": "mlp/fc1/bias",
    "mlp.fc2.weight": "mlp/fc2/kernel", "mlp.fc2.bias": "mlp/fc2/bias",
    "mlp.w12.weight": "mlp/w12/kernel", "mlp.w12.bias": "mlp/w12/bias",
    "mlp.w3.weight": "mlp/w3/kernel", "mlp.w3.bias": "mlp/w3/bias",
}
TIMM_SWIGLU = {"mlp.fc1.weight": "mlp/w12/kernel", "mlp.fc1.bias": "mlp/w12/bias",   # timm's SwiGLUPacked
               "mlp.fc2.weight": "mlp/w3/kernel", "mlp.fc2.bias": "mlp/w3/bias"}
HUB_IGNORED = (r"mask_token",)
SIGNATURE = "patch_embed.proj.weight"


def _with_class_row(grid_cells: int):
    """timm ``no_embed_class`` ``pos_embed`` (1, cells, D) → (1, 1 + cells, D) with a zero class row."""

    def transform(value: np.ndarray) -> np.ndarray:
        if value.ndim == 3 and value.shape[1] == grid_cells:
            return np.concatenate([np.zeros_like(value[:, :1]), value], axis=1)
        return value

    return transform


def _rules(config: DINOv2Config, layout: str) -> tuple[Rule, ...]:
    block = {**BLOCK, **TIMM_SWIGLU} if layout == "timm" and config.ffn == "swiglu" else BLOCK
    rules = [
        Rule(r"cls_token", "cls_token"),
        Rule(r"pos_embed", "pos_embed", _with_class_row(config.grid ** 2) if layout == "timm" else None),
        Rule(r"reg_token" if layout == "timm" else r"register_tokens", "register_tokens"),
        Rule(r"patch_embed\.proj\.weight", "patch_embed/proj/kernel"),
        Rule(r"patch_embed\.proj\.bias", "patch_embed/proj/bias"),
        Rule(r"norm\.weight", "norm/scale"),
        Rule(r"norm\.bias", "norm/bias"),
    ]
    rules += [Rule(r"blocks\.(\d+)\." + re.escape(src), rf"blocks_\1/{dst}") for src, dst in block.items()]
    return tuple(rules)


def _describe(state: Mapping[str, np.ndarray]) -> str:
    """embed dim, depth and registers of a checkpoint, and the preset with those sizes if there is one."""
    dim = np.shape(state[SIGNATURE])[0]
    depth = len({m[1] for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    registers = np.shape(state.get("register_tokens", state.get("reg_token", np.zeros((1, 0)))))[1]
    match = [n for n, c in PRESETS.items() if (c.embed_dim, c.depth, c.num_register_tokens) == (dim, depth, registers)]
    return f"embed_dim {dim}, depth {depth}, {registers} registers" + (f" (preset {match[0]}?)" if match else "")


def convert_dinov2(state: Mapping[str, np.ndarray], config: DINOv2Config, layout: str = "hub") -> dict:
    """The ``DINOv2(config)`` parameters from a flat state dict in the ``hub`` or ``timm`` layout."""
    if layout not in LAYOUTS:
        raise ConversionError(f"unknown DINOv2 layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if SIGNATURE not in state or not any(k.startswith("blocks.0.attn.qkv.") for k in state):
        raise ConversionError(f"not a DINOv2 ViT state dict ({layout} layout): no {SIGNATURE} and "
                              f"blocks.0.attn.qkv.weight (first keys: {', '.join(sorted(state)[:3])})")
    try:
        return apply_rules(state, _rules(config, layout), param_shapes(config),
                           ignore=HUB_IGNORED if layout == "hub" else (), what=f"DINOv2 ({layout})")
    except ConversionError as err:
        raise ConversionError(f"{err}; the checkpoint has {_describe(state)}") from None
