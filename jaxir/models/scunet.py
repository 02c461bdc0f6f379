"""SCUNet, the Swin-Conv-UNet blind denoiser (Zhang et al., "Practical Blind Denoising via Swin-Conv-UNet and
Data Synthesis", 2022), DiffBIR v2's stage-1 model for blind image denoising, NHWC.

Follows cszn/SCUNet ``models/network_scunet.py`` (DiffBIR copies it as ``diffbir/model/scunet.py``):

* ``WMSA``: multi-head self-attention inside non-overlapping ``window × window`` windows (``head_dim`` 32 per
  head), ``softmax(q kᵀ / √head_dim + B)`` with ``B`` read from a learned relative-position table of shape
  (heads, 2·window − 1, 2·window − 1). The shifted variant (SW) rolls the map by ``−window/2`` first and back
  after, and masks (−∞) query/key pairs that the roll brought together from opposite borders: in the last window
  row (column), positions above (left of) ``window/2`` and those below (right of) it do not see each other.
* ``Block``: ``x + WMSA(LN(x))``, then ``x + MLP(LN(x))`` with a 4× GELU MLP (exact GELU, LayerNorm eps 1e-5).
* ``ConvTransBlock``: a 1×1 conv splits the channels into a conv half (``3×3 → ReLU → 3×3`` plus identity) and a
  Swin half (one ``Block``); their concatenation goes through a second 1×1 conv and is added to the input.
* ``SCUNet``: 3×3 head conv; three levels of ``ConvTransBlock``s each followed by a 2×2 stride-2 conv (channels
  ×2); a body of blocks; three levels of 2×2 stride-2 transposed conv then blocks, each level's input the sum of
  the previous output and the matching encoder output; 3×3 tail conv. Blocks alternate W, SW, W, … per level;
  a level whose nominal size (``input_resolution / 2^level``) is at most the window uses W only.

The input is padded at the bottom/right to a multiple of 64 (``window · 2³``) by edge replication
(``nn.ReplicationPad2d`` in the original forward) and the output cropped back. No clamp: the restorer clamps.

Parameter paths mirror the PyTorch keys with ``nn.Sequential`` indices joined by ``_``:
``m_down1.0.trans_block.msa.embedding_layer.weight`` ↔ ``m_down1_0/trans_block/msa/embedding_layer/kernel``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError
from jaxir.layers import gelu_exact

LEVELS = 3          # down/up-sampling stages
LAYER_NORM_EPS = 1e-5
MLP_RATIO = 4


@dataclasses.dataclass(frozen=True)
class SCUNetConfig:
    """``SCUNet(in_nc, config, dim, input_resolution)``; ``config`` counts the blocks of down1, down2, down3,
    body, up3, up2, up1. ``head_dim`` and ``window_size`` are constants (32, 8) in the original."""

    in_channels: int = 3
    config: tuple[int, ...] = (4, 4, 4, 4, 4, 4, 4)
    dim: int = 64
    head_dim: int = 32
    window_size: int = 8
    input_resolution: int = 256

    def __post_init__(self):
        if len(self.config) != 2 * LEVELS + 1:
            raise JaxirInputError(f"SCUNet config needs {2 * LEVELS + 1} block counts, got {self.config}")
        if self.dim % 2 or (self.dim // 2) % self.head_dim:
            raise JaxirInputError(f"SCUNet dim/2 must be a multiple of head_dim {self.head_dim}, got dim {self.dim}")

    @property
    def size_multiple(self) -> int:
        """Input sides are padded to a multiple of this: the window at the coarsest level, ``window · 2^LEVELS``."""
        return self.window_size * 2 ** LEVELS

    @classmethod
    def scunet_color(cls) -> SCUNetConfig:
        """``scunet_color_real_psnr.pth`` / ``scunet_color_real_gan.pth`` (DiffBIR ``configs/inference/scunet.yaml``):
        3 channels, dim 64, four blocks per stage."""
        return cls()


def shift_mask(windows_h: int, windows_w: int, window: int) -> np.ndarray:
    """(windows_h · windows_w, window², window²) bool, True where SW attention is masked (``generate_mask``)."""
    s = window - window // 2
    region = (np.arange(window) >= s).astype(np.int8)
    row = np.repeat(region, window)      # region of each position (p1, p2) along rows
    col = np.tile(region, window)        # … along columns
    row_split = row[:, None] != row[None, :]
    col_split = col[:, None] != col[None, :]
    last_row = np.arange(windows_h) == windows_h - 1
    last_col = np.arange(windows_w) == windows_w - 1
    mask = (last_row[:, None, None, None] & row_split) | (last_col[None, :, None, None] & col_split)
    return mask.reshape(windows_h * windows_w, window * window, window * window)


def relative_position_index(window: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices into the (2·window − 1)² table for every (query, key) pair of a window."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"), -1).reshape(-1, 2)
    relation = coords[:, None, :] - coords[None, :, :] + window - 1
    return relation[..., 0], relation[..., 1]


class WindowAttention(nn.Module):
    """``WMSA``: (windowed, optionally shifted) multi-head self-attention over a (B, H, W, C) map."""

    dim: int
    head_dim: int
    window: int
    shifted: bool

    @nn.compact
    def __call__(self, x):
        p, heads = self.window, self.dim // self.head_dim
        if self.shifted:
            x = jnp.roll(x, (-(p // 2), -(p // 2)), axis=(1, 2))
        b, h, w, c = x.shape
        nh, nw = h // p, w // p
        windows = x.reshape(b, nh, p, nw, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, nh * nw, p * p, c)
        qkv = nn.Dense(3 * c, name="embedding_layer")(windows).reshape(b, nh * nw, p * p, 3 * heads, self.head_dim)
        q, k, v = qkv[..., :heads, :], qkv[..., heads:2 * heads, :], qkv[..., 2 * heads:, :]
        sim = jnp.einsum("bwphc,bwqhc->bhwpq", q, k) * self.head_dim ** -0.5
        table = self.param("relative_position_params", nn.initializers.truncated_normal(0.02),
                           (heads, 2 * p - 1, 2 * p - 1))
        rows, cols = relative_position_index(p)
        sim = sim + table[:, rows, cols][None, :, None]
        if self.shifted:
            sim = jnp.where(jnp.asarray(shift_mask(nh, nw, p)), -jnp.inf, sim)
        out = jnp.einsum("bhwpq,bwqhc->bwphc", jax.nn.softmax(sim, axis=-1), v).reshape(b, nh * nw, p * p, c)
        out = nn.Dense(self.dim, name="linear")(out)
        out = out.reshape(b, nh, nw, p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shifted:
            out = jnp.roll(out, (p // 2, p // 2), axis=(1, 2))
        return out


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_fast_variance=False, name=name)


class SwinBlock(nn.Module):
    """``Block``: pre-norm window attention and 4× GELU MLP, each residual (drop path off at inference)."""

    dim: int
    head_dim: int
    window: int
    shifted: bool

    @nn.compact
    def __call__(self, x):
        x = x + WindowAttention(self.dim, self.head_dim, self.window, self.shifted, name="msa")(_layer_norm("ln1")(x))
        y = gelu_exact(nn.Dense(MLP_RATIO * self.dim, name="mlp_0")(_layer_norm("ln2")(x)))
        return x + nn.Dense(self.dim, name="mlp_2")(y)


def _conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
    """Bias-free ``Conv2d(…, kernel, stride, padding=kernel // 2 if stride 1 else 0)`` of SCUNet."""
    pad = kernel // 2 if stride == 1 else 0
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=False, name=name)


