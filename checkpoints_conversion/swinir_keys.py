"""Key map for SwinIR (:mod:`jaxir.models.swinir`) from the original PyTorch state dicts.

Sources: the SwinIR releases (``001_classicalSR_*.pth`` under ``params``, ``003_realSR_*.pth`` under
``params_ema``) and DiffBIR's ``general_swinir_v1.ckpt`` (under ``state_dict``, every key prefixed ``module.``,
``conv_first.1.*`` after its ``PixelUnshuffle``); :func:`checkpoints_conversion.sources.read_state_dict` removes
those wrappers. The buffers ``attn.relative_position_index`` and ``attn_mask`` are ignored on purpose: the model
recomputes both (the mask for the actual input size).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import Rule, apply_rules
from jaxir.models.swinir import SwinIRConfig, param_shapes

BLOCK = r"layers\.(\d+)\.residual_group\.blocks\.(\d+)"
IGNORED = (BLOCK + r"\.attn\.relative_position_index", BLOCK + r"\.attn_mask")


def _layer(source: str, target: str, weight_leaf: str = "kernel") -> list[Rule]:
    """``{source}.weight|bias`` → ``{target}/{weight_leaf}|bias``."""
    return [Rule(source + r"\.weight", f"{target}/{weight_leaf}"), Rule(source + r"\.bias", f"{target}/bias")]


def swinir_rules() -> list[Rule]:
    """Rules for every SwinIR variant; a tensor of another variant finds no parameter and is reported."""
    target = r"layers_\1/blocks_\2"
    return [
        *_layer(r"conv_first(?:\.1)?", "conv_first"),      # DiffBIR: conv_first = Sequential(PixelUnshuffle, conv)
        *_layer(r"patch_embed\.norm", "patch_embed_norm", "scale"),
        *_layer(BLOCK + r"\.(norm1|norm2)", target + r"/\3", "scale"),
        *_layer(BLOCK + r"\.attn\.(qkv|proj)", target + r"/attn/\3"),
        *_layer(BLOCK + r"\.mlp\.(fc1|fc2)", target + r"/mlp/\3"),
        Rule(BLOCK + r"\.attn\.relative_position_bias_table", target + "/attn/relative_position_bias_table"),
        *_layer(r"layers\.(\d+)\.conv", r"layers_\1/conv/conv"),                    # 1conv
        *_layer(r"layers\.(\d+)\.conv\.([024])", r"layers_\1/conv/conv_\2"),         # 3conv
        *_layer(r"norm", "norm", "scale"),
        *_layer(r"conv_after_body", "conv_after_body/conv"),
        *_layer(r"conv_after_body\.([024])", r"conv_after_body/conv_\1"),
        *_layer(r"conv_before_upsample\.0", "conv_before_upsample"),
        *_layer(r"upsample\.(\d+)", r"upsample_\1"),
        *_layer(r"(conv_up[123]|conv_hr|conv_last)", r"\1"),
    ]


def convert_swinir(state_dict: Mapping[str, np.ndarray], config: SwinIRConfig, what: str = "SwinIR checkpoint"):
    """Flax parameters of ``SwinIR(config)`` from an unwrapped state dict; strict (see ``keymap.apply_rules``)."""
    if not any(k.startswith("layers.0.residual_group.") for k in state_dict):
        raise ConversionError(f"{what}: not a SwinIR checkpoint (no layers.0.residual_group.* tensors; found e.g. "
                              f"{', '.join(sorted(state_dict)[:3])})")
    return apply_rules(state_dict, swinir_rules(), param_shapes(config), ignore=IGNORED, what=what)
