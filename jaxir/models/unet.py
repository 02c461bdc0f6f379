"""LDM's conditional UNet (``openaimodel.UNetModel`` with ``SpatialTransformer`` attention), NHWC.

References: Stability-AI/stablediffusion ``ldm/modules/diffusionmodules/openaimodel.py`` and
``ldm/modules/attention.py`` (SD 1.x/2.x, the copy in XPixelGroup/DiffBIR ``diffbir/model/unet.py``,
``attention.py``), and Stability-AI/generative-models ``sgm/modules/diffusionmodules/openaimodel.py`` (SDXL: a
per-level ``transformer_depth`` whose last entry is the middle block's depth, and the ``adm_in_channels`` vector
embedding ``label_emb``). The control residuals follow ``ControlledUnetModel.forward`` of DiffBIR's
``diffbir/model/controlnet.py`` (= lllyasviel/ControlNet ``cldm/cldm.py``).

Only what the released SD/SDXL/DiffBIR/SUPIR UNets use is supported: spatial-transformer attention, convolutional
resampling, plain (not scale-shift) time conditioning. Flax submodules are named after the LDM module paths
(``input_blocks.4.1.transformer_blocks.0.attn1.to_q`` → ``input_blocks_4_1/transformer_blocks_0/attn1/to_q``) so
that the LDM key map is a handful of regular expressions. 1×1 convolutions (``proj_in``/``proj_out`` without
``use_linear``, ResBlock skips, ControlNet zero convs) are ``Dense`` layers over channels.

The block structure is computed once, as plain data, by :func:`encoder_layout`, :func:`middle_layout` and
:func:`decoder_layout`; the UNet and the ControlNets (``jaxir.models.controlnet``) build their encoder half from
the same layout through :func:`embed`, :func:`encode` and :func:`middle`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxir.errors import JaxirInputError
from jaxir.layers import attention, conv, gelu_exact, group_norm, timestep_embedding, upsample_nearest2x


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """``openaimodel.UNetModel`` arguments, named as there (see :meth:`from_ldm` for the YAML form).

    ``attention_resolutions`` are downsampling rates (1 = full latent resolution). Heads: with
    ``num_head_channels == -1`` every attention has ``num_heads`` heads, otherwise ``channels // num_head_channels``
    heads of ``num_head_channels``; ``legacy`` then sets the head width to ``channels // heads`` (which only differs
    when the channels do not divide). ``transformer_depth`` is an int or one depth per level; the middle block uses
    the last level's depth (sgm; the same as the int in SD 1.x/2.x). ``adm_in_channels`` enables SDXL's vector
    conditioning ``y`` (``num_classes: sequential``).
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int | tuple[int, ...] = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_heads: int = -1
    num_head_channels: int = 64
    transformer_depth: int | tuple[int, ...] = 1
    context_dim: int = 1024
    use_linear_in_transformer: bool = True
    adm_in_channels: int | None = None
    legacy: bool = False
    norm_groups: int = 32   # GroupNorm groups (LDM's GroupNorm32; diffusers' ``norm_num_groups``)

    def __post_init__(self):
        levels = len(self.channel_mult)
        for name in ("num_res_blocks", "transformer_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) and len(value) != levels:
                raise JaxirInputError(f"UNetConfig.{name} {value} must be an int or have one entry per level "
                                      f"({levels})")
        if (self.num_heads == -1) == (self.num_head_channels == -1):
            raise JaxirInputError("UNetConfig: set exactly one of num_heads and num_head_channels (the other -1)")

    @classmethod
    def sd15(cls) -> UNetConfig:
        """Stable Diffusion 1.x (``v1-inference.yaml``): 8 heads everywhere, 1×1-conv projections."""
        return cls(num_heads=8, num_head_channels=-1, context_dim=768, use_linear_in_transformer=False)

    @classmethod
    def sd21_base(cls) -> UNetConfig:
        """Stable Diffusion 2.x (``v2-inference.yaml``; DiffBIR's ``cldm.yaml`` ``unet_cfg``)."""
        return cls()

    @classmethod
    def sdxl_base(cls) -> UNetConfig:
        """SDXL base 1.0 (generative-models ``configs/inference/sd_xl_base.yaml``). Its ``transformer_depth`` is
        [1, 2, 10]; level 0 has no attention (rate 1 is not in [4, 2]), so its entry is unused; the middle block
        has depth 10."""
        return cls(channel_mult=(1, 2, 4), attention_resolutions=(4, 2), transformer_depth=(1, 2, 10),
                   context_dim=2048, adm_in_channels=2816)

    # Options of openaimodel that released SD/SDXL/DiffBIR/SUPIR configs leave at these values.
    _FIXED = {"dims": 2, "conv_resample": True, "use_scale_shift_norm": False, "resblock_updown": False,
              "use_spatial_transformer": True, "disable_self_attentions": None, "num_attention_blocks": None,
              "disable_middle_self_attn": False, "disable_middle_transformer": False, "n_embed": None,
              "use_new_attention_order": False}
    # Options without effect on inference (or on a spatial-transformer UNet: num_heads_upsample).
    _IGNORED = ("image_size", "use_checkpoint", "use_fp16", "dropout", "num_heads_upsample",
                "spatial_transformer_attn_type")

    @classmethod
    def from_ldm(cls, params: Mapping) -> UNetConfig:
        """From the ``params`` of an LDM/sgm ``UNetModel`` YAML entry (``unet_config.params``,
        ``network_config.params``, DiffBIR's ``unet_cfg``). Unsupported option values are an error. A missing
        ``legacy`` reads as False (sgm has no such option; LDM's default True gives other head widths only where the
        channels do not divide, which no released config has)."""
        params = dict(params)
        if not any(params.get("disable_self_attentions") or ()):  # all False: the same as none
            params.pop("disable_self_attentions", None)
        for key, value in cls._FIXED.items():
            got = params.pop(key, value)
            if got != value:
                raise JaxirInputError(f"UNet option {key}={got!r} is not supported (only {value!r})")
        for key in cls._IGNORED:
            params.pop(key, None)
        num_classes = params.pop("num_classes", None)
        if (num_classes == "sequential") != ("adm_in_channels" in params):
            raise JaxirInputError(f"UNet num_classes={num_classes!r} is not supported; only 'sequential' with "
                                  "adm_in_channels (SDXL) or none")
        context_dim = params.get("context_dim")
        if isinstance(context_dim, Sequence):
            if len(set(context_dim)) != 1:
                raise JaxirInputError(f"UNet context_dim {list(context_dim)} must be one value")
            params["context_dim"] = context_dim[0]
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - fields
        if unknown:
            raise JaxirInputError(f"unknown UNet options {sorted(unknown)}")
        tupled = {k: tuple(v) if isinstance(v, Sequence) else v for k, v in params.items()}
        return cls(**tupled)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def res_blocks_per_level(self) -> tuple[int, ...]:
        n = self.num_res_blocks
        return (n,) * len(self.channel_mult) if isinstance(n, int) else tuple(n)

    @property
    def depth_per_level(self) -> tuple[int, ...]:
        d = self.transformer_depth
        return (d,) * len(self.channel_mult) if isinstance(d, int) else tuple(d)

    def attention(self, channels: int, depth: int) -> Attn:
        """The spatial transformer at ``channels``: heads and head width as openaimodel computes them."""
        if self.num_head_channels == -1:
            heads, head_dim = self.num_heads, channels // self.num_heads
        else:
            heads, head_dim = channels // self.num_head_channels, self.num_head_channels
        if self.legacy:
            head_dim = channels // heads
        return Attn(heads, head_dim, depth, self.norm_groups)


# ---- the block structure as data -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ConvIn:
    out_channels: int


@dataclasses.dataclass(frozen=True)
class Res:
    in_channels: int
    out_channels: int
    norm_groups: int = 32


@dataclasses.dataclass(frozen=True)
class Attn:
    heads: int
    head_dim: int
    depth: int
    norm_groups: int = 32


@dataclasses.dataclass(frozen=True)
class Down:
    channels: int


@dataclasses.dataclass(frozen=True)
class Up:
    channels: int


Block = tuple  # the layers of one ``TimestepEmbedSequential``


def encoder_layout(config: UNetConfig) -> tuple[tuple[Block, ...], tuple[int, ...]]:
    """``input_blocks`` (``conv_in`` first) and the channels of each block's output (``input_block_chans``)."""
    mc = config.model_channels
    blocks, chans = [(ConvIn(mc),)], [mc]
    ch, ds = mc, 1
    last = len(config.channel_mult) - 1
    for level, mult in enumerate(config.channel_mult):
        for _ in range(config.res_blocks_per_level[level]):
            layers = (Res(ch, mult * mc, config.norm_groups),)
            ch = mult * mc
            if ds in config.attention_resolutions:
                layers += (config.attention(ch, config.depth_per_level[level]),)
            blocks.append(layers)
            chans.append(ch)
        if level != last:
            blocks.append((Down(ch),))
            chans.append(ch)
            ds *= 2
    return tuple(blocks), tuple(chans)


def middle_layout(config: UNetConfig) -> Block:
    ch = config.model_channels * config.channel_mult[-1]
    return (Res(ch, ch, config.norm_groups), config.attention(ch, config.depth_per_level[-1]),
            Res(ch, ch, config.norm_groups))


def decoder_layout(config: UNetConfig) -> tuple[Block, ...]:
    """``output_blocks``: each consumes the latest skip feature (concatenated to its input)."""
    _, chans = encoder_layout(config)
    skips = list(chans)
    mc = config.model_channels
    ch = mc * config.channel_mult[-1]
    ds = 2 ** (len(config.channel_mult) - 1)
    blocks = []
    for level in reversed(range(len(config.channel_mult))):
        n = config.res_blocks_per_level[level]
        for i in range(n + 1):
            out = mc * config.channel_mult[level]
            layers = (Res(ch + skips.pop(), out, config.norm_groups),)
            ch = out
            if ds in config.attention_resolutions:
                layers += (config.attention(ch, config.depth_per_level[level]),)
            if level and i == n:
                layers += (Up(ch),)
                ds //= 2
            blocks.append(layers)
    assert not skips and ds == 1, "decoder consumed every skip feature"
    return tuple(blocks)


# ---- layers ------------------------------------------------------------------------------------------------------

class ResBlock(nn.Module):
    """openaimodel ``ResBlock`` (no up/down, no scale-shift): GroupNorm-SiLU-conv, ``+ Linear(SiLU(emb))``,
    GroupNorm-SiLU-(dropout)-conv, plus the input through a 1×1 ``skip_connection`` when the width changes."""

    spec: Res

    @nn.compact
    def __call__(self, x, emb):
        assert x.shape[-1] == self.spec.in_channels, (x.shape, self.spec)
        out = self.spec.out_channels
        groups = self.spec.norm_groups
        h = conv(out, name="in_layers_2")(nn.silu(group_norm(num_groups=groups, name="in_layers_0")(x)))
        h = h + nn.Dense(out, name="emb_layers_1")(nn.silu(emb))[:, None, None, :]
        h = conv(out, name="out_layers_3")(nn.silu(group_norm(num_groups=groups, name="out_layers_0")(h)))
        skip = x if out == self.spec.in_channels else nn.Dense(out, name="skip_connection")(x)
        return skip + h


class CrossAttention(nn.Module):
    """``attention.CrossAttention``: bias-free q/k/v projections, softmax(q·kᵀ/√d)·v per head, ``to_out.0``."""

    heads: int
    head_dim: int

    @nn.compact
    def __call__(self, x, context):
        inner = self.heads * self.head_dim
        q = nn.Dense(inner, use_bias=False, name="to_q")(x)
        k = nn.Dense(inner, use_bias=False, name="to_k")(context)
        v = nn.Dense(inner, use_bias=False, name="to_v")(context)
        return nn.Dense(x.shape[-1], name="to_out_0")(attention(q, k, v, self.heads))


class GEGLU(nn.Module):
    """``attention.GEGLU``: ``proj`` to twice the width, first half times exact-GELU of the second."""

    features: int

    @nn.compact
    def __call__(self, x):
        h, gate = jnp.split(nn.Dense(2 * self.features, name="proj")(x), 2, axis=-1)
        return h * gelu_exact(gate)


class FeedForward(nn.Module):
    """``attention.FeedForward(dim, glu=True)``: ``net.0`` GEGLU to 4·dim, (dropout), ``net.2`` back to dim."""

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        return nn.Dense(dim, name="net_2")(GEGLU(4 * dim, name="net_0")(x))


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)


