"""SUPIR option files of any size (jaxir.models.sdxl_conditioner, SUPIRConfig.from_options): the text towers and size
embeddings are read from ``conditioner_config`` the way SUPIR's own code builds them (transformers'
``CLIPTextModel.from_pretrained(version)``, ``open_clip.create_model(arch)``), not assumed to be SDXL's.

Independent references: the published sizes of CLIP ViT-L/14 (transformers' ``openai/clip-vit-large-patch14``
``config.json``) and OpenCLIP ViT-bigG/14 (open_clip's ``ViT-bigG-14.json``), as jaxir's SDXL presets state them,
and ``SUPIR_v0.yaml``'s sizes (``SUPIRConfig.supir_v0``)."""

from __future__ import annotations

import copy
import json

import pytest

from jaxir.errors import JaxirInputError
from jaxir.models import sdxl_conditioner, supir
from jaxir.models import text as text_models
from jaxir.models.text import TextEncoderConfig
from jaxir.models.unet import UNetConfig
from jaxir.models.vae import VAEConfig


def sdxl_conditioner_config(clip_l: dict | None = None, clip_g: dict | None = None, outdim: int = 256) -> dict:
    """``conditioner_config`` as ``options/SUPIR_v0.yaml`` writes it, with the embedders' params replaceable."""
    embedder = "sgm.modules.encoders.modules."
    sizes = [{"is_trainable": False, "input_key": key, "target": embedder + "ConcatTimestepEmbedderND",
              "params": {"outdim": outdim}} for key in sdxl_conditioner.SIZE_KEYS]
    return {"target": "sgm.modules.GeneralConditionerWithControl", "params": {"emb_models": [
        {"is_trainable": False, "input_key": "txt", "target": embedder + "FrozenCLIPEmbedder",
         "params": clip_l if clip_l is not None else {"layer": "hidden", "layer_idx": 11}},
        {"is_trainable": False, "input_key": "txt", "target": embedder + "FrozenOpenCLIPEmbedder2",
         "params": clip_g if clip_g is not None else {"arch": "ViT-bigG-14", "version": "laion2b_s39b_b160k",
                                                      "freeze": True, "layer": "penultimate",
                                                      "always_return_pooled": True, "legacy": False}},
        *sizes]}}


def unet_options(config: UNetConfig) -> dict:
    return {"adm_in_channels": config.adm_in_channels, "num_classes": "sequential", "in_channels": 4,
            "out_channels": 4, "model_channels": config.model_channels, "attention_resolutions": [4, 2],
            "num_res_blocks": 2, "channel_mult": list(config.channel_mult), "num_head_channels": 64,
            "use_spatial_transformer": True, "use_linear_in_transformer": True, "transformer_depth": [1, 2, 10],
            "context_dim": config.context_dim, "legacy": False}


def v0_options() -> dict:
    """The sizes of ``options/SUPIR_v0.yaml``."""
    unet = unet_options(UNetConfig.sdxl_base())
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    return {"model": {"params": {
        "scale_factor": 0.13025,
        "denoiser_config": {"params": {"num_idx": 1000}},
        "control_stage_config": {"params": {**unet, "input_upscale": 1}},
        "network_config": {"params": {"mode": "XL-base", "project_type": "ZeroSFT", "project_channel_scale": 2,
                                      **unet}},
        "conditioner_config": sdxl_conditioner_config(),
        "first_stage_config": {"params": {"embed_dim": 4, "ddconfig": ddconfig}}}}}


def test_v0_option_file_is_the_v0_preset():
    """SUPIR_v0.yaml's conditioner names CLIP ViT-L/14 (hidden state 11) and bigG (penultimate, pooled): the whole
    option file reads as the v0 preset, towers included."""
    assert supir.SUPIRConfig.from_options(v0_options()) == supir.SUPIRConfig.supir_v0()


def test_known_towers_are_the_published_sizes():
    assert sdxl_conditioner.from_options(sdxl_conditioner_config()) == sdxl_conditioner.Conditioner(
        text_models.openai_clip_l(), text_models.openclip_bigg(), 256)


def test_local_tower_configs_size_the_towers(tmp_path):
    """A CLIP-L ``version`` that is a folder with a transformers ``config.json`` (here a full ``CLIPModel`` config,
    whose ``text_config`` is read) and a bigG ``arch`` that is an open_clip model-config JSON, both relative to the
    option file's folder; ``layer: last`` (CLIP-L: after the final norm; bigG with ``legacy: False``: the raw last
    block) and a negative ``layer_idx``."""
    (tmp_path / "clip_l").mkdir()
    (tmp_path / "clip_l" / "config.json").write_text(json.dumps({"model_type": "clip", "text_config": {
        "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}}))
    (tmp_path / "bigg.json").write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"width": 8}, "text_cfg": {
        "context_length": 77, "vocab_size": 1000, "width": 64, "heads": 4, "layers": 2}}))
    clip_g = {"arch": "bigg.json", "layer": "last", "always_return_pooled": True, "legacy": False}
    conditioner = sdxl_conditioner.from_options(
        sdxl_conditioner_config({"version": "clip_l", "layer": "hidden", "layer_idx": -2}, clip_g, outdim=4), tmp_path)
    assert conditioner.clip_l == TextEncoderConfig(vocab_size=1000, width=32, heads=2, layers=3, act="quick_gelu",
                                                   output_layer=2)
    assert conditioner.clip_g == TextEncoderConfig(vocab_size=1000, width=64, heads=4, layers=2, act="gelu",
                                                   output_layer=2, pooled=True, projection_dim=16)
    assert conditioner.size_embed_dim == 4
    last = sdxl_conditioner.from_options(sdxl_conditioner_config({"version": "clip_l", "layer": "last"}, clip_g, 4),
                                         tmp_path)
    assert last.clip_l.output_layer == "last" and last.clip_l.final_norm_used


