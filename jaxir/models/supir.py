"""SUPIR (Yu et al. 2024, "Scaling Up to Excellence"): SDXL with a trainable encoder copy (GLVControl) whose features
enter the frozen UNet's decoder through ZeroSFT and ZeroCrossAttn connectors (LightGLVUNet), a degradation-robust
VAE encoder, and SDXL's text/size conditioner.

References (Fanghua-Yu/SUPIR at commit bda91af): ``SUPIR/modules/SUPIR_v0.py`` (``ZeroSFT``, ``ZeroCrossAttn``,
``GLVControl``, ``LightGLVUNet``), ``SUPIR/models/SUPIR_model.py`` (``SUPIRModel``: ``denoise_encoder``, the
stage-1 decode / re-encode, ``prepare_condition``), ``sgm/modules/diffusionmodules/wrappers.py``
(``ControlWrapper``), ``sgm/modules/encoders/modules.py`` (``GeneralConditionerWithControl``,
``ConcatTimestepEmbedderND``) and ``options/SUPIR_v0.yaml``.

Parameter trees mirror the PyTorch module paths: :class:`SUPIRNetwork` is ``ControlWrapper`` (``diffusion_model``,
``control_model``); :class:`SUPIRNet` holds it as ``model`` next to ``first_stage_model`` (the SDXL VAE plus
``denoise_encoder``), ``clip_l`` and ``clip_g``. The network never samples: SUPIR's denoiser, guidance and
sampler are assembled from :mod:`jaxir.diffusion` by :mod:`jaxir.pipelines.supir`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError
from jaxir.layers import conv, group_norm, timestep_embedding
from jaxir.models import sdxl_conditioner
from jaxir.models import text as text_models
from jaxir.models.text import TextEncoderConfig, TextTransformer
from jaxir.models.tokenizer import CLIPTokenizer
from jaxir.models.unet import (Attn, CrossAttention, Res, UNetConfig, Up, Upsample, check_inputs, decoder_layout,
                               embed, encode, encoder_layout, middle, run_block)
from jaxir.models.vae import AutoencoderKL, Encoder, VAEConfig

SFT_HIDDEN = 128           # ZeroSFT's ``nhidden``
CROSS_ATTN_HEAD_DIM = 64   # ZeroCrossAttn: query_dim // 64 heads of 64, whatever the UNet's heads are
CLIP_L_PAD = 49407         # transformers' CLIPTokenizer pads with <|endoftext|>; open_clip pads with 0


# ---- configuration -----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ProjectSpec:
    """One of LightGLVUNet's ``project_modules``: ``kind`` "sft" (``ZeroSFT(label_nc, norm_nc, concat_channels)``)
    or "cross_attn" (``ZeroCrossAttn(context_dim=label_nc, query_dim=norm_nc)``), fed control feature
    ``control_index``."""

    kind: str
    control_index: int
    label_nc: int
    norm_nc: int
    concat_channels: int = 0


def _glv_channel_lists(unet: UNetConfig, project_channel_scale: float):
    """``LightGLVUNet(mode="XL-base")``'s lists, derived from the UNet layout (SUPIR hard-codes them at
    model_channels 320): ``cond_output_channels`` = the widths of the control features (every input block, then
    the middle block); ``project_channels`` = half of them times ``project_channel_scale``; ``concat_channels[i]``
    = the width of the decoder feature entering the output block that consumes skip i (0 for the middle)."""
    _, chans = encoder_layout(unet)
    mid = unet.model_channels * unet.channel_mult[-1]
    cond_output = list(chans) + [mid]
    project = [int(c // 2 * project_channel_scale) for c in cond_output]
    decoder_in, h = [], mid
    for block in decoder_layout(unet):
        decoder_in.append(h)
        h = block[0].out_channels
    concat = decoder_in[::-1] + [0]
    return cond_output, project, concat


def project_layout(unet: UNetConfig, project_channel_scale: float = 2.0) -> tuple[ProjectSpec, ...]:
    """``project_modules`` in SUPIR's order: a ZeroSFT per control feature, with a ZeroCrossAttn inserted before
    ZeroSFT i wherever the output block that consumes skip i ends in (ResBlock, attention, Upsample) — SUPIR's
    ``len(module) == 3`` test, its ``cross_attn_insert_idx`` [6, 3] for XL-base."""
    cond_output, project, concat = _glv_channel_lists(unet, project_channel_scale)
    n_skips = len(cond_output) - 1
    cross_attn = {n_skips - 1 - j for j, block in enumerate(decoder_layout(unet))
                  if [type(layer) for layer in block] == [Res, Attn, Up]}
    specs = []
    for i, (label, norm, cat) in enumerate(zip(project, cond_output, concat)):
        if i in cross_attn:
            specs.append(ProjectSpec("cross_attn", i, cond_output[i], cat))
        specs.append(ProjectSpec("sft", i, label, norm, cat))
    return tuple(specs)


@dataclasses.dataclass(frozen=True)
class SUPIRDiffusionConfig:
    """The diffusion network (``ControlWrapper``: LightGLVUNet + GLVControl) and the parameters of the denoiser's
    LegacyDDPM σ table (``DiscreteDenoiserWithControl``, ``num_idx`` entries;
    :func:`jaxir.diffusion.restore_edm.legacy_ddpm_sigmas`)."""

    unet: UNetConfig
    control: UNetConfig
    project_channel_scale: float = 2.0
    num_timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012

    def __post_init__(self):
        if self.unet.adm_in_channels is None or self.control.adm_in_channels != self.unet.adm_in_channels:
            raise JaxirInputError("SUPIR: the UNet and GLVControl need the same adm_in_channels (SDXL vector)")
        for name in ("model_channels", "channel_mult", "res_blocks_per_level", "context_dim", "in_channels"):
            if getattr(self.unet, name) != getattr(self.control, name):
                raise JaxirInputError(f"SUPIR: GLVControl must copy the UNet's encoder; {name} differs")
        cond_output, project, _ = _glv_channel_lists(self.unet, self.project_channel_scale)
        if project != cond_output:  # ZeroSFT's mlp_shared reads the control feature: label_nc must be its width
            raise JaxirInputError(f"SUPIR project_channel_scale={self.project_channel_scale} gives ZeroSFT inputs "
                                  f"{project}, but the control features have {cond_output} channels (use 2)")

    @classmethod
    def supir_v0(cls) -> SUPIRDiffusionConfig:
        """``options/SUPIR_v0.yaml``: SDXL base sizes for both networks."""
        return cls(UNetConfig.sdxl_base(), UNetConfig.sdxl_base())

    @classmethod
    def from_options(cls, model_params: Mapping) -> SUPIRDiffusionConfig:
        """From ``model.params`` of a SUPIR option file (``network_config``, ``control_stage_config``,
        ``denoiser_config``)."""
        for key in ("network_config", "control_stage_config"):
            if key not in model_params:
                raise JaxirInputError(f"not a SUPIR option file: model.params has no {key}")
        network = dict(model_params["network_config"]["params"])
        mode, project_type = network.pop("mode", None), network.pop("project_type", "ZeroSFT")
        if mode != "XL-base" or project_type != "ZeroSFT":
            raise JaxirInputError(f"SUPIR LightGLVUNet mode={mode!r}, project_type={project_type!r}: only XL-base "
                                  "with ZeroSFT is supported")
        scale = float(network.pop("project_channel_scale", 1))
        control = dict(model_params["control_stage_config"]["params"])
        if control.pop("input_upscale", 1) != 1:
            raise JaxirInputError("SUPIR GLVControl input_upscale other than 1 is not supported")
        denoiser = model_params.get("denoiser_config", {}).get("params", {})
        discretization = denoiser.get("discretization_config", {}).get("params", {})
        return cls(UNetConfig.from_ldm(network), UNetConfig.from_ldm(control), project_channel_scale=scale,
                   num_timesteps=int(denoiser.get("num_idx", 1000)),
                   linear_start=float(discretization.get("linear_start", 0.00085)),
                   linear_end=float(discretization.get("linear_end", 0.012)))

    @property
    def projects(self) -> tuple[ProjectSpec, ...]:
        return project_layout(self.unet, self.project_channel_scale)

    @property
    def num_controls(self) -> int:
        return len(encoder_layout(self.control)[0]) + 1


@dataclasses.dataclass(frozen=True)
class SUPIRConfig:
    """The whole SUPIR model: diffusion network, the SDXL VAE (with SUPIR's ``denoise_encoder``), and SDXL's
    conditioner — CLIP ViT-L hidden state + OpenCLIP bigG penultimate state concatenated as ``crossattn``; bigG's
    pooled feature + sinusoidal embeddings (``size_embed_dim`` each) of original size, crop corner and target size
    concatenated as ``vector`` (``GeneralConditionerWithControl``)."""

    diffusion: SUPIRDiffusionConfig
    vae: VAEConfig
    clip_l: TextEncoderConfig
    clip_g: TextEncoderConfig
    size_embed_dim: int = 256

    def __post_init__(self):
        unet = self.diffusion.unet
        if self.clip_l.width + self.clip_g.width != unet.context_dim:
            raise JaxirInputError(f"SUPIR: text widths {self.clip_l.width} + {self.clip_g.width} must equal the "
                                  f"UNet context_dim {unet.context_dim}")
        pooled = self.clip_g.projection_dim or self.clip_g.width
        if not self.clip_g.pooled or pooled + 6 * self.size_embed_dim != unet.adm_in_channels:
            raise JaxirInputError(f"SUPIR: pooled bigG ({pooled}) + 6 × {self.size_embed_dim} must equal "
                                  f"adm_in_channels {unet.adm_in_channels}")

    @classmethod
    def supir_v0(cls) -> SUPIRConfig:
        """SUPIR-v0Q / v0F (``options/SUPIR_v0.yaml``) on SDXL base 1.0."""
        return cls(SUPIRDiffusionConfig.supir_v0(), VAEConfig.sdxl(), text_models.openai_clip_l(),
                   text_models.openclip_bigg())

    @classmethod
    def from_options(cls, options: Mapping, base: Path | None = None) -> SUPIRConfig:
        """From a SUPIR option file (``options/SUPIR_v0.yaml`` format, the parsed YAML) of any size: the VAE from
        ``first_stage_config``, the text towers and size embeddings from ``conditioner_config``
        (:mod:`jaxir.models.sdxl_conditioner`; ``base`` is the file's folder, for local tower configs)."""
        params = options.get("model", {}).get("params") if isinstance(options, Mapping) else None
        if not isinstance(params, Mapping):
            raise JaxirInputError("not a SUPIR option file: model.params is missing")
        for part, what in (("first_stage_config", "the VAE"), ("conditioner_config", "the text and size conditioner")):
            if part not in params:
                raise JaxirInputError(f"not a full SUPIR option file: model.params.{part} ({what}) is missing")
        conditioner = sdxl_conditioner.from_options(params["conditioner_config"], base)
        stage = params["first_stage_config"]["params"]
        vae = VAEConfig.from_ldm(stage["ddconfig"], stage["embed_dim"], params.get("scale_factor", 0.13025))
        return cls(SUPIRDiffusionConfig.from_options(params), vae, conditioner.clip_l, conditioner.clip_g,
                   conditioner.size_embed_dim)


# ---- connectors ----------------------------------------------------------------------------------------------------

class ZeroSFT(nn.Module):
    """SUPIR's ``ZeroSFT``: ``h + zero_conv(c)`` (concatenated after ``h_ori`` when ``concat_channels``), then a
    spatial feature transform ``GN(h)·(1 + γ(c)) + β(c)`` with γ, β from ``mlp_shared`` (3×3 conv + SiLU), and the
    control-scale blend ``s·out + (1 − s)·h_raw`` with ``h_raw`` the untouched (concatenated) input.

    ``h_ori`` (the decoder feature, first in the concatenation) is required exactly when ``concat_channels > 0``."""

    norm_nc: int
    concat_channels: int = 0

    @nn.compact
    def __call__(self, c, h, h_ori=None, control_scale=1.0):
        if (h_ori is None) != (self.concat_channels == 0) or h.shape[-1] != self.norm_nc:
            raise JaxirInputError(f"ZeroSFT({self.norm_nc}, concat {self.concat_channels}) got h {h.shape}, "
                                  f"h_ori {None if h_ori is None else h_ori.shape}")
        width = self.norm_nc + self.concat_channels
        h_raw = h if h_ori is None else jnp.concatenate([h_ori, h], axis=-1)
        h = h + nn.Dense(self.norm_nc, name="zero_conv")(c)
        if h_ori is not None:
            h = jnp.concatenate([h_ori, h], axis=-1)
        actv = nn.silu(conv(SFT_HIDDEN, name="mlp_shared_0")(c))
        gamma, beta = conv(width, name="zero_mul")(actv), conv(width, name="zero_add")(actv)
        out = group_norm(name="param_free_norm")(h) * (gamma + 1.0) + beta
        return out * control_scale + h_raw * (1.0 - control_scale)


class ZeroCrossAttn(nn.Module):
    """SUPIR's ``ZeroCrossAttn``: ``x + s·attn(GN(x), GN(context))`` over the H·W tokens of each, with
    ``query_dim // 64`` heads of width 64 (``norm1`` on x, ``norm2`` on the control feature)."""

    @nn.compact
    def __call__(self, context, x, control_scale=1.0):
        b, hgt, wid, c = x.shape
        tokens = group_norm(name="norm1")(x).reshape(b, hgt * wid, c)
        ctx = group_norm(name="norm2")(context).reshape(b, -1, context.shape[-1])
        out = CrossAttention(c // CROSS_ATTN_HEAD_DIM, CROSS_ATTN_HEAD_DIM, name="attn")(tokens, ctx)
        return x + out.reshape(b, hgt, wid, c) * control_scale


# ---- networks ------------------------------------------------------------------------------------------------------

class GLVControl(nn.Module):
    """SUPIR's ``GLVControl``: the UNet's encoder and middle block on the noisy latent ``x_t``, with the
    low-quality latent ``hint`` through the (zero-initialised) 3×3 ``input_hint_block`` added after
    ``input_blocks.0``. Returns every input block's output, then the middle block's (10 for SDXL), unscaled."""

    config: UNetConfig

    @nn.compact
    def __call__(self, hint, timesteps, x_t, context, y):
        config = self.config
        check_inputs(config, x_t, context)
        if hint.shape != x_t.shape:
            raise JaxirInputError(f"GLVControl hint must have the latent's shape {x_t.shape}; got {hint.shape}")
        emb = embed(config, timesteps, y, x_t.shape[0])
        guided_hint = conv(config.model_channels, name="input_hint_block_0")(hint)
        features = encode(config, x_t, emb, context, added_after_first=guided_hint)
        return (*features, middle(config, features[-1], emb, context))


class LightGLVUNet(nn.Module):
    """SUPIR's ``LightGLVUNet`` (mode XL-base): the SDXL UNet whose middle output and skip features pass through
    ZeroSFT with the control feature of the same position, plus ZeroCrossAttn before the Upsample of output
    blocks that end in (ResBlock, attention, Upsample). ``control``: GLVControl's outputs; ``control_scale`` a
    scalar (may be traced)."""

    config: UNetConfig
    project_channel_scale: float = 2.0

    @nn.compact
    def __call__(self, x, timesteps, context, y, control: Sequence, control_scale=1.0):
        config = self.config
        check_inputs(config, x, context)
        specs = project_layout(config, self.project_channel_scale)
        modules = {}
        for k, spec in enumerate(specs):
            name = f"project_modules_{k}"
            modules[spec.kind, spec.control_index] = (ZeroSFT(spec.norm_nc, spec.concat_channels, name=name)
                                                      if spec.kind == "sft" else ZeroCrossAttn(name=name))
        emb = embed(config, timesteps, y, x.shape[0])
        skips = encode(config, x, emb, context)
        if len(control) != len(skips) + 1:
            raise JaxirInputError(f"control must hold {len(skips) + 1} features, got {len(control)}")
        h = middle(config, skips[-1], emb, context)
        h = modules["sft", len(skips)](control[-1], h, control_scale=control_scale)
        for j, block in enumerate(decoder_layout(config)):
            i = len(skips) - 1 - j
            name = f"output_blocks_{j}"
            h = modules["sft", i](control[i], skips[i], h, control_scale=control_scale)
            if ("cross_attn", i) in modules:
                h = run_block(block[:-1], name, h, emb, context)
                h = modules["cross_attn", i](control[i], h, control_scale=control_scale)
                h = Upsample(block[-1], name=f"{name}_{len(block) - 1}")(h)
            else:
                h = run_block(block, name, h, emb, context)
        h = nn.silu(group_norm(name="out_0")(h))
        return conv(config.out_channels, name="out_2")(h)


class SUPIRNetwork(nn.Module):
    """sgm's ``ControlWrapper``: ``diffusion_model(x, t, crossattn, vector, control_model(control, t, x, …),
    control_scale)``. ``cond``: a mapping with ``crossattn`` (B, T, context_dim), ``vector`` (B, adm) and
    ``control`` (the low-quality latent, the shape of ``x``)."""

    config: SUPIRDiffusionConfig

    def setup(self):
        self.diffusion_model = LightGLVUNet(self.config.unet, self.config.project_channel_scale)
        self.control_model = GLVControl(self.config.control)

    def __call__(self, x, timesteps, cond: Mapping, control_scale=1.0):
        control = self.control_model(cond["control"], timesteps, x, cond["crossattn"], cond["vector"])
        return self.diffusion_model(x, timesteps, cond["crossattn"], cond["vector"], control, control_scale)

    def control_features(self, x, timesteps, cond: Mapping):
        return self.control_model(cond["control"], timesteps, x, cond["crossattn"], cond["vector"])

    def unet(self, x, timesteps, context, y, control, control_scale=1.0):
        return self.diffusion_model(x, timesteps, context, y, control, control_scale)


def network_example_inputs(config: SUPIRDiffusionConfig, batch: int = 1):
    side = 2 ** (len(config.unet.channel_mult) - 1)
    f32 = jnp.float32
    latent = jax.ShapeDtypeStruct((batch, side, side, config.unet.in_channels), f32)
    cond = {"crossattn": jax.ShapeDtypeStruct((batch, 1, config.unet.context_dim), f32),
            "vector": jax.ShapeDtypeStruct((batch, config.unet.adm_in_channels), f32), "control": latent}
    return latent, jax.ShapeDtypeStruct((batch,), f32), cond


def network_param_shapes(config: SUPIRDiffusionConfig):
    """The ``ControlWrapper`` parameter tree (``diffusion_model``, ``control_model``) as ShapeDtypeStructs."""
    net = SUPIRNetwork(config)
    return jax.eval_shape(lambda *a: net.init(jax.random.key(0), *a), *network_example_inputs(config))["params"]


# ---- first stage and conditioner -----------------------------------------------------------------------------------

class SUPIRAutoencoder(AutoencoderKL):
    """The SDXL ``AutoencoderKL`` plus SUPIR's ``denoise_encoder`` (a fine-tuned copy of the encoder that maps a
    degraded image to the latent of its clean version; ``SUPIRModel.encode_first_stage_with_denoise``). Images in
    [−1, 1] here (SUPIR's range); latents scaled by ``scale_factor`` (0.13025 for SDXL)."""

    def setup(self):
        super().setup()
        self.denoise_encoder = Encoder(self.config)

    def _latent(self, moments, noise):
        mean, logvar = jnp.split(self.quant_conv(moments), 2, axis=-1)
        if noise is not None:  # DiagonalGaussianDistribution.sample: mean + exp(logvar / 2)·ε, logvar clamped
            mean = mean + jnp.exp(0.5 * jnp.clip(logvar, -30.0, 20.0)) * noise
        return self.config.scale_factor * mean

    def denoise_encode(self, x):
        """``scale · mode(quant_conv(denoise_encoder(x)))``, x in [−1, 1]."""
        return self._latent(self.denoise_encoder(x), None)

    def encode_scaled(self, x, noise=None):
        """``scale · E(x)`` with the standard encoder, x in [−1, 1]: the posterior mode, or with ``noise`` (standard
        normal, the latent's shape) a posterior sample as ``AutoencoderKLInferenceWrapper.encode`` draws."""
        return self._latent(self.encoder(x), noise)

    def __call__(self, x):
        return self.decode(self.encode_scaled(x) + self.denoise_encode(x))


def size_embedding(values, dim: int):
    """sgm ``ConcatTimestepEmbedderND``: each value of ``values`` (B, k) through the sinusoidal timestep embedding
    of width ``dim``, concatenated per row → (B, k·dim)."""
    values = jnp.asarray(values, jnp.float32)
    b, k = values.shape
    return timestep_embedding(values.reshape(-1), dim).reshape(b, k * dim)


class SUPIRNet(nn.Module):
    """The parameter container: ``model`` (:class:`SUPIRNetwork`), ``first_stage_model``, ``clip_l``,
    ``clip_g``."""

    config: SUPIRConfig

    def setup(self):
        self.model = SUPIRNetwork(self.config.diffusion)
        self.first_stage_model = SUPIRAutoencoder(self.config.vae)
        self.clip_l = TextTransformer(self.config.clip_l)
        self.clip_g = TextTransformer(self.config.clip_g)

    def condition(self, tokens_l, tokens_g, sizes):
        """``(crossattn, vector)``: ``[CLIP-L hidden; bigG hidden]`` along channels, and ``[bigG pooled,
        emb(original_size), emb(crop_coords_top_left), emb(target_size)]``; ``sizes`` (B, 6) holds those six
        numbers in that order."""
        hidden_l, _ = self.clip_l(tokens_l)
        hidden_g, pooled = self.clip_g(tokens_g)
        vector = jnp.concatenate([pooled, size_embedding(sizes, self.config.size_embed_dim)], axis=-1)
        return jnp.concatenate([hidden_l, hidden_g], axis=-1), vector

    def network(self, x, timesteps, cond, control_scale):
        return self.model(x, timesteps, cond, control_scale)

    def control_features(self, x, timesteps, cond):
        return self.model.control_features(x, timesteps, cond)

    def unet(self, x, timesteps, cond, control, control_scale):
        return self.model.unet(x, timesteps, cond["crossattn"], cond["vector"], control, control_scale)

    def denoise_encode(self, x):
        return self.first_stage_model.denoise_encode(x)

    def encode_scaled(self, x, noise):
        return self.first_stage_model.encode_scaled(x, noise)

    def decode(self, z):
        return self.first_stage_model.decode(z)

    def __call__(self, tokens, image, x_t, t):
        """Touches every parameter (for ``init``/``eval_shape``)."""
        crossattn, vector = self.condition(tokens, tokens, jnp.zeros((tokens.shape[0], 6)))
        z = self.denoise_encode(image)
        return self.network(x_t, t, {"crossattn": crossattn, "vector": vector, "control": z}, 1.0), self.first_stage_model(image)


def param_shapes(config: SUPIRConfig):
    f = config.vae.downsample_factor * 2 ** (len(config.diffusion.unet.channel_mult) - 1)
    latent = f // config.vae.downsample_factor
    args = (jax.ShapeDtypeStruct((1, config.clip_l.context_length), jnp.int32),
            jax.ShapeDtypeStruct((1, f, f, 3), jnp.float32),
            jax.ShapeDtypeStruct((1, latent, latent, config.diffusion.unet.in_channels), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32))
    return jax.eval_shape(lambda *a: SUPIRNet(config).init(jax.random.key(0), *a), *args)["params"]


# ---- the model as jitted operations --------------------------------------------------------------------------------

class SUPIR:
    """SUPIR's operations as jitted functions of ``(params, …)``; built by ``jaxir.load`` (kind ``supir``).

    * :meth:`encode_lq` — ``SUPIRModel.encode_first_stage_with_denoise(use_sample=False)`` of images in [0, 1];
    * :meth:`stage1` — the degradation-robust path of ``batchify_sample``: ``z_lq`` = that latent, ``x_stage1`` =
      its decoding (in [−1, 1], unclamped), ``x_center`` = ``encode_first_stage(x_stage1)`` (a posterior sample,
      drawn with ``noise``);
    * :meth:`condition` — ``prepare_condition``: the ``crossattn``/``vector``/``control`` condition of prompts;
    * :meth:`network` — ``ControlWrapper``: the ε prediction at integer timesteps (the denoiser, guidance and
      sampler are :mod:`jaxir.pipelines.supir`'s);
    * :meth:`control_features`, :meth:`unet` — its two halves: GLVControl's features, and LightGLVUNet given
      features at a chosen control scale;
    * :meth:`decode` — ``decode_first_stage``, images in [−1, 1].
    """

    def __init__(self, config: SUPIRConfig):
        self.config = config
        self.net = SUPIRNet(config)
        self.tokenizer_l = CLIPTokenizer(context_length=config.clip_l.context_length, pad_token=CLIP_L_PAD)
        self.tokenizer_g = CLIPTokenizer(context_length=config.clip_g.context_length, pad_token=0)
        method = lambda name: jax.jit(functools.partial(self.net.apply, method=name))  # noqa: E731
        self._condition = method("condition")
        self._network = method("network")
        self._control_features = method("control_features")
        self._unet = method("unet")
        self._denoise_encode = method("denoise_encode")
        self._encode_scaled = method("encode_scaled")
        self._decode = method("decode")

    @property
    def latent_scale(self) -> float:
        return self.config.vae.scale_factor

    def encode_lq(self, params, image):
        """``z_lq = scale · mode(denoise_encoder(2x − 1))`` of NHWC images in [0, 1]."""
        return self._denoise_encode({"params": params}, 2.0 * jnp.asarray(image, jnp.float32) - 1.0)

    def decode(self, params, z):
        """``D(z / scale)``: images in [−1, 1], unclamped."""
        return self._decode({"params": params}, z)

    def encode(self, params, x, noise=None):
        """``scale · E(x)`` with the standard encoder, x in [−1, 1] (e.g. a decoder output): the posterior mode, or
        a sample drawn with standard-normal ``noise`` of the latent's shape."""
        return self._encode_scaled({"params": params}, x, noise)

    def stage1(self, params, image, noise=None):
        """``(z_lq, x_stage1, x_center)`` for images in [0, 1] (see the class docstring)."""
        z_lq = self.encode_lq(params, image)
        x_stage1 = self.decode(params, z_lq)
        return z_lq, x_stage1, self.encode(params, x_stage1, noise)

    def condition(self, params, prompts: Sequence[str], control, original_size=(1024, 1024),
                  crop_coords_top_left=(0, 0), target_size=(1024, 1024)) -> dict:
        """``{crossattn, vector, control}`` for one prompt per row of ``control`` (the low-quality latent), with
        SUPIR's fixed size conditions (1024², no crop)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if len(prompts) != control.shape[0]:
            raise JaxirInputError(f"{len(prompts)} prompts for {control.shape[0]} latents")
        sizes = np.tile(np.array([*original_size, *crop_coords_top_left, *target_size], np.float32),
                        (len(prompts), 1))
        crossattn, vector = self._condition({"params": params}, jnp.asarray(self.tokenizer_l(prompts)),
                                            jnp.asarray(self.tokenizer_g(prompts)), sizes)
        return {"crossattn": crossattn, "vector": vector, "control": jnp.asarray(control, jnp.float32)}

    def network(self, params, x, timesteps, cond: Mapping, control_scale=1.0):
        """``ε(x, t, cond)`` of ``ControlWrapper`` at integer ``timesteps`` (a scalar for the whole batch, or one
        per sample) with ``cond`` as :meth:`condition` returns it; ``control_scale`` a (traced) scalar."""
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (x.shape[0],))
        return self._network({"params": params}, x, timesteps, dict(cond), jnp.asarray(control_scale, jnp.float32))

    def control_features(self, params, x, timesteps, cond: Mapping) -> list:
        """GLVControl's features (one per encoder block and the middle block) of ``cond["control"]`` at ``x``,
        ``timesteps`` — the ``control`` that :meth:`unet` takes."""
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (x.shape[0],))
        return self._control_features({"params": params}, x, timesteps, dict(cond))

    def unet(self, params, x, timesteps, cond: Mapping, control: Sequence, control_scale=1.0):
        """LightGLVUNet's ε at ``x``, ``timesteps`` with given control features (e.g. from
        :meth:`control_features`, or edited) entering through ZeroSFT/ZeroCrossAttn at ``control_scale`` (traced);
        ``unet(params, x, t, cond, control_features(params, x, t, cond), s)`` is :meth:`network`."""
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (x.shape[0],))
        return self._unet({"params": params}, x, timesteps, dict(cond), list(control),
                          jnp.asarray(control_scale, jnp.float32))
