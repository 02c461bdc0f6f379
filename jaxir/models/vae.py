"""The KL-regularised autoencoder of Latent Diffusion / Stable Diffusion (``AutoencoderKL``), NHWC.

Follows ``ldm/modules/diffusionmodules/model.py`` (CompVis/latent-diffusion; the copy in DiffBIR's
``diffbir/model/vae.py`` is the same network) and ``ldm/modules/distributions/distributions.py``:

* ``ResnetBlock``: ``x + conv2(swish(norm2(conv1(swish(norm1(x))))))``, GroupNorm(32, eps 1e-6), the skip a 1×1
  ``nin_shortcut`` when the channel count changes; no timestep embedding (``temb_ch = 0``), dropout off.
* ``AttnBlock``: single-head self-attention over all positions with 1×1 convolutions ``q``, ``k``, ``v``,
  ``proj_out`` and scale ``C^-1/2``, added to the input.
* ``Downsample``: zero padding (0, 1) at the bottom and right, then a stride-2 3×3 convolution without padding;
  ``Upsample``: nearest ×2, then a 3×3 convolution.
* ``DiagonalGaussianDistribution``: the moments split into ``mean, logvar`` with ``logvar`` clamped to [−30, 20].

Flax submodules carry the LDM names, so a parameter path mirrors the PyTorch key with ``.{i}`` list indices joined
by ``_``: ``encoder.down.0.block.1.conv1.weight`` ↔ ``encoder/down_0/block_1/conv1/kernel``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxir.errors import JaxirInputError
from jaxir.layers import attention, conv, group_norm, upsample_nearest2x

NORM_EPS = 1e-6     # LDM ``Normalize``: GroupNorm(32, C, eps=1e-6)
NORM_GROUPS = 32
LOGVAR_RANGE = (-30.0, 20.0)   # DiagonalGaussianDistribution's clamp


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """LDM ``ddconfig`` plus ``embed_dim`` and the latent ``scale_factor`` (``out_channels`` is LDM's ``out_ch``).

    ``resolution`` is the nominal training size; it only decides which levels get attention blocks: level ``i``
    works at ``resolution / 2^i`` and has an ``AttnBlock`` after every resnet block when that value is in
    ``attn_resolutions``.
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_channels: int = 3
    attn_resolutions: tuple[int, ...] = ()
    resolution: int = 256
    double_z: bool = True
    scale_factor: float = 0.18215
    norm_groups: int = NORM_GROUPS   # LDM fixes 32; jaxir's small autoencoder uses fewer (see small_vae_config)

    def __post_init__(self):
        if not self.double_z:
            raise JaxirInputError("AutoencoderKL needs double_z=True (the encoder predicts mean and log-variance)")

    @classmethod
    def sd(cls) -> VAEConfig:
        """Stable Diffusion 1.x/2.x (``kl-f8``): 8× downsampling to 4 latent channels, scale 0.18215."""
        return cls()

    @classmethod
    def sdxl(cls) -> VAEConfig:
        """SDXL: the SD architecture with scale factor 0.13025."""
        return cls(scale_factor=0.13025)

    @classmethod
    def from_ldm(cls, ddconfig: Mapping, embed_dim: int, scale_factor: float) -> VAEConfig:
        """From an LDM/DiffBIR YAML ``first_stage_config.params`` (``ddconfig``, ``embed_dim``) and the model's
        ``scale_factor`` (DiffBIR: ``latent_scale_factor``). ``dropout`` and the attention implementation
        (``attn_type`` vanilla/xformers/sdp, same maths) are ignored; options that change the network are refused."""
        implemented = {"resamp_with_conv": True, "tanh_out": False, "give_pre_end": False, "use_linear_attn": False}
        for key, value in implemented.items():
            if ddconfig.get(key, value) != value:
                raise JaxirInputError(f"VAE ddconfig: {key}={ddconfig[key]!r} is not supported")
        attn_type = ddconfig.get("attn_type", "vanilla")
        if attn_type not in ("vanilla", "vanilla-xformers", "sdp", "xformers"):
            raise JaxirInputError(f"VAE ddconfig: attn_type={attn_type!r} is not supported")
        return cls(ch=int(ddconfig["ch"]), ch_mult=tuple(int(m) for m in ddconfig["ch_mult"]),
                   num_res_blocks=int(ddconfig["num_res_blocks"]), z_channels=int(ddconfig["z_channels"]),
                   embed_dim=int(embed_dim), in_channels=int(ddconfig["in_channels"]),
                   out_channels=int(ddconfig["out_ch"]),
                   attn_resolutions=tuple(int(r) for r in ddconfig.get("attn_resolutions", ())),
                   resolution=int(ddconfig["resolution"]), double_z=bool(ddconfig.get("double_z", True)),
                   scale_factor=float(scale_factor))

    @property
    def block_channels(self) -> tuple[int, ...]:
        """Output channels of each resolution level, ``ch · ch_mult[i]``."""
        return tuple(self.ch * m for m in self.ch_mult)

    @property
    def downsample_factor(self) -> int:
        """Image side / latent side: ``2^(levels − 1)``."""
        return 2 ** (len(self.ch_mult) - 1)

    def level_has_attention(self, level: int) -> bool:
        """LDM's ``curr_res in attn_resolutions`` for the level at nominal size ``resolution / 2^level``."""
        return self.resolution // 2 ** level in self.attn_resolutions


class ResnetBlock(nn.Module):
    """LDM ``ResnetBlock`` without timestep embedding (``temb_channels=0``) and with dropout off."""

    out_channels: int
    groups: int = NORM_GROUPS

    @nn.compact
    def __call__(self, x):
        h = conv(self.out_channels, name="conv1")(nn.swish(group_norm(NORM_EPS, self.groups, name="norm1")(x)))
        h = conv(self.out_channels, name="conv2")(nn.swish(group_norm(NORM_EPS, self.groups, name="norm2")(h)))
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, kernel=1, name="nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    """LDM ``AttnBlock``: single-head softmax(q kᵀ / √C) v over the H·W positions, 1×1 projections, residual."""

    groups: int = NORM_GROUPS

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        y = group_norm(NORM_EPS, self.groups, name="norm")(x)
        q, k, v = (conv(c, kernel=1, name=n)(y).reshape(b, h * w, c) for n in ("q", "k", "v"))
        y = attention(q, k, v, heads=1).reshape(b, h, w, c)
        return x + conv(c, kernel=1, name="proj_out")(y)


class Downsample(nn.Module):
    """LDM ``Downsample(with_conv=True)``: pad (0, 1) at the bottom/right, stride-2 3×3 conv without padding."""

    @nn.compact
    def __call__(self, x):
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return conv(x.shape[-1], kernel=3, stride=2, padding=0, name="conv")(x)


class Upsample(nn.Module):
    """LDM ``Upsample(with_conv=True)``: nearest-neighbour ×2, then a 3×3 conv."""

    @nn.compact
    def __call__(self, x):
        return conv(x.shape[-1], name="conv")(upsample_nearest2x(x))


RESAMPLERS = {"downsample": Downsample, "upsample": Upsample}


class Level(nn.Module):
    """One resolution level (LDM ``down[i]`` / ``up[i]``): ``block_j`` (each followed by ``attn_j`` when the
    level has attention), then the optional resampler (``downsample`` or ``upsample``)."""

    out_channels: int
    num_blocks: int
    attention: bool
    resample: str | None   # "downsample", "upsample" or None
    groups: int = NORM_GROUPS

    @nn.compact
    def __call__(self, x):
        for j in range(self.num_blocks):
            x = ResnetBlock(self.out_channels, self.groups, name=f"block_{j}")(x)
            if self.attention:
                x = AttnBlock(self.groups, name=f"attn_{j}")(x)
        if self.resample is not None:
            x = RESAMPLERS[self.resample](name=self.resample)(x)
        return x


class Mid(nn.Module):
    """LDM ``mid``: ``block_1``, ``attn_1``, ``block_2`` at constant width."""

    groups: int = NORM_GROUPS

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = ResnetBlock(c, self.groups, name="block_1")(x)
        x = AttnBlock(self.groups, name="attn_1")(x)
        return ResnetBlock(c, self.groups, name="block_2")(x)


class Encoder(nn.Module):
    """LDM ``Encoder``: image (N, H, W, in_channels) → moments (N, H/f, W/f, 2·z_channels), f = 2^(levels−1)."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        levels = len(cfg.ch_mult)
        h = conv(cfg.ch, name="conv_in")(x)
        for i, channels in enumerate(cfg.block_channels):
            h = Level(channels, cfg.num_res_blocks, cfg.level_has_attention(i),
                      "downsample" if i != levels - 1 else None, cfg.norm_groups, name=f"down_{i}")(h)
        h = Mid(cfg.norm_groups, name="mid")(h)
        h = nn.swish(group_norm(NORM_EPS, cfg.norm_groups, name="norm_out")(h))
        return conv(2 * cfg.z_channels, name="conv_out")(h)


class Decoder(nn.Module):
    """LDM ``Decoder``: latent (N, h, w, z_channels) → image (N, f·h, f·w, out_channels), no tanh.

    Levels run from the deepest (``up_{L−1}``) to ``up_0``, each with ``num_res_blocks + 1`` resnet blocks and an
    upsampler on all but ``up_0``."""

    config: VAEConfig

    @nn.compact
    def __call__(self, z):
        cfg = self.config
        h = conv(cfg.block_channels[-1], name="conv_in")(z)
        h = Mid(cfg.norm_groups, name="mid")(h)
        for i in reversed(range(len(cfg.ch_mult))):
            h = Level(cfg.block_channels[i], cfg.num_res_blocks + 1, cfg.level_has_attention(i),
                      "upsample" if i != 0 else None, cfg.norm_groups, name=f"up_{i}")(h)
        h = nn.swish(group_norm(NORM_EPS, cfg.norm_groups, name="norm_out")(h))
        return conv(cfg.out_channels, name="conv_out")(h)


class AutoencoderKL(nn.Module):
    """LDM ``AutoencoderKL`` with the latent scaling of Stable Diffusion / DiffBIR (``ControlLDM.vae_encode`` /
    ``vae_decode``).

    Ranges: :meth:`encode` takes images in [−1, 1]; :meth:`encode_latent` (and ``__call__``) take images in [0, 1]
    and map them by ``2x − 1`` first, as DiffBIR's ``prepare_condition`` does; :meth:`decode` takes a *scaled*
    latent and returns the decoder output, nominally in [−1, 1] but not clamped.
    """

    config: VAEConfig

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = conv(2 * cfg.embed_dim, kernel=1)
        self.post_quant_conv = conv(cfg.z_channels, kernel=1)

    def encode(self, x):
        """Posterior moments ``(mean, logvar)`` of images ``x`` in [−1, 1]: ``quant_conv(encoder(x))`` split in two
        along channels, ``logvar`` clamped to [−30, 20] (``DiagonalGaussianDistribution``)."""
        mean, logvar = jnp.split(self.quant_conv(self.encoder(x)), 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def encode_latent(self, x, key: jax.Array | None = None, sample: bool = False):
        """``scale_factor · mode(E(2x − 1))`` for images ``x`` in [0, 1] (the mode is the mean); with
        ``sample=True``, ``scale_factor · (mean + exp(logvar / 2) · ε)``, ``ε = jax.random.normal(key)``."""
        mean, logvar = self.encode(2.0 * x - 1.0)
        if sample:
            if key is None:
                raise ValueError("encode_latent(sample=True) needs a PRNG key")
            mean = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
        return self.config.scale_factor * mean

    def decode(self, z):
        """``decoder(post_quant_conv(z / scale_factor))`` for a scaled latent ``z``: images in [−1, 1], unclamped."""
        return self.decoder(self.post_quant_conv(z / self.config.scale_factor))

    def __call__(self, x):
        """Reconstruction ``decode(encode_latent(x))`` of images in [0, 1], returned in [−1, 1] (LDM's
        ``forward(sample_posterior=False)``); also what ``init`` traces to create every parameter."""
        return self.decode(self.encode_latent(x))


def param_shapes(config: VAEConfig):
    """The parameter tree of :class:`AutoencoderKL` as ShapeDtypeStructs (``jax.eval_shape``, nothing allocated)."""
    side = config.downsample_factor
    x = jax.ShapeDtypeStruct((1, side, side, config.in_channels), jnp.float32)
    return jax.eval_shape(lambda a: AutoencoderKL(config).init(jax.random.key(0), a), x)["params"]