def test_a_small_option_file_converts_to_a_consistent_config(tmp_path):
    """A SUPIR option file with every part small (UNet, VAE, towers): the towers' widths fill the UNet's
    context_dim, the pooled width and size embeddings its adm_in_channels."""
    (tmp_path / "clip_l.json").write_text(json.dumps({
        "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}))
    (tmp_path / "bigg.json").write_text(json.dumps({"embed_dim": 16, "text_cfg": {
        "context_length": 77, "vocab_size": 1000, "width": 64, "heads": 4, "layers": 2}}))
    options = v0_options()
    params = options["model"]["params"]
    unet = unet_options(UNetConfig(model_channels=64, channel_mult=(1, 2, 4), context_dim=96, adm_in_channels=40))
    unet.update(num_head_channels=32, transformer_depth=[1, 2, 1])
    params["network_config"]["params"].update(unet)
    params["control_stage_config"]["params"].update(unet)
    params["conditioner_config"] = sdxl_conditioner_config(
        {"version": "clip_l.json", "layer": "hidden", "layer_idx": 1},
        {"arch": "bigg.json", "layer": "penultimate", "always_return_pooled": True, "legacy": False}, outdim=4)
    params["first_stage_config"]["params"]["ddconfig"].update(ch=32, ch_mult=[1, 2], num_res_blocks=1, resolution=64)
    config = supir.SUPIRConfig.from_options(options, tmp_path)
    assert config.clip_l.width + config.clip_g.width == config.diffusion.unet.context_dim == 96
    assert (config.clip_g.projection_dim, config.size_embed_dim, config.diffusion.unet.adm_in_channels) == (16, 4, 40)
    assert config.vae == VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=64, scale_factor=0.13025)
    wrong = copy.deepcopy(options)
    wrong["model"]["params"]["conditioner_config"] = sdxl_conditioner_config()   # full-size towers, tiny UNet
    with pytest.raises(JaxirInputError, match=r"text widths 768 \+ 1280 must equal the UNet context_dim 96"):
        supir.SUPIRConfig.from_options(wrong, tmp_path)


BIGG = {"arch": "ViT-bigG-14", "layer": "penultimate", "always_return_pooled": True, "legacy": False}


@pytest.mark.parametrize("clip_l, clip_g, outdim, message", [
    ({"layer": "pooled"}, BIGG, 256, r"FrozenCLIPEmbedder layer 'pooled': supported are 'hidden'"),
    ({"layer": "hidden", "layer_idx": 13}, BIGG, 256, r"layer_idx 13: needs an index of the 13 hidden states"),
    ({"layer": "hidden"}, BIGG, 256, r"layer_idx None"),
    ({"layer": "hidden", "layer_idx": 11, "always_return_pooled": True}, BIGG, 256, r"uses only its hidden state"),
    ({"version": "openai/clip-vit-base-patch32"}, BIGG, 256,
     r"version 'openai/clip-vit-base-patch32': not a known tower \(openai/clip-vit-large-patch14\) and no config"),
    ({"layer": "last", "max_length": 64}, BIGG, 256, r"max_length 64 differs from the tower's 77 positions"),
    ({"layer": "last"}, {**BIGG, "legacy": True}, 256, r"legacy: False"),
    ({"layer": "last"}, {**BIGG, "arch": "ViT-g-14"}, 256, r"arch 'ViT-g-14': not a known model"),
    ({"layer": "last"}, {**BIGG, "layer": "pooled"}, 256, r"layer 'pooled': supported are 'last' and 'penultimate'"),
    ({"layer": "last"}, BIGG, "256", r"one integer outdim"),
])
def test_unsupported_conditioners_are_refused_with_the_reason(tmp_path, clip_l, clip_g, outdim, message):
    with pytest.raises(JaxirInputError, match=message):
        sdxl_conditioner.from_options(sdxl_conditioner_config(clip_l, clip_g, outdim), tmp_path)


def test_other_embedder_lists_and_unreadable_configs_are_refused(tmp_path):
    config = sdxl_conditioner_config()
    config["params"]["emb_models"] = config["params"]["emb_models"][:2]
    with pytest.raises(JaxirInputError, match=r"embedders \['FrozenCLIPEmbedder', 'FrozenOpenCLIPEmbedder2'\]"):
        sdxl_conditioner.from_options(config)
    swapped = sdxl_conditioner_config()
    sizes = swapped["params"]["emb_models"]
    sizes[2]["input_key"], sizes[4]["input_key"] = sizes[4]["input_key"], sizes[2]["input_key"]
    with pytest.raises(JaxirInputError, match=r"size embedders read \['target_size_as_tuple'"):
        sdxl_conditioner.from_options(swapped)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(JaxirInputError, match=r"model config .*broken\.json: not a readable JSON file"):
        sdxl_conditioner.from_options(sdxl_conditioner_config(None, {**BIGG, "arch": "broken.json"}), tmp_path)
    (tmp_path / "wide.json").write_text(json.dumps({
        "vocab_size": 10, "hidden_size": 8, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}))
    with pytest.raises(JaxirInputError, match=r"intermediate_size 64 is not 4 × hidden_size 8"):
        sdxl_conditioner.from_options(sdxl_conditioner_config({"version": "wide.json", "layer": "last"}), tmp_path)


def test_partial_option_files_name_the_missing_part():
    options = v0_options()
    del options["model"]["params"]["first_stage_config"]
    with pytest.raises(JaxirInputError, match=r"model\.params\.first_stage_config \(the VAE\) is missing"):
        supir.SUPIRConfig.from_options(options)
