"""SDXL's prompt and size conditioner as a SUPIR option file describes it: which text towers, of which sizes, which
of their hidden states, and how wide the size embeddings are.

Reads ``model.params.conditioner_config`` of ``options/SUPIR_v0.yaml`` (Fanghua-Yu/SUPIR at commit bda91af;
``sgm.modules.GeneralConditionerWithControl`` and its embedders in ``sgm/modules/encoders/modules.py``):

1. ``FrozenCLIPEmbedder(version, layer, layer_idx, max_length)``: transformers' ``CLIPTextModel.from_pretrained(
   version)``; its ``crossattn`` is ``hidden_states[layer_idx]`` (``layer: hidden``) or ``last_hidden_state``
   (``layer: last``, after the final norm). ``version`` is a known hub name or a local folder (or file) holding
   the model's ``config.json``, as ``from_pretrained`` accepts one.
2. ``FrozenOpenCLIPEmbedder2(arch, layer, always_return_pooled=True, legacy=False)``: ``open_clip.create_model(
   arch)``; its ``crossattn`` is the raw output of the last (``layer: last``) or second-to-last (``penultimate``)
   block, its ``vector`` part the pooled end-of-text feature after ``ln_final`` and ``text_projection``
   (``embed_dim`` wide). ``arch`` is a known open_clip model name or a path to an open_clip model-config JSON
   (``embed_dim``, ``vision_cfg``, ``text_cfg``), as ``open_clip.add_model_config`` registers one.
3. Three ``ConcatTimestepEmbedderND(outdim)`` for ``original_size_as_tuple``, ``crop_coords_top_left`` and
   ``target_size_as_tuple``: two sinusoidal embeddings of ``outdim`` each.

Relative paths are read from the option file's folder. Any other embedder list, or an option that would change the
network (a pooled CLIP-L output, the legacy bigG output, a token length other than the position table's), is
refused with the reason, never ignored.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from jaxir.errors import JaxirInputError
from jaxir.models import text as text_models
from jaxir.models.text import TextEncoderConfig

# The towers SDXL names; their sizes as the hub's config.json / open_clip's model configs give them.
KNOWN_HF_CLIP = {
    "openai/clip-vit-large-patch14": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
                                      "num_hidden_layers": 12, "num_attention_heads": 12,
                                      "max_position_embeddings": 77, "hidden_act": "quick_gelu"},
}
_OPEN_CLIP_TEXT = {"context_length": 77, "vocab_size": 49408}
KNOWN_OPEN_CLIP = {
    "ViT-bigG-14": {"embed_dim": 1280, "text_cfg": {**_OPEN_CLIP_TEXT, "width": 1280, "heads": 20, "layers": 32}},
    "ViT-H-14": {"embed_dim": 1024, "text_cfg": {**_OPEN_CLIP_TEXT, "width": 1024, "heads": 16, "layers": 24}},
}
SIZE_KEYS = ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")
EMBEDDERS = ("FrozenCLIPEmbedder", "FrozenOpenCLIPEmbedder2", *("ConcatTimestepEmbedderND",) * 3)


@dataclasses.dataclass(frozen=True)
class Conditioner:
    """The conditioner's sizes: the CLIP-L tower (``crossattn`` first part), the bigG tower (``crossattn`` second
    part, pooled ``vector`` part) and the width of each size embedding."""

    clip_l: TextEncoderConfig
    clip_g: TextEncoderConfig
    size_embed_dim: int


def _read_json(path: Path, what: str) -> Mapping:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JaxirInputError(f"{what} {path}: not a readable JSON file ({type(err).__name__})") from None
    if not isinstance(data, Mapping):
        raise JaxirInputError(f"{what} {path}: not a JSON object")
    return data


def _local(name: str, base: Path | None) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() or base is None else base / path


def _hf_config(version: str, base: Path | None) -> Mapping:
    if version in KNOWN_HF_CLIP:
        return KNOWN_HF_CLIP[version]
    path = _local(version, base)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise JaxirInputError(f"FrozenCLIPEmbedder version {version!r}: not a known tower ({', '.join(KNOWN_HF_CLIP)})"
                              f" and no config.json at {path}")
    return _read_json(path, "FrozenCLIPEmbedder config")


def _open_clip_config(arch: str, base: Path | None) -> Mapping:
    if arch in KNOWN_OPEN_CLIP:
        return KNOWN_OPEN_CLIP[arch]
    path = _local(arch, base)
    if not path.is_file():
        raise JaxirInputError(f"FrozenOpenCLIPEmbedder2 arch {arch!r}: not a known model ({', '.join(KNOWN_OPEN_CLIP)})"
                              f" and no model-config JSON at {path}")
    return _read_json(path, "FrozenOpenCLIPEmbedder2 model config")


def _clip_l(params: Mapping, base: Path | None) -> TextEncoderConfig:
    layer = params.get("layer", "last")
    if params.get("always_return_pooled", False):
        raise JaxirInputError("FrozenCLIPEmbedder always_return_pooled: SDXL's conditioner uses only its hidden state")
    if layer not in ("hidden", "last"):
        raise JaxirInputError(f"FrozenCLIPEmbedder layer {layer!r}: supported are 'hidden' (with layer_idx) and 'last'")
    hf = _hf_config(params.get("version", "openai/clip-vit-large-patch14"), base)
    tower = text_models.from_hf_clip_text_config(hf, "last")
    if layer == "hidden":
        index = params.get("layer_idx")
        states = tower.layers + 1   # transformers' hidden_states: the embedding, then every block
        if type(index) is not int or not -states <= index < states:
            raise JaxirInputError(f"FrozenCLIPEmbedder layer_idx {index!r}: needs an index of the {states} hidden "
                                  "states")
        tower = dataclasses.replace(tower, output_layer=index % states)
    return _check_length("FrozenCLIPEmbedder", params, tower)


def _clip_g(params: Mapping, base: Path | None) -> TextEncoderConfig:
    layer = params.get("layer", "last")
    if not params.get("always_return_pooled", False) or params.get("legacy", True):
        raise JaxirInputError("FrozenOpenCLIPEmbedder2 must set always_return_pooled: True and legacy: False (the "
                              "pooled feature is part of SDXL's vector condition)")
    if layer not in ("last", "penultimate"):
        raise JaxirInputError(f"FrozenOpenCLIPEmbedder2 layer {layer!r}: supported are 'last' and 'penultimate'")
    model = _open_clip_config(params.get("arch", "ViT-H-14"), base)
    if "embed_dim" not in model or "text_cfg" not in model:
        raise JaxirInputError("FrozenOpenCLIPEmbedder2 model config: needs embed_dim and text_cfg")
    tower = text_models.from_open_clip_cfg({**model, "layer": "last"})
    # legacy=False returns the blocks' raw outputs (no ln_final); ln_final feeds only the pooled feature
    hidden = tower.layers - (layer == "penultimate")
    tower = dataclasses.replace(tower, output_layer=hidden, pooled=True, projection_dim=int(model["embed_dim"]))
    return _check_length("FrozenOpenCLIPEmbedder2", params, tower)


def _check_length(embedder: str, params: Mapping, tower: TextEncoderConfig) -> TextEncoderConfig:
    length = params.get("max_length", 77)
    if length != tower.context_length:
        raise JaxirInputError(f"{embedder} max_length {length} differs from the tower's {tower.context_length} "
                              "positions")
    return tower


def from_options(conditioner: Mapping, base: Path | None = None) -> Conditioner:
    """The :class:`Conditioner` of a SUPIR option file's ``conditioner_config`` (module docstring); ``base`` is the
    option file's folder, for local tower configs."""
    embedders = conditioner.get("params", {}).get("emb_models", []) if isinstance(conditioner, Mapping) else []
    names = [str(e.get("target", "")).rsplit(".", 1)[-1] for e in embedders if isinstance(e, Mapping)]
    if tuple(names) != EMBEDDERS:
        raise JaxirInputError(f"SUPIR conditioner_config embedders {names}: only SDXL's {list(EMBEDDERS)} are "
                              "supported")
    params = [dict(e.get("params") or {}) for e in embedders]
    size_keys = tuple(e.get("input_key") for e in embedders[2:])
    if size_keys != SIZE_KEYS:
        raise JaxirInputError(f"SUPIR conditioner_config size embedders read {list(size_keys)}; SDXL's order is "
                              f"{list(SIZE_KEYS)}")
    outdims = {p.get("outdim") for p in params[2:]}
    if len(outdims) != 1 or type(next(iter(outdims))) is not int:
        raise JaxirInputError(f"SUPIR conditioner_config: the size embedders need one integer outdim, got {outdims}")
    return Conditioner(_clip_l(params[0], base), _clip_g(params[1], base), outdims.pop())
