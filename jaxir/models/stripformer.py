"""Stripformer (Tsai et al., "Stripformer: Strip Transformer for Fast Image Deblurring", ECCV 2022), NHWC.

Follows ``models/Stripformer.py`` of pp00704831/Stripformer-ECCV-2022-:

* ``Embeddings`` (the encoder): a 3×3 conv + LeakyReLU(0.2) at full resolution, then residual pairs
  ``act(conv(act(conv(h))) + h)``; a stride-2 3×3 conv + LeakyReLU to 1/2 resolution and more residual pairs; a
  stride-2 conv + LeakyReLU to 1/4 resolution. The outputs of the first two levels are the skip features.
* Twelve transformer blocks at 1/4 resolution, alternating ``Intra_SA`` and ``Inter_SA`` (paper Sec. 3.2, 3.3).
  Both normalise with LayerNorm (eps 1e-5), project with a 1×1 conv and split the channels in two halves: the first
  half attends along rows (horizontal strips), the second along columns (vertical strips); the concatenated results
  go through a 1×1 ``fuse_out`` conv and are added to the block input; then ``x + MLP(LayerNorm(x))`` (GELU,
  hidden width 4C) and the conditional positional encoding ``PEG``: ``x + depthwise3×3(x)``.

  - Intra-strip: every row (column) is a sequence of W (H) pixel tokens of C/2 features; ``heads`` heads of width
    C/(2·heads), scale 1/√width; q, k, v from a ``Linear`` (``qkv_local_h`` / ``qkv_local_v``).
  - Inter-strip: every row (column) is *one* token whose features are the C/2 channels × W (H) pixels flattened
    channel-major, so the H rows (W columns) attend to each other; the ``heads`` heads are contiguous groups of
    C/(2·heads) channels over the whole strip, scale 1/√(C/(2·heads)·W) (resp. ·H); q, k, v from a 1×1 conv
    (``conv_h`` / ``conv_v``).

  The original batches the two directions together when H = W; that is the same computation.
* ``Embeddings_output`` (the decoder): a 4×4 stride-2 transposed conv + LeakyReLU to 1/2 resolution, concatenation
  with the 1/2-resolution skip, a 1×1 conv + LeakyReLU, six more Intra/Inter blocks (192 channels, 3 heads), a
  transposed conv + LeakyReLU to full resolution, concatenation with the full-resolution skip into a residual pair
  (1×1 conv, act, 3×3 conv, added to the upsampled features, act), another residual pair, and a 3×3 conv to RGB
  *followed by a LeakyReLU*. The network output is that plus the input (a global residual).

The network maps ``RGB − 0.5`` to the deblurred ``RGB − 0.5`` (``predict_GoPro_test_results.py``); the restorer in
:mod:`jaxir.restorers.stripformer` applies that convention. Height and width must be multiples of 4: the two
stride-2 convs round up and the transposed convs double exactly, so other sizes break the skip concatenations (the
original fails the same way).

Flax names mirror the PyTorch keys: a ``Sequential`` index joins its layer name with ``_``
(``encoder.en_layer1_2.2.weight`` ↔ ``encoder/en_layer1_2_2/kernel``), every other ``.`` becomes ``/``
(``Trans_block_3.ffn.fc1.weight`` ↔ ``Trans_block_3/ffn/fc1/kernel``). The 1×1 convs are ``Dense`` layers over the
channel axis (the same maths).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxir.batches import pad_to_multiple
from jaxir.errors import JaxirInputError
from jaxir.layers import attention, conv, gelu_exact

SIZE_MULTIPLE = 4   # two stride-2 levels
INPUT_OFFSET = 0.5  # the network sees RGB − 0.5 (predict_GoPro_test_results.py)


@dataclasses.dataclass(frozen=True)
class StripformerConfig:
    """Sizes of the network; the defaults are the released GoPro model (``Stripformer()`` has no arguments).

    channels: widths at full, 1/2 and 1/4 resolution (the last is the encoder transformer width).
    residual_pairs: residual conv pairs per encoder level (``en_layer{1,2}_2`` … ``_4``).
    encoder_pairs / decoder_pairs: Intra_SA + Inter_SA pairs in the bottleneck / in the decoder.
    """

    in_channels: int = 3
    channels: tuple[int, int, int] = (64, 128, 320)
    residual_pairs: int = 3
    encoder_heads: int = 5
    encoder_pairs: int = 6
    decoder_channels: int = 192
    decoder_heads: int = 3
    decoder_pairs: int = 3
    mlp_ratio: int = 4
    leaky_slope: float = 0.2
    norm_eps: float = 1e-5

    def __post_init__(self):
        if len(self.channels) != 3:
            raise JaxirInputError(f"Stripformer has three resolution levels; got channels={self.channels}")
        for width, heads in ((self.channels[2], self.encoder_heads), (self.decoder_channels, self.decoder_heads)):
            if width % (2 * heads):
                raise JaxirInputError(f"Stripformer: width {width} must split into two halves of {heads} heads")

    @classmethod
    def gopro(cls) -> StripformerConfig:
        """The released ``Stripformer_gopro.pth`` (also the RealBlur-J/-R weights: same architecture)."""
        return cls()


def _leaky(x, config: StripformerConfig):
    return nn.leaky_relu(x, config.leaky_slope)


class ConvTranspose2x(nn.Module):
    """``torch.nn.ConvTranspose2d(I, O, kernel_size=4, stride=2, padding=1)``: exactly doubles H and W.

    ``kernel`` has the layout of the forward conv it transposes, (4, 4, O, I), i.e. the PyTorch weight (I, O, 4, 4)
    with axes (2, 3, 1, 0); the transposed conv is that conv's input-gradient: dilate the input by 2, pad by
    ``4 − 1 − 1 = 2`` and correlate with the spatially flipped kernel (``lax.conv_transpose(transpose_kernel)``)."""

    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (4, 4, self.features, x.shape[-1]))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jax.lax.conv_transpose(x, kernel, strides=(2, 2), padding=((2, 2), (2, 2)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
        return y + bias


class Mlp(nn.Module):
    """``Mlp``: ``fc2(gelu(fc1(x)))`` with hidden width ``ratio · C`` and exact GELU."""

    ratio: int

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        return nn.Dense(c, name="fc2")(gelu_exact(nn.Dense(self.ratio * c, name="fc1")(x)))


class PEG(nn.Module):
    """Conditional positional encoding ``PEG``: ``x + depthwise3×3(x)`` (the conv is named ``PEG`` as well)."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        return x + nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=c, name="PEG")(x)


