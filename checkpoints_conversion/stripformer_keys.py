"""Key map for Stripformer (:mod:`jaxir.models.stripformer`) from the released PyTorch state dicts.

``Stripformer_gopro.pth`` (and ``Stripformer_realblur_J.pth`` / ``_R.pth``) hold ``model.state_dict()`` of the
``nn.DataParallel`` wrapper that ``models/networks.get_generator`` returns, so every key starts with ``module.``;
``predict_GoPro_test_results.py`` loads them back into that wrapper. ``sources.read_state_dict`` removes the
prefix; this map takes the bare ``Stripformer`` names:

* ``encoder.en_layer{l}_{j}.{i}.weight|bias`` and ``decoder.de_layer{l}_{j}.{i}.…`` (``Sequential`` index ``i``)
  → ``encoder/en_layer{l}_{j}_{i}/kernel|bias``; the transposed convs ``de_layer3_1.0`` / ``de_layer2_1.0``
  (weight (I, O, 4, 4)) get the same (2, 3, 1, 0) transpose as a conv (see ``ConvTranspose2x``).
* ``Trans_block_{n}.…`` and ``decoder.de_block_{n}.…``: LayerNorms ``attention_norm``/``ffn_norm`` (weight →
  ``scale``), the 1×1 convs and Linears ``conv_input``, ``qkv_local_h|v``, ``conv_h|v``, ``fuse_out``,
  ``ffn.fc1|fc2`` (→ Dense ``kernel`` (I, O)), and ``PEG.PEG`` (depthwise 3×3 conv).

Nothing is ignored: the released files hold parameters only (no buffers).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import Rule, apply_rules
from jaxir.models.stripformer import StripformerConfig, param_shapes

# (source prefix, target prefix) of the transformer blocks: the bottleneck's and the decoder's
_BLOCKS = ((r"(Trans_block_\d+)", r"\1"), (r"decoder\.(de_block_\d+)", r"decoder/\1"))
SIGNATURE_KEY = "encoder.en_layer1_1.0.weight"   # the first tensor of every Stripformer
_NORMS = ("attention_norm", "ffn_norm")
_BLOCK_LAYERS = ("conv_input", "qkv_local_h", "qkv_local_v", "conv_h", "conv_v", "fuse_out", "ffn.fc1", "ffn.fc2",
                 "PEG.PEG")


def stripformer_rules() -> list[Rule]:
    """Source-key regexes → parameter paths (see the module docstring)."""
    rules = [
        Rule(r"(encoder|decoder)\.((?:en|de)_layer\d+_\d+)\.(\d+)\.weight", r"\1/\2_\3/kernel"),
        Rule(r"(encoder|decoder)\.((?:en|de)_layer\d+_\d+)\.(\d+)\.bias", r"\1/\2_\3/bias"),
    ]
    for source, target in _BLOCKS:
        for norm in _NORMS:
            rules += [Rule(rf"{source}\.{norm}\.weight", f"{target}/{norm}/scale"),
                      Rule(rf"{source}\.{norm}\.bias", f"{target}/{norm}/bias")]
        for layer in _BLOCK_LAYERS:
            escaped, path = layer.replace(".", r"\."), layer.replace(".", "/")
            rules += [Rule(rf"{source}\.{escaped}\.weight", f"{target}/{path}/kernel"),
                      Rule(rf"{source}\.{escaped}\.bias", f"{target}/{path}/bias")]
    return rules


def convert_stripformer(state_dict: Mapping[str, np.ndarray], config: StripformerConfig | None = None) -> dict:
    """Flax parameters of ``Stripformer(config)`` (default: the GoPro sizes) from a bare ``Stripformer`` state dict
    (no ``module.`` prefix); strict: see ``keymap.apply_rules``."""
    config = config or StripformerConfig.gopro()
    if SIGNATURE_KEY not in state_dict:
        sample = ", ".join(list(state_dict)[:3])
        raise ConversionError(f"not a Stripformer state dict: no {SIGNATURE_KEY!r} (keys start {sample} …)")
    return apply_rules(state_dict, stripformer_rules(), param_shapes(config), what="Stripformer checkpoint")
