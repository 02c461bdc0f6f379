"""Key maps for LPIPS v0.1 (:mod:`jaxir.models.lpips_backbones`) from two files.

* The backbone: a torchvision ImageNet checkpoint of ``alexnet``/``vgg16``/``squeezenet1_1`` (e.g.
  ``alexnet-owt-7be5be79.pth``, a plain state dict). ``features.{i}.weight|bias`` → ``backbone/features_{i}/…``,
  SqueezeNet's ``features.{i}.{squeeze,expand1x1,expand3x3}.weight|bias`` → ``backbone/features_{i}/{…}/…``.
  The ImageNet ``classifier.*`` is not part of LPIPS and is skipped on purpose.
* The linear heads: ``lpips/weights/v0.1/{net}.pth`` of the ``lpips`` package (found with importlib, not
  imported) or any file of the same layout: ``lin{k}.model.1.weight`` (1, C_k, 1, 1) → ``lin_{k}/kernel``.
  LPIPS clamps these weights to ≥ 0 while training (``lpips/trainer.py``, ``clamp_weights``), which makes every
  per-layer term non-negative; a file with negative weights is refused.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import Rule, apply_rules
from jaxir.models.lpips_backbones import LPIPSConfig, param_shapes

BACKBONE_IGNORED = (r"classifier\..*",)
LPIPS_VERSION = "0.1"

BACKBONE_RULES = (
    Rule(r"features\.(\d+)\.weight", r"features_\1/kernel"),
    Rule(r"features\.(\d+)\.bias", r"features_\1/bias"),
    Rule(r"features\.(\d+)\.(squeeze|expand1x1|expand3x3)\.weight", r"features_\1/\2/kernel"),
    Rule(r"features\.(\d+)\.(squeeze|expand1x1|expand3x3)\.bias", r"features_\1/\2/bias"),
)
LINEAR_RULES = (Rule(r"lin(\d+)\.model\.1\.weight", r"lin_\1/kernel"),)


def default_linear_weights(net: str) -> Path:
    """``lpips/weights/v0.1/{net}.pth`` inside the installed ``lpips`` package (which is not imported)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError("the default LPIPS linear weights come from the `lpips` package: pip install lpips, "
                              "or pass --linear PATH (lpips/weights/v0.1/<net>.pth)")
    path = Path(spec.submodule_search_locations[0]) / "weights" / f"v{LPIPS_VERSION}" / f"{net}.pth"
    if not path.is_file():
        raise ConversionError(f"the installed lpips package has no {path}; pass --linear PATH")
    return path


def convert_lpips(backbone: Mapping[str, np.ndarray], linear: Mapping[str, np.ndarray], config: LPIPSConfig,
                  backbone_name: str = "backbone", linear_name: str = "linear weights") -> dict:
    """Flax parameters of ``LPIPSNetwork(config)`` from a torchvision backbone state dict and an LPIPS
    linear-weights state dict (the names label the two sources in error messages); strict, see ``apply_rules``."""
    net = config.net
    if not any(k.startswith("features.") for k in backbone):
        raise ConversionError(f"{backbone_name}: not a torchvision {net} checkpoint (no features.* tensors; "
                              f"holds e.g. {next(iter(backbone), 'nothing')})")
    if not any(k.startswith("lin0.") for k in linear):
        raise ConversionError(f"{linear_name}: not an LPIPS linear-weights file (no lin0.model.1.weight; "
                              f"holds e.g. {next(iter(linear), 'nothing')})")
    shapes = param_shapes(config)
    heads_shapes = {k: v for k, v in shapes.items() if k != "backbone"}
    params = {"backbone": apply_rules(backbone, BACKBONE_RULES, shapes["backbone"], ignore=BACKBONE_IGNORED,
                                      what=f"{backbone_name} as the torchvision {net} backbone"),
              **apply_rules(linear, LINEAR_RULES, heads_shapes, what=f"{linear_name} as LPIPS {net} heads")}
    negative = {k: float(v["kernel"].min()) for k, v in params.items() if k != "backbone" and v["kernel"].min() < 0}
    if negative:
        raise ConversionError(f"{linear_name}: LPIPS linear weights must be non-negative; minimum per head "
                              f"{', '.join(f'{k} {v:.3g}' for k, v in sorted(negative.items()))}")
    return params