def _layer_norm(config: StripformerConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.norm_eps, use_fast_variance=False, name=name)


class IntraStripBlock(nn.Module):
    """``Intra_SA``: attention among the pixels of each row (first channel half) and of each column (second)."""

    config: StripformerConfig
    heads: int

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        half = c // 2
        y = nn.Dense(c, name="conv_input")(_layer_norm(self.config, "attention_norm")(x))
        rows, cols = jnp.split(y, 2, axis=-1)
        q, k, v = jnp.split(nn.Dense(3 * half, name="qkv_local_h")(rows.reshape(b * h, w, half)), 3, axis=-1)
        out_rows = attention(q, k, v, self.heads).reshape(b, h, w, half)
        cols = cols.transpose(0, 2, 1, 3).reshape(b * w, h, half)
        q, k, v = jnp.split(nn.Dense(3 * half, name="qkv_local_v")(cols), 3, axis=-1)
        out_cols = attention(q, k, v, self.heads).reshape(b, w, h, half).transpose(0, 2, 1, 3)
        x = x + nn.Dense(c, name="fuse_out")(jnp.concatenate([out_rows, out_cols], axis=-1))
        x = x + Mlp(self.config.mlp_ratio, name="ffn")(_layer_norm(self.config, "ffn_norm")(x))
        return PEG(name="PEG")(x)


class InterStripBlock(nn.Module):
    """``Inter_SA``: attention among whole rows (first channel half) and among whole columns (second), each strip
    one token of (C/2 channels × strip length) features, flattened channel-major as in the original."""

    config: StripformerConfig
    heads: int

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        half = c // 2
        y = nn.Dense(c, name="conv_input")(_layer_norm(self.config, "attention_norm")(x))
        rows, cols = jnp.split(y, 2, axis=-1)
        row_tokens = lambda t: t.transpose(0, 1, 3, 2).reshape(b, h, half * w)  # (B, H, C/2·W)
        q, k, v = map(row_tokens, jnp.split(nn.Dense(3 * half, name="conv_h")(rows), 3, axis=-1))
        out_rows = attention(q, k, v, self.heads).reshape(b, h, half, w).transpose(0, 1, 3, 2)
        col_tokens = lambda t: t.transpose(0, 2, 3, 1).reshape(b, w, half * h)  # (B, W, C/2·H)
        q, k, v = map(col_tokens, jnp.split(nn.Dense(3 * half, name="conv_v")(cols), 3, axis=-1))
        out_cols = attention(q, k, v, self.heads).reshape(b, w, half, h).transpose(0, 3, 1, 2)
        x = x + nn.Dense(c, name="fuse_out")(jnp.concatenate([out_rows, out_cols], axis=-1))
        x = x + Mlp(self.config.mlp_ratio, name="ffn")(_layer_norm(self.config, "ffn_norm")(x))
        return PEG(name="PEG")(x)


def strip_blocks(x, config: StripformerConfig, pairs: int, heads: int, prefix: str):
    """``pairs`` × (Intra_SA, Inter_SA), named ``{prefix}1`` … ``{prefix}{2·pairs}``; call inside a compact module."""
    for i in range(2 * pairs):
        block = IntraStripBlock if i % 2 == 0 else InterStripBlock
        x = block(config, heads, name=f"{prefix}{i + 1}")(x)
    return x


