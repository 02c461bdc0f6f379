"""The base Stable Diffusion model under a one-step restorer's LoRA (HYPIR, OSEDiff, PiSA-SR: SD 2.1-base), read from
either of the two forms it ships in:

* a diffusers folder (``stabilityai/stable-diffusion-2-1-base``, what the three repositories load with
  ``from_pretrained(path, subfolder=...)``): ``unet/``, ``vae/`` (``config.json`` + weights), ``scheduler/``
  (``scheduler_config.json``: the β schedule and what the UNet predicts) and, when present, ``text_encoder/``
  (transformers' ``CLIPTextModel``: SD 2.1's OpenCLIP ViT-H text tower cut after block 23, ``last_hidden_state``);
  the architectures come from the config files, so any size converts;
* an LDM checkpoint (``v2-1_512-ema-pruned.ckpt``, as ``diffbir --sd`` reads it): SD 2.1-base sizes, SD's linear
  schedule with ε-prediction, the OpenCLIP text tower (penultimate block + ``ln_final``).

The keys are mapped by :mod:`checkpoints_conversion.unet_keys` / ``vae_keys`` / ``text_keys``; the same rules map the
LoRA deltas (:mod:`checkpoints_conversion.lora`), so :class:`Base` keeps the layout it was read in.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import strip_prefix
from checkpoints_conversion.sources import read_state_dict
from checkpoints_conversion.text_keys import convert_text_encoder
from checkpoints_conversion.unet_keys import convert_unet
from checkpoints_conversion.vae_keys import convert_vae
from jaxir.models.cldm import DiffusionProcess
from jaxir.models.text import TextEncoderConfig, openclip_vit_h
from jaxir.models.unet import UNetConfig
from jaxir.models.vae import VAEConfig

LDM_PREFIXES = {"unet": "model.diffusion_model.", "vae": "first_stage_model."}
# diffusers options that change the network away from what jaxir's UNet / VAE implement, with the only value read
UNET_FIXED = {"act_fn": "silu", "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0,
              "mid_block_scale_factor": 1, "norm_eps": 1e-05, "only_cross_attention": False,
              "upcast_attention": False, "dual_cross_attention": False, "downsample_padding": 1,
              "class_embed_type": None, "addition_embed_type": None, "time_embedding_type": "positional",
              "resnet_time_scale_shift": "default", "conv_in_kernel": 3, "conv_out_kernel": 3,
              "mid_block_type": "UNetMidBlock2DCrossAttn", "transformer_layers_per_block": 1,
              "num_attention_heads": None, "encoder_hid_dim": None, "time_cond_proj_dim": None}
VAE_FIXED = {"act_fn": "silu", "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
             "shift_factor": None, "latents_mean": None, "latents_std": None}
SCHEDULE_NAMES = {"scaled_linear"}   # diffusers' name for SD's linspace(√β₀, √β₁)²
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v"}


@dataclasses.dataclass(frozen=True)
class Base:
    """A base model read from ``path``: configs, converted parameters and the layout its keys are in."""

    path: Path
    layout: str                      # "diffusers" or "ldm": the key rules the LoRA deltas go through
    unet: UNetConfig
    vae: VAEConfig
    process: DiffusionProcess
    text: TextEncoderConfig | None
    params: dict                     # {"unet", "vae"[, "text"]}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConversionError(f"{path}: not a readable diffusers config ({type(err).__name__})") from None


def _check_fixed(config: dict, fixed: dict, path: Path) -> None:
    for key, value in fixed.items():
        if config.get(key, value) != value:
            raise ConversionError(f"{path}: {key}={config[key]!r} is not supported (only {value!r})")


def unet_config_from_diffusers(config: dict, path: Path) -> UNetConfig:
    """``UNet2DConditionModel`` config → :class:`UNetConfig`. diffusers' ``attention_head_dim`` is the number of
    heads per level (SD 2.x names it so); the mid block uses the last level's. Levels with ``CrossAttn*`` blocks get
    attention; the up blocks must mirror the down blocks."""
    _check_fixed(config, UNET_FIXED, path)
    channels = tuple(config["block_out_channels"])
    mc = channels[0]
    if any(c % mc for c in channels):
        raise ConversionError(f"{path}: block_out_channels {channels} are not multiples of the first")
    down = config["down_block_types"]
    attn_levels = [i for i, t in enumerate(down) if t == "CrossAttnDownBlock2D"]
    if any(t not in ("CrossAttnDownBlock2D", "DownBlock2D") for t in down) or \
            list(reversed(config["up_block_types"])) != [t.replace("Down", "Up") for t in down]:
        raise ConversionError(f"{path}: block types {down} / {config['up_block_types']} are not supported")
    heads = config["attention_head_dim"]
    heads = (heads,) * len(channels) if isinstance(heads, int) else tuple(heads)
    widths = {channels[i] // heads[i] for i in [*attn_levels, len(channels) - 1]}
    if len(widths) != 1:
        raise ConversionError(f"{path}: attention heads of different widths {sorted(widths)} are not supported")
    layers = config["layers_per_block"]
    return UNetConfig(in_channels=config["in_channels"], out_channels=config["out_channels"], model_channels=mc,
                      channel_mult=tuple(c // mc for c in channels), num_res_blocks=layers,
                      attention_resolutions=tuple(2 ** i for i in attn_levels), num_head_channels=widths.pop(),
                      context_dim=config["cross_attention_dim"],
                      use_linear_in_transformer=bool(config.get("use_linear_projection", False)),
                      norm_groups=config.get("norm_num_groups", 32))


def vae_config_from_diffusers(config: dict, path: Path) -> VAEConfig:
    """``AutoencoderKL`` config → :class:`VAEConfig` (attention only in the mid blocks, as diffusers builds it)."""
    _check_fixed(config, VAE_FIXED, path)
    channels = tuple(config["block_out_channels"])
    ch = channels[0]
    if any(c % ch for c in channels):
        raise ConversionError(f"{path}: block_out_channels {channels} are not multiples of the first")
    return VAEConfig(ch=ch, ch_mult=tuple(c // ch for c in channels), num_res_blocks=config["layers_per_block"],
                     z_channels=config["latent_channels"], embed_dim=config["latent_channels"],
                     in_channels=config["in_channels"], out_channels=config["out_channels"],
                     resolution=config.get("sample_size", 256), scale_factor=float(config["scaling_factor"]),
                     norm_groups=config.get("norm_num_groups", 32))


def process_from_scheduler(config: dict, path: Path) -> DiffusionProcess:
    """A diffusers scheduler config (any class: the three repositories load SD 2.1's PNDM config as DDPM) →
    :class:`DiffusionProcess`."""
    if config.get("beta_schedule") not in SCHEDULE_NAMES or config.get("trained_betas") is not None:
        raise ConversionError(f"{path}: beta_schedule {config.get('beta_schedule')!r} is not supported "
                              f"(only {sorted(SCHEDULE_NAMES)})")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise ConversionError(f"{path}: prediction_type {prediction!r} is not supported")
    return DiffusionProcess(linear_start=float(config["beta_start"]), linear_end=float(config["beta_end"]),
                            timesteps=int(config["num_train_timesteps"]),
                            zero_snr=bool(config.get("rescale_betas_zero_snr", False)),
                            parameterization=PREDICTIONS[prediction])


def _diffusers_text_config(config: dict) -> TextEncoderConfig:
    return TextEncoderConfig(vocab_size=config["vocab_size"], context_length=config["max_position_embeddings"],
                             width=config["hidden_size"], heads=config["num_attention_heads"],
                             layers=config["num_hidden_layers"], act=config["hidden_act"], output_layer="last")


def _read_diffusers(path: Path) -> Base:
    for sub in ("unet", "vae"):
        if not (path / sub / "config.json").is_file():
            raise ConversionError(f"{path}: not a diffusers Stable Diffusion folder (no {sub}/config.json)")
    scheduler = path / "scheduler" / "scheduler_config.json"
    if not scheduler.is_file():
        raise ConversionError(f"{path}: no scheduler/scheduler_config.json (the schedule the model was trained on)")
    unet = unet_config_from_diffusers(_read_json(path / "unet" / "config.json"), path / "unet" / "config.json")
    vae = vae_config_from_diffusers(_read_json(path / "vae" / "config.json"), path / "vae" / "config.json")
    params = {"unet": convert_unet(read_state_dict(path / "unet"), unet, "diffusers"),
              "vae": convert_vae(read_state_dict(path / "vae"), vae, "diffusers")}
    text = None
    if (path / "text_encoder" / "config.json").is_file():
        text = _diffusers_text_config(_read_json(path / "text_encoder" / "config.json"))
        params["text"] = convert_text_encoder(read_state_dict(path / "text_encoder"), text, "transformers")
    return Base(path, "diffusers", unet, vae, process_from_scheduler(_read_json(scheduler), scheduler), text, params)


def _read_ldm(path: Path) -> Base:
    state = read_state_dict(path)
    parts = {name: strip_prefix(state, prefix) for name, prefix in LDM_PREFIXES.items()}
    if not parts["unet"] or not parts["vae"]:
        raise ConversionError(f"{path}: not a Stable Diffusion checkpoint in the LDM layout (no "
                              f"{LDM_PREFIXES['unet']}* or {LDM_PREFIXES['vae']}* tensors)")
    unet, vae, text = UNetConfig.sd21_base(), VAEConfig.sd(), openclip_vit_h()
    params = {"unet": convert_unet(parts["unet"], unet, "ldm"), "vae": convert_vae(parts["vae"], vae, "ldm"),
              "text": convert_text_encoder(state, text, "sd2")}
    return Base(path, "ldm", unet, vae, DiffusionProcess(), text, params)


def read_base(path: str | Path) -> Base:
    """The base model at ``path``: a diffusers folder or an LDM checkpoint file (module docstring)."""
    path = Path(path)
    return _read_diffusers(path) if path.is_dir() else _read_ldm(path)