class BasicTransformerBlock(nn.Module):
    """``attention.BasicTransformerBlock``: pre-LayerNorm self-attention, cross-attention, GEGLU feed-forward."""

    heads: int
    head_dim: int

    @nn.compact
    def __call__(self, x, context):
        h = _layer_norm("norm1")(x)
        x = x + CrossAttention(self.heads, self.head_dim, name="attn1")(h, h)
        x = x + CrossAttention(self.heads, self.head_dim, name="attn2")(_layer_norm("norm2")(x), context)
        return x + FeedForward(name="ff")(_layer_norm("norm3")(x))


class SpatialTransformer(nn.Module):
    """``attention.SpatialTransformer``: GroupNorm(``norm_groups``, eps 1e-6), ``proj_in`` (Linear or 1×1 conv — the
    same map over channels), ``depth`` transformer blocks on the H·W tokens, ``proj_out``, plus the input."""

    spec: Attn

    @nn.compact
    def __call__(self, x, context):
        b, hgt, wid, c = x.shape
        inner = self.spec.heads * self.spec.head_dim
        normed = group_norm(1e-6, self.spec.norm_groups, name="norm")(x)
        h = nn.Dense(inner, name="proj_in")(normed.reshape(b, hgt * wid, c))
        for k in range(self.spec.depth):
            h = BasicTransformerBlock(self.spec.heads, self.spec.head_dim, name=f"transformer_blocks_{k}")(h, context)
        return x + nn.Dense(c, name="proj_out")(h).reshape(b, hgt, wid, c)


