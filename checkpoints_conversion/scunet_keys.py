"""Key map for SCUNet (:mod:`jaxir.models.scunet`) from cszn/SCUNet (and DiffBIR's copy) state dicts, e.g.
``scunet_color_real_psnr.pth``.

The parameter paths mirror the PyTorch keys (``m_down1.0.trans_block.msa.linear.weight`` ↔
``m_down1_0/trans_block/msa/linear/kernel``). Transforms: convolutions (O, I, kH, kW) → (kH, kW, I, O) and linears
(O, I) → (I, O) by the target leaf; the up-sampling ``ConvTranspose2d`` weights (I, O, 2, 2) → (2, 2, I, O);
``relative_position_params`` are stored by the original already as (heads, 2·window − 1, 2·window − 1) and kept.
A DataParallel ``module.`` prefix or a ``params``/``params_ema`` wrapper is removed by ``sources.read_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import Rule, apply_rules
from jaxir.models.scunet import SCUNetConfig, param_shapes

_STAGE = r"(m_head|m_down[123]|m_body|m_up[123]|m_tail)\.(\d+)"
_SWIN = _STAGE + r"\.trans_block"


def _transposed_conv(weight: np.ndarray) -> np.ndarray:
    """``ConvTranspose2d`` weight (I, O, kH, kW) → (kH, kW, I, O)."""
    return weight.transpose(2, 3, 0, 1)


RULES = [
    # ConvTransBlock: 1×1 split/merge convs, the bias-free 3×3 pair, the Swin block's norms, MLP and attention
    Rule(_STAGE + r"\.(conv1_[12])\.weight", r"\1_\2/\3/kernel"),
    Rule(_STAGE + r"\.(conv1_[12])\.bias", r"\1_\2/\3/bias"),
    Rule(_STAGE + r"\.conv_block\.([02])\.weight", r"\1_\2/conv_block_\3/kernel"),
    Rule(_SWIN + r"\.(ln[12])\.weight", r"\1_\2/trans_block/\3/scale"),
    Rule(_SWIN + r"\.(ln[12])\.bias", r"\1_\2/trans_block/\3/bias"),
    Rule(_SWIN + r"\.mlp\.([02])\.weight", r"\1_\2/trans_block/mlp_\3/kernel"),
    Rule(_SWIN + r"\.mlp\.([02])\.bias", r"\1_\2/trans_block/mlp_\3/bias"),
    Rule(_SWIN + r"\.msa\.(embedding_layer|linear)\.weight", r"\1_\2/trans_block/msa/\3/kernel"),
    Rule(_SWIN + r"\.msa\.(embedding_layer|linear)\.bias", r"\1_\2/trans_block/msa/\3/bias"),
    Rule(_SWIN + r"\.msa\.relative_position_params", r"\1_\2/trans_block/msa/relative_position_params"),
    # the up-sampling transposed convs (index 0 of m_up1..3)
    Rule(r"(m_up[123])\.0\.weight", r"\1_0/kernel", _transposed_conv),
    # head, tail and the stride-2 down-sampling convs (bias-free)
    Rule(_STAGE + r"\.weight", r"\1_\2/kernel"),
]
MARKERS = ("m_head.0.weight", "m_tail.0.weight")


def convert_scunet(state_dict: Mapping[str, np.ndarray], config: SCUNetConfig) -> dict:
    """Flax parameters of ``SCUNet(config)`` from a cszn/SCUNet state dict; strict: see ``keymap.apply_rules``."""
    if not all(m in state_dict for m in MARKERS):
        sample = ", ".join(sorted(state_dict)[:3])
        raise ConversionError(f"not an SCUNet checkpoint: expected keys m_head.0.*, m_down1.*, m_body.*, m_up1.*, "
                              f"m_tail.0.*; found {sample} …")
    return apply_rules(state_dict, RULES, param_shapes(config), what="SCUNet")