class ConvTransBlock(nn.Module):
    """Split 1×1 conv → (residual conv pair | Swin block) → merge 1×1 conv, added to the input."""

    conv_dim: int
    trans_dim: int
    head_dim: int
    window: int
    shifted: bool

    @nn.compact
    def __call__(self, x):
        both = self.conv_dim + self.trans_dim
        y = nn.Conv(both, (1, 1), name="conv1_1")(x)
        conv_x, trans_x = y[..., :self.conv_dim], y[..., self.conv_dim:]
        conv_x = conv_x + _conv(self.conv_dim, 3, name="conv_block_2")(
            nn.relu(_conv(self.conv_dim, 3, name="conv_block_0")(conv_x)))
        trans_x = SwinBlock(self.trans_dim, self.head_dim, self.window, self.shifted, name="trans_block")(trans_x)
        return x + nn.Conv(both, (1, 1), name="conv1_2")(jnp.concatenate([conv_x, trans_x], axis=-1))


class ConvTranspose2x2(nn.Module):
    """Bias-free ``ConvTranspose2d(in, out, 2, stride=2)``: every input pixel paints one 2×2 output cell,
    ``y[2i + a, 2j + e] = Σ_c x[i, j, c] · K[a, e, c, :]``; ``kernel`` is (2, 2, in, out)."""

    features: int

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, c, self.features))
        y = jnp.einsum("bijc,aeco->biajeo", x, kernel)
        return y.reshape(b, 2 * h, 2 * w, self.features)


