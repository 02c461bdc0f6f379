"""SwinIR (Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCVW 2021), NHWC.

Follows ``models/network_swinir.py`` of JingyunLiang/SwinIR and its copy in DiffBIR (``diffbir/model/swinir.py``,
which adds ``PixelUnshuffle`` before the first convolution and an ×8 ``nearest+conv`` upsampler):

* shallow features: ``conv_first`` (3×3) on ``(x − mean) · img_range``; ``mean`` is (0.4488, 0.4371, 0.4040) for
  RGB and 0 for other channel counts. DiffBIR's variant first applies ``PixelUnshuffle(unshuffle_scale)``.
* deep features: ``LayerNorm`` (``patch_embed.norm``), residual Swin Transformer blocks (RSTB: Swin layers, a
  convolution, a residual), a final ``LayerNorm`` and ``conv_after_body``, added to the shallow features.
* Swin layer (Liu et al. 2021, eq. 3): ``x + W-MSA(LN(x))`` then ``x + MLP(LN(x))`` (exact GELU). Window
  attention is ``softmax(q kᵀ / √d + B + M) v`` with the relative position bias ``B`` looked up from a learned
  ``(2w−1)²×heads`` table; odd layers roll the map by ``−w/2`` first and mask (``M = −100``) pairs of tokens that
  come from different regions of the un-rolled map. The mask is built for the actual (padded) input size.
* reconstruction: ``pixelshuffle`` (classical SR: conv, LeakyReLU(0.01), [conv, PixelShuffle(2)]·log₂s or
  [conv, PixelShuffle(3)], conv), ``nearest+conv`` (real-world SR: conv, LeakyReLU(0.01), then per ×2 stage a
  nearest ×2 upsampling and a conv with LeakyReLU(0.2), then ``conv_hr``, LeakyReLU(0.2), ``conv_last``) or ``""``
  (denoising/JPEG: ``x + conv_last(features)``); the output is ``y / img_range + mean``.

The input is reflect-padded at the bottom/right to a multiple of ``window_size`` (``check_image_size``) and the
output cropped back. With unshuffling the multiple is ``window_size · unshuffle_scale`` (the original pads to
``window_size`` only and then fails unless that already gives a multiple of both; where it works the two rules pad
identically), and the output is cropped to ``input size · output_scale`` (the original's crop, ``H · sf``, keeps
the padding).

Flax names follow the PyTorch keys with ``residual_group`` dropped and ``Sequential`` indices joined by ``_``:
``layers.0.residual_group.blocks.1.attn.qkv.weight`` ↔ ``layers_0/blocks_1/attn/qkv/kernel``,
``conv_after_body.2.weight`` ↔ ``conv_after_body/conv_2/kernel``, ``upsample.2.weight`` ↔ ``upsample_2/kernel``.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError
from jaxir.layers import conv, gelu_exact

RGB_MEAN = (0.4488, 0.4371, 0.4040)   # DIV2K mean used by SwinIR for 3-channel models
NUM_FEAT = 64                        # channels of the reconstruction head (fixed in the original)
LAYER_NORM_EPS = 1e-5                # torch.nn.LayerNorm default
MASK_VALUE = -100.0                  # the original's additive mask for token pairs from different regions
UPSAMPLERS = ("pixelshuffle", "nearest+conv", "")
PRESETS = ("classical_x2", "classical_x4", "realsr_m_x4", "realsr_l_x4", "diffbir_v1")   # SwinIRConfig constructors
RESI_CONNECTIONS = ("1conv", "3conv")


@dataclasses.dataclass(frozen=True)
class SwinIRConfig:
    """The original constructor's arguments that change the network (DiffBIR's ``sf`` is ``upscale``).

    ``img_size // patch_size`` is the nominal token-grid side; it only matters when it is no larger than
    ``window_size``: the original then uses that side as the attention window and does not shift.
    ``unshuffle_scale > 1`` is DiffBIR's ``PixelUnshuffle`` before ``conv_first`` (``in_chans · scale²`` inputs);
    the image is then restored at ``upscale / unshuffle_scale`` times its size.
    """

    img_size: int = 64
    patch_size: int = 1
    in_chans: int = 3
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    upscale: int = 4
    img_range: float = 1.0
    upsampler: str = "pixelshuffle"
    resi_connection: str = "1conv"
    patch_norm: bool = True
    unshuffle_scale: int = 1

    def __post_init__(self):
        problems = []
        if len(self.depths) != len(self.num_heads):
            problems.append(f"depths {self.depths} and num_heads {self.num_heads} differ in length")
        if any(self.embed_dim % h for h in self.num_heads):
            problems.append(f"embed_dim {self.embed_dim} is not divisible by every num_heads {self.num_heads}")
        if self.upsampler not in UPSAMPLERS:
            problems.append(f"upsampler {self.upsampler!r} is not one of {UPSAMPLERS}")
        elif self.upsampler == "pixelshuffle" and not (self.upscale == 3 or _is_power_of_two(self.upscale)):
            problems.append(f"pixelshuffle needs upscale 2^n or 3, got {self.upscale}")
        elif self.upsampler == "nearest+conv" and self.upscale not in (2, 4, 8):
            problems.append(f"nearest+conv needs upscale 2, 4 or 8, got {self.upscale}")
        elif self.upsampler == "" and self.upscale != 1:
            problems.append(f"upsampler '' restores at scale 1, got upscale {self.upscale}")
        if self.resi_connection not in RESI_CONNECTIONS:
            problems.append(f"resi_connection {self.resi_connection!r} is not one of {RESI_CONNECTIONS}")
        if self.unshuffle_scale < 1 or self.upscale % self.unshuffle_scale:
            problems.append(f"unshuffle_scale {self.unshuffle_scale} must be >= 1 and divide upscale {self.upscale}")
        if problems:
            raise JaxirInputError("SwinIRConfig: " + "; ".join(problems))

    @classmethod
    def classical_x2(cls) -> SwinIRConfig:
        """``001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth``: SwinIR-M, pixelshuffle ×2."""
        return cls(upscale=2, upsampler="pixelshuffle")

    @classmethod
    def classical_x4(cls) -> SwinIRConfig:
        """``001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth``: SwinIR-M, pixelshuffle ×4."""
        return cls(upscale=4, upsampler="pixelshuffle")

    @classmethod
    def realsr_m_x4(cls) -> SwinIRConfig:
        """``003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth``: SwinIR-M, nearest+conv ×4."""
        return cls(upscale=4, upsampler="nearest+conv")

    @classmethod
    def realsr_l_x4(cls) -> SwinIRConfig:
        """``003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth``: SwinIR-L (embed 240, 9 groups of 6 layers,
        8 heads), nearest+conv ×4, ``3conv`` residual connections."""
        return cls(embed_dim=240, depths=(6,) * 9, num_heads=(8,) * 9, upscale=4, upsampler="nearest+conv",
                   resi_connection="3conv")

    @classmethod
    def diffbir_v1(cls) -> SwinIRConfig:
        """DiffBIR's stage-1 SwinIR (``configs/inference/swinir.yaml``; ``general_swinir_v1.ckpt``): PixelUnshuffle(8),
        8 groups of 6 layers, embed 180, 6 heads, nearest+conv ×8: output at the input's size."""
        return cls(depths=(6,) * 8, num_heads=(6,) * 8, upscale=8, upsampler="nearest+conv", unshuffle_scale=8)

    @property
    def output_scale(self) -> int:
        """Output side / input side."""
        return self.upscale // self.unshuffle_scale

    @property
    def pad_multiple(self) -> int:
        """The input is reflect-padded to a multiple of this (``check_image_size``; see the module docstring)."""
        return self.window_size * self.unshuffle_scale

    @property
    def attention_window(self) -> int:
        """The window of every Swin layer: ``window_size``, or the token-grid side when that is not larger."""
        return min(self.window_size, self.img_size // self.patch_size)

    @property
    def shift_size(self) -> int:
        """Roll of the odd Swin layers: ``window_size // 2``, or 0 when the window is the whole token grid."""
        return 0 if self.img_size // self.patch_size <= self.window_size else self.window_size // 2


def preset(name: str) -> SwinIRConfig:
    """The config of a named preset (one of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise JaxirInputError(f"unknown SwinIR preset {name!r}; known: {', '.join(PRESETS)}")
    return getattr(SwinIRConfig, name)()


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def relative_position_index(window: int) -> np.ndarray:
    """(w², w²) index into the bias table: ``(Δrow + w − 1)·(2w − 1) + (Δcol + w − 1)`` for each token pair."""
    rows, cols = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()])                   # (2, w²)
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)    # (2, w², w²), each in [0, 2w − 2]
    return delta[0] * (2 * window - 1) + delta[1]


def window_partition(x, window: int):
    """(B, H, W, C) → (B · H/w · W/w, w², C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows, window: int, height: int, width: int):
    """Inverse of :func:`window_partition`: (B · nW, w², C) → (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """(nW, w², w²) additive mask of shifted-window attention (``calculate_mask``): the map is cut into 3×3 regions
    at ``−window`` and ``−shift`` along each axis; token pairs from different regions get −100, others 0."""
    def region(n):
        labels = np.zeros(n, np.int64)
        labels[n - window:n - shift] = 1
        labels[n - shift:] = 2
        return labels

    labels = (region(height)[:, None] * 3 + region(width)[None, :]).astype(np.float32)
    windows = np.asarray(window_partition(labels[None, :, :, None], window))[..., 0]   # (nW, w²)
    differ = windows[:, None, :] != windows[:, :, None]
    return np.where(differ, MASK_VALUE, 0.0).astype(np.float32)


def layer_norm(name: str) -> nn.LayerNorm:
    """``torch.nn.LayerNorm(C)``: eps 1e-5, two-pass variance."""
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_fast_variance=False, name=name)


def leaky_relu(x, slope: float):
    return jnp.where(x >= 0, x, slope * x)


def pixel_shuffle(x, r: int):
    """``torch.nn.PixelShuffle(r)`` on NHWC: channel ``c·r² + i·r + j`` → pixel offset (i, j) of channel c."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, c // (r * r), r, r).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * r, w * r, c // (r * r))


def pixel_unshuffle(x, r: int):
    """``torch.nn.PixelUnshuffle(r)`` on NHWC, the inverse of :func:`pixel_shuffle`."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // r, r, w // r, r, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(b, h // r, w // r, c * r * r)


def upsample_nearest(x, factor: int = 2):
    """``F.interpolate(x, scale_factor=factor, mode="nearest")`` on NHWC."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class WindowAttention(nn.Module):
    """W-MSA over (windows, w², C) tokens with the relative position bias and an optional (nW, w², w²) mask."""

    heads: int
    window: int

    @nn.compact
    def __call__(self, x, mask=None):
        nb, n, c = x.shape
        d = c // self.heads
        table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                           ((2 * self.window - 1) ** 2, self.heads))
        qkv = nn.Dense(3 * c, name="qkv")(x).reshape(nb, n, 3, self.heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]                    # (nb, n, heads, d)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q * d ** -0.5, k)
        bias = table[relative_position_index(self.window).reshape(-1)].reshape(n, n, self.heads)
        logits = logits + bias.transpose(2, 0, 1)[None]
        if mask is not None:
            windows = mask.shape[0]
            logits = logits.reshape(nb // windows, windows, self.heads, n, n) + mask[None, :, None]
            logits = logits.reshape(nb, self.heads, n, n)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v).reshape(nb, n, c)
        return nn.Dense(c, name="proj")(out)


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with the exact GELU."""

    hidden: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(x.shape[-1], name="fc2")(gelu_exact(nn.Dense(self.hidden, name="fc1")(x)))


class SwinLayer(nn.Module):
    """``SwinTransformerBlock`` on an NHWC map: (shifted) window attention, then the MLP, both residual."""

    heads: int
    window: int
    shift: int
    mlp_ratio: float

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        y = layer_norm("norm1")(x)
        if self.shift:
            y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
        mask = jnp.asarray(shifted_window_mask(h, w, self.window, self.shift)) if self.shift else None
        y = WindowAttention(self.heads, self.window, name="attn")(window_partition(y, self.window), mask)
        y = window_reverse(y, self.window, h, w)
        if self.shift:
            y = jnp.roll(y, (self.shift, self.shift), axis=(1, 2))
        x = x + y
        return x + Mlp(int(c * self.mlp_ratio), name="mlp")(layer_norm("norm2")(x))


class ResidualConv(nn.Module):
    """The convolution closing an RSTB and the body: ``1conv`` (3×3) or ``3conv`` (3×3 to C/4, LeakyReLU(0.2),
    1×1, LeakyReLU(0.2), 3×3 back to C; named by their ``Sequential`` indices 0, 2, 4)."""

    kind: str

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        if self.kind == "1conv":
            return conv(c, name="conv")(x)
        x = leaky_relu(conv(c // 4, name="conv_0")(x), 0.2)
        x = leaky_relu(conv(c // 4, kernel=1, name="conv_2")(x), 0.2)
        return conv(c, name="conv_4")(x)


class RSTB(nn.Module):
    """Residual Swin Transformer Block: ``x + conv(SwinLayers(x))``, even layers unshifted, odd ones shifted."""

    config: SwinIRConfig
    depth: int
    heads: int

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        y = x
        for j in range(self.depth):
            y = SwinLayer(self.heads, cfg.attention_window, cfg.shift_size if j % 2 else 0, cfg.mlp_ratio,
                          name=f"blocks_{j}")(y)
        return x + ResidualConv(cfg.resi_connection, name="conv")(y)


class SwinIR(nn.Module):
    """SwinIR: images (N, H, W, in_chans), nominally in [0, 1], → (N, H·s, W·s, in_chans), ``s = output_scale``;
    any H, W (padded inside, see the module docstring); the output is not clamped."""

    config: SwinIRConfig

    def features(self, x):
        """``forward_features`` plus ``conv_after_body`` and the long residual, on shallow features ``x``."""
        cfg = self.config
        y = layer_norm("patch_embed_norm")(x) if cfg.patch_norm else x
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            y = RSTB(cfg, depth, heads, name=f"layers_{i}")(y)
        y = layer_norm("norm")(y)
        return x + ResidualConv(cfg.resi_connection, name="conv_after_body")(y)

    def reconstruct(self, x):
        """The ``pixelshuffle`` / ``nearest+conv`` heads, from deep features to the (normalised) image."""
        cfg = self.config
        x = leaky_relu(conv(NUM_FEAT, name="conv_before_upsample")(x), 0.01)
        if cfg.upsampler == "pixelshuffle":
            stages = [3] if cfg.upscale == 3 else [2] * int(math.log2(cfg.upscale))
            for i, r in enumerate(stages):
                x = pixel_shuffle(conv(r * r * NUM_FEAT, name=f"upsample_{2 * i}")(x), r)
        else:
            for i in range(int(math.log2(cfg.upscale))):
                x = leaky_relu(conv(NUM_FEAT, name=f"conv_up{i + 1}")(upsample_nearest(x)), 0.2)
            x = leaky_relu(conv(NUM_FEAT, name="conv_hr")(x), 0.2)
        return conv(cfg.in_chans, name="conv_last")(x)

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        if x.shape[-1] != cfg.in_chans:
            raise JaxirInputError(f"SwinIR expects {cfg.in_chans} channels, got input of shape {x.shape}")
        height, width = x.shape[1], x.shape[2]
        m = cfg.pad_multiple
        x = jnp.pad(x, ((0, 0), (0, -height % m), (0, -width % m), (0, 0)), mode="reflect")
        mean = jnp.asarray(RGB_MEAN if cfg.in_chans == 3 else (0.0,) * cfg.in_chans, x.dtype)
        x = (x - mean) * cfg.img_range
        shallow = x if cfg.unshuffle_scale == 1 else pixel_unshuffle(x, cfg.unshuffle_scale)
        shallow = conv(cfg.embed_dim, name="conv_first")(shallow)
        deep = self.features(shallow)
        if cfg.upsampler:
            y = self.reconstruct(deep)
        else:
            y = x + conv(cfg.in_chans, name="conv_last")(deep)
        y = y / cfg.img_range + mean
        return y[:, :height * cfg.output_scale, :width * cfg.output_scale]


def param_shapes(config: SwinIRConfig):
    """The parameter tree of :class:`SwinIR` as ShapeDtypeStructs (``jax.eval_shape``, nothing allocated)."""
    side = config.pad_multiple
    x = jax.ShapeDtypeStruct((1, side, side, config.in_chans), jnp.float32)
    return jax.eval_shape(lambda a: SwinIR(config).init(jax.random.key(0), a), x)["params"]