class Encoder(nn.Module):
    """``Embeddings``: image → (1/4-resolution features, full-resolution skip, 1/2-resolution skip)."""

    config: StripformerConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        skips = []
        h = x
        for level, width in enumerate(cfg.channels[:2], start=1):
            stride = 1 if level == 1 else 2
            h = _leaky(conv(width, stride=stride, name=f"en_layer{level}_1_0")(h), cfg)
            for j in range(2, 2 + cfg.residual_pairs):
                y = _leaky(conv(width, name=f"en_layer{level}_{j}_0")(h), cfg)
                h = _leaky(conv(width, name=f"en_layer{level}_{j}_2")(y) + h, cfg)
            skips.append(h)
        h = _leaky(conv(cfg.channels[2], stride=2, name="en_layer3_1_0")(h), cfg)
        return h, skips[0], skips[1]


class Decoder(nn.Module):
    """``Embeddings_output``: 1/4-resolution features and the two skips → RGB residual (before ``+ x``)."""

    config: StripformerConfig

    @nn.compact
    def __call__(self, x, skip_full, skip_half):
        cfg = self.config
        full = cfg.channels[0]
        h = _leaky(ConvTranspose2x(cfg.decoder_channels, name="de_layer3_1_0")(x), cfg)
        h = _leaky(nn.Dense(cfg.decoder_channels, name="de_layer2_2_0")(jnp.concatenate([h, skip_half], -1)), cfg)
        h = strip_blocks(h, cfg, cfg.decoder_pairs, cfg.decoder_heads, "de_block_")
        h = _leaky(ConvTranspose2x(full, name="de_layer2_1_0")(h), cfg)
        y = _leaky(nn.Dense(full, name="de_layer1_3_0")(jnp.concatenate([h, skip_full], -1)), cfg)
        h = _leaky(conv(full, name="de_layer1_3_2")(y) + h, cfg)
        y = _leaky(conv(full, name="de_layer1_2_0")(h), cfg)
        h = _leaky(conv(full, name="de_layer1_2_2")(y) + h, cfg)
        return _leaky(conv(cfg.in_channels, name="de_layer1_1_0")(h), cfg)


class Stripformer(nn.Module):
    """``Stripformer``: (N, H, W, 3) in ``RGB − 0.5`` → deblurred, same range (unclamped); H, W multiples of 4."""

    config: StripformerConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        if x.shape[1] % SIZE_MULTIPLE or x.shape[2] % SIZE_MULTIPLE:
            raise JaxirInputError(f"Stripformer needs height and width that are multiples of {SIZE_MULTIPLE}, got "
                                  f"{x.shape[1]}×{x.shape[2]}; pad first (jaxir.restorers.stripformer does)")
        h, skip_full, skip_half = Encoder(cfg, name="encoder")(x)
        h = strip_blocks(h, cfg, cfg.encoder_pairs, cfg.encoder_heads, "Trans_block_")
        return Decoder(cfg, name="decoder")(h, skip_full, skip_half) + x


class StripformerModel:
    """Stripformer's forward pass as a jitted function of ``(params, x)``; built by ``jaxir.load`` (kind
    ``stripformer``). :meth:`forward` is the network itself (``Stripformer.forward``: RGB − 0.5 in and out, height
    and width multiples of 4); :meth:`deblur` is the GoPro/RealBlur scripts' use of it on images in [0, 1] of any
    size (reflect-pad bottom and right to a multiple of 4, offset, crop back, clamp)."""

    def __init__(self, config: StripformerConfig):
        self.config = config
        self.net = Stripformer(config)
        self._forward = jax.jit(lambda params, x: self.net.apply({"params": params}, x))

    def forward(self, params, x):
        """The deblurred batch, (N, H, W, 3) in ``RGB − 0.5`` → same range, unclamped."""
        return self._forward(params, jnp.asarray(x, jnp.float32))

    def deblur(self, params, images):
        """NHWC images in [0, 1] of any size → deblurred, same size, clamped to [0, 1]."""
        images = jnp.asarray(images, jnp.float32)
        height, width = images.shape[1], images.shape[2]
        padded = pad_to_multiple(images, SIZE_MULTIPLE, mode="reflect")
        out = self.forward(params, padded - INPUT_OFFSET) + INPUT_OFFSET
        return jnp.clip(out[:, :height, :width], 0.0, 1.0)


def param_shapes(config: StripformerConfig):
    """The parameter tree of :class:`Stripformer` as ShapeDtypeStructs (``jax.eval_shape``, nothing allocated)."""
    x = jax.ShapeDtypeStruct((1, SIZE_MULTIPLE, SIZE_MULTIPLE, config.in_channels), jnp.float32)
    return jax.eval_shape(lambda a: Stripformer(config).init(jax.random.key(0), a), x)["params"]