class SCUNet(nn.Module):
    """NHWC image (values in [0, 1]) → NHWC denoised image of the same size, unclamped."""

    config: SCUNetConfig

    def _blocks(self, x, stage: str, count: int, width: int, level: int, first_index: int):
        """``count`` ConvTransBlocks of ``width`` channels (half conv, half Swin), W/SW alternating."""
        cfg = self.config
        window_only = cfg.input_resolution // 2 ** level <= cfg.window_size
        for i in range(count):
            x = ConvTransBlock(width // 2, width // 2, cfg.head_dim, cfg.window_size,
                               shifted=bool(i % 2) and not window_only, name=f"{stage}_{first_index + i}")(x)
        return x

    @nn.compact
    def __call__(self, x0):
        cfg = self.config
        if x0.shape[-1] != cfg.in_channels:
            raise JaxirInputError(f"SCUNet expects {cfg.in_channels} input channels, got {x0.shape[-1]}")
        height, width = x0.shape[1], x0.shape[2]
        m = cfg.size_multiple
        x0 = jnp.pad(x0, ((0, 0), (0, -height % m), (0, -width % m), (0, 0)), mode="edge")
        down_counts, body_count, up_counts = cfg.config[:LEVELS], cfg.config[LEVELS], cfg.config[LEVELS + 1:]

        x = _conv(cfg.dim, 3, name="m_head_0")(x0)
        skips = [x]
        for level, count in enumerate(down_counts):
            stage, channels = f"m_down{level + 1}", cfg.dim * 2 ** level
            x = self._blocks(x, stage, count, channels, level, 0)
            x = _conv(2 * channels, 2, stride=2, name=f"{stage}_{count}")(x)
            skips.append(x)
        x = self._blocks(x, "m_body", body_count, cfg.dim * 2 ** LEVELS, LEVELS, 0)
        for level, count in zip(range(LEVELS - 1, -1, -1), up_counts):
            stage, channels = f"m_up{level + 1}", cfg.dim * 2 ** level
            x = ConvTranspose2x2(channels, name=f"{stage}_0")(x + skips.pop())
            x = self._blocks(x, stage, count, channels, level, 1)
        x = _conv(cfg.in_channels, 3, name="m_tail_0")(x + skips.pop())
        return x[:, :height, :width]


def param_shapes(config: SCUNetConfig):
    """The parameter tree of :class:`SCUNet` as ShapeDtypeStructs (``jax.eval_shape``, nothing allocated)."""
    x = jax.ShapeDtypeStruct((1, config.size_multiple, config.size_multiple, config.in_channels), jnp.float32)
    return jax.eval_shape(lambda a: SCUNet(config).init(jax.random.key(0), a), x)["params"]