class Downsample(nn.Module):
    """``Downsample(use_conv=True)``: 3×3 conv, stride 2, padding 1."""

    spec: Down

    @nn.compact
    def __call__(self, x):
        return conv(self.spec.channels, stride=2, name="op")(x)


class Upsample(nn.Module):
    """``Upsample(use_conv=True)``: nearest ×2, then 3×3 conv."""

    spec: Up

    @nn.compact
    def __call__(self, x):
        return conv(self.spec.channels, name="conv")(upsample_nearest2x(x))


# ---- shared builders (called inside a compact ``__call__``; they create the named submodules there) -------------

def run_block(block: Block, name: str, h, emb, context):
    """One ``TimestepEmbedSequential``: its layers are named ``{name}_{j}``."""
    for j, spec in enumerate(block):
        layer_name = f"{name}_{j}"
        if isinstance(spec, ConvIn):
            h = conv(spec.out_channels, name=layer_name)(h)
        elif isinstance(spec, Res):
            h = ResBlock(spec, name=layer_name)(h, emb)
        elif isinstance(spec, Attn):
            h = SpatialTransformer(spec, name=layer_name)(h, context)
        elif isinstance(spec, Down):
            h = Downsample(spec, name=layer_name)(h)
        else:
            h = Upsample(spec, name=layer_name)(h)
    return h


