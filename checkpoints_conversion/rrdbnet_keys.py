"""Key maps for RRDBNet (:mod:`jaxir.models.rrdbnet`) from the two layouts its released weights use.

* ``basicsr``: BasicSR/Real-ESRGAN names (``RealESRGAN_x4plus.pth``, ``RealESRGAN_x2plus.pth``):
  ``conv_first``, ``body.{i}.rdb{k}.conv{j}``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``.
  Real-ESRGAN files wrap them in ``params_ema`` (and some also ``params``): ``sources.read_state_dict`` picks
  ``params_ema`` when both are present, as ``RealESRGANer`` does, and strips a DataParallel ``module.`` prefix.
* ``bsrgan``: cszn/BSRGAN ``models/network_rrdbnet.py`` names (``BSRNet.pth``, ``BSRGAN.pth``):
  ``RRDB_trunk.{i}.RDB{k}.conv{j}``, ``trunk_conv``, ``upconv1``, ``upconv2``, ``HRconv``; ``conv_first`` and
  ``conv_last`` as in BasicSR.

The layout is recognised from the keys; a file with neither (another model's weights) is refused in one line.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import Rule, apply_rules
from jaxir.models.rrdbnet import RRDBNetConfig, param_shapes

_PARAM = r"\.(weight|bias)"


def _rules(layer_names: Mapping[str, str], dense_block: str) -> list[Rule]:
    """Rules for one layout: ``layer_names`` maps source top-level conv names to ours; ``dense_block`` is the
    regex of ``(block, rdb index, conv index)`` in the trunk."""
    rules = [Rule(dense_block + r"\.weight", r"body_\1/rdb\2/conv\3/kernel"),
             Rule(dense_block + r"\.bias", r"body_\1/rdb\2/conv\3/bias")]
    for src, dst in layer_names.items():
        rules += [Rule(src + r"\.weight", f"{dst}/kernel"), Rule(src + r"\.bias", f"{dst}/bias")]
    return rules


BASICSR_RULES = _rules({n: n for n in ("conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")},
                       r"body\.(\d+)\.rdb([123])\.conv([1-5])")
BSRGAN_RULES = _rules({"conv_first": "conv_first", "trunk_conv": "conv_body", "upconv1": "conv_up1",
                       "upconv2": "conv_up2", "HRconv": "conv_hr", "conv_last": "conv_last"},
                      r"RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])")
LAYOUTS = {"basicsr": ("body.0.rdb1.conv1.weight", BASICSR_RULES),
           "bsrgan": ("RRDB_trunk.0.RDB1.conv1.weight", BSRGAN_RULES)}


def detect_layout(state_dict: Mapping[str, np.ndarray]) -> str:
    """``"basicsr"`` or ``"bsrgan"`` from a marker key; anything else is not an RRDBNet checkpoint."""
    for layout, (marker, _) in LAYOUTS.items():
        if "conv_first.weight" in state_dict and marker in state_dict:
            return layout
    sample = ", ".join(sorted(state_dict)[:3])
    raise ConversionError("not an RRDBNet checkpoint: expected BasicSR/Real-ESRGAN keys (conv_first, body.0.rdb1.*, "
                          f"conv_body, conv_up1) or BSRGAN keys (conv_first, RRDB_trunk.0.RDB1.*, trunk_conv, "
                          f"upconv1, HRconv); found {sample} …")


def convert_rrdbnet(state_dict: Mapping[str, np.ndarray], config: RRDBNetConfig) -> dict:
    """Flax parameters of ``RRDBNet(config)`` from a BasicSR- or BSRGAN-layout state dict (wrappers and
    ``module.`` already removed by ``sources.read_state_dict``); strict: see ``keymap.apply_rules``."""
    layout = detect_layout(state_dict)
    rules = LAYOUTS[layout][1]
    return apply_rules(state_dict, rules, param_shapes(config), what=f"RRDBNet ({layout} layout, ×{config.scale})")