def embed(config: UNetConfig, timesteps, y, batch: int):
    """``time_embed(timestep_embedding(t, model_channels))`` (+ ``label_emb(y)`` with ``adm_in_channels``)."""
    if (y is None) != (config.adm_in_channels is None):
        raise JaxirInputError("pass y exactly when the UNet has adm_in_channels "
                              f"(adm_in_channels={config.adm_in_channels})")
    dim = config.time_embed_dim
    t = jnp.broadcast_to(jnp.asarray(timesteps), (batch,))
    emb = nn.Dense(dim, name="time_embed_0")(timestep_embedding(t, config.model_channels))
    emb = nn.Dense(dim, name="time_embed_2")(nn.silu(emb))
    if y is not None:
        if y.shape != (batch, config.adm_in_channels):
            raise JaxirInputError(f"y must be ({batch}, {config.adm_in_channels}); got {y.shape}")
        emb = emb + nn.Dense(dim, name="label_emb_0_2")(nn.silu(nn.Dense(dim, name="label_emb_0_0")(y)))
    return emb


def encode(config: UNetConfig, x, emb, context, added_after_first=None) -> list:
    """The ``input_blocks``; returns every block's output (the skip features, the last one feeds the middle).
    ``added_after_first`` is added to the output of ``input_blocks.0`` (the ControlNet hint)."""
    blocks, chans = encoder_layout(config)
    h, features = x, []
    for i, block in enumerate(blocks):
        h = run_block(block, f"input_blocks_{i}", h, emb, context)
        if i == 0 and added_after_first is not None:
            h = h + added_after_first
        assert h.shape[-1] == chans[i], (h.shape, chans[i])
        features.append(h)
    return features


def middle(config: UNetConfig, h, emb, context):
    return run_block(middle_layout(config), "middle_block", h, emb, context)


def check_inputs(config: UNetConfig, x, context):
    """``x`` (B, H, W, in_channels) with H, W divisible by the total downsampling; ``context`` (B, T, context_dim)."""
    factor = 2 ** (len(config.channel_mult) - 1)
    if x.ndim != 4 or x.shape[-1] != config.in_channels or x.shape[1] % factor or x.shape[2] % factor:
        raise JaxirInputError(f"UNet input must be (B, H, W, {config.in_channels}) with H and W multiples of "
                              f"{factor}; got {x.shape}")
    if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != config.context_dim:
        raise JaxirInputError(f"context must be ({x.shape[0]}, T, {config.context_dim}); got {context.shape}")


class UNetModel(nn.Module):
    """The LDM UNet (ε/v prediction network). ``x`` (B, H, W, in_channels) NHWC, ``timesteps`` (B,) or scalar,
    ``context`` (B, T, context_dim), ``y`` (B, adm_in_channels) for SDXL.

    ``control``: the ControlNet outputs in ControlNet order (one per input block, then the middle block), already
    scaled. As in ``ControlledUnetModel``: the last is added to the middle-block output, and each output block's
    skip feature gets the control of the same input block (``hs.pop() + control.pop()``) unless
    ``only_mid_control``.
    """

    config: UNetConfig

    @nn.compact
    def __call__(self, x, timesteps, context, y=None, control: Sequence | None = None, only_mid_control=False):
        config = self.config
        check_inputs(config, x, context)
        emb = embed(config, timesteps, y, x.shape[0])
        skips = encode(config, x, emb, context)
        h = middle(config, skips[-1], emb, context)
        if control is not None:
            control = list(control)
            if len(control) != len(skips) + 1:
                raise JaxirInputError(f"control must hold {len(skips) + 1} features, got {len(control)}")
            h = h + control.pop()
        for i, block in enumerate(decoder_layout(config)):
            skip = skips.pop()
            if control is not None and not only_mid_control:
                skip = skip + control.pop()
            h = run_block(block, f"output_blocks_{i}", jnp.concatenate([h, skip], axis=-1), emb, context)
        h = nn.silu(group_norm(num_groups=config.norm_groups, name="out_0")(h))
        return conv(config.out_channels, name="out_2")(h)


def example_inputs(config: UNetConfig, batch: int = 1) -> dict:
    """Smallest valid inputs (as ShapeDtypeStructs), e.g. for :func:`param_shapes`."""
    side = 2 ** (len(config.channel_mult) - 1)
    f32 = jnp.float32
    inputs = dict(x=jax.ShapeDtypeStruct((batch, side, side, config.in_channels), f32),
                  timesteps=jax.ShapeDtypeStruct((batch,), f32),
                  context=jax.ShapeDtypeStruct((batch, 1, config.context_dim), f32))
    if config.adm_in_channels is not None:
        inputs["y"] = jax.ShapeDtypeStruct((batch, config.adm_in_channels), f32)
    return inputs


def param_shapes(config: UNetConfig):
    """The UNet's parameter tree as ShapeDtypeStructs (``jax.eval_shape``, nothing allocated)."""
    model = UNetModel(config)
    return jax.eval_shape(lambda kw: model.init(jax.random.key(0), **kw), example_inputs(config))["params"]
