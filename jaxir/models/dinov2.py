"""DINOv2 vision transformers (ViT-S/B/L/g with patch 14, with or without 4 register tokens), NHWC.

Reimplements ``DinoVisionTransformer`` of facebookresearch/dinov2 (``dinov2/models/vision_transformer.py``,
``dinov2/layers/{block,attention,layer_scale,mlp,swiglu_ffn,patch_embed}.py``) as built by the torch-hub entry
points (``dinov2/hub/backbones.py``: image size 518, patch 14, LayerScale init 1.0, ``block_chunks=0``):

* patch embedding: a 14×14 stride-14 convolution; tokens ``[cls, registers…, patches…]`` where the learned
  positional embedding (class row + a 37×37 grid) is added to ``[cls, patches]`` *before* the registers are
  inserted (``prepare_tokens_with_masks``);
* pre-LN blocks ``x + ls1 ⊙ attn(norm1(x))``, ``x + ls2 ⊙ ffn(norm2(x))`` with LayerNorm eps 1e-6, biased
  multi-head attention (fused ``qkv``, rows [q; k; v]) and either the MLP ``fc2(GELU(fc1 x))`` (exact GELU) or,
  for ViT-g, the fused SwiGLU ``w3(silu(x₁) ⊙ x₂)``, ``[x₁; x₂] = w12 x``, hidden width
  ``(int(4D · 2/3) + 7) // 8 · 8``;
* the final LayerNorm; the outputs are its CLS token and its patch tokens (``x_norm_clstoken``,
  ``x_norm_patchtokens``; the register tokens are dropped).

Other input sizes (multiples of 14) resample the positional grid as ``interpolate_pos_encoding`` does, which
differs between the two hub families (see :func:`pos_embed_resample_weights`):

* plain models (``interpolate_offset=0.1``, ``interpolate_antialias=False``): ``F.interpolate(mode="bicubic",
  scale_factor=((h + 0.1)/37, (w + 0.1)/37))`` — the output has h×w cells but the sampling positions follow the
  *scale factor*, ``src = (dst + 0.5)·37/(h + 0.1) − 0.5``, not ``37/h`` (the DINO "0.1 offset" kludge);
* register models (``interpolate_offset=0``, ``interpolate_antialias=True``): ``F.interpolate(mode="bicubic",
  size=(h, w), antialias=True)``, PyTorch's antialiased separable bicubic (Keys a = −0.5, support widened when
  shrinking, weights outside the grid dropped and the rest renormalised).

timm's ``vit_*_patch14[_reg4]_dinov2`` with ``dynamic_img_size=True`` always resamples like the register models
(``resample_abs_pos_embed``: ``size=``, antialias), so it equals the original only for the ``_reg4`` family or at
the native grid; timm also stores ``cls_token + pos_embed[:, 0]`` as its class token for ``_reg4`` (the converter
undoes this, :mod:`checkpoints_conversion.dinov2_keys`).

Flax submodules carry the hub names: ``blocks.3.attn.qkv.weight`` ↔ ``blocks_3/attn/qkv/kernel``,
``blocks.3.ls1.gamma`` ↔ ``blocks_3/ls1/gamma``. ``mask_token`` (used only for masked training) is not a parameter.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError
from jaxir.layers import attention, gelu_exact
from jaxir.degradations.resize import apply_separable, torch_weights

FFN_KINDS = ("mlp", "swiglu")
NORM_EPS = 1e-6
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_{arch}/dinov2_{preset}_pretrain.pth"


@dataclasses.dataclass(frozen=True)
class DINOv2Config:
    """Sizes of a ``DinoVisionTransformer`` (qkv, projection and FFN biases always on, as in every release).

    ``img_size`` fixes the positional grid, ``img_size // patch_size`` cells a side (518 → 37);
    ``layerscale`` adds ``ls1``/``ls2`` (hub ``init_values=1.0``); ``ffn`` is ``"mlp"`` or ``"swiglu"`` (ViT-g's
    ``SwiGLUFFNFused``); ``interpolate_offset``/``interpolate_antialias`` as in the module docstring.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 14
    img_size: int = 518
    mlp_ratio: float = 4.0
    ffn: str = "mlp"
    layerscale: bool = True
    num_register_tokens: int = 0
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    in_channels: int = 3

    def __post_init__(self):
        if self.ffn not in FFN_KINDS:
            raise JaxirInputError(f"ffn must be one of {FFN_KINDS}, got {self.ffn!r}")
        if self.embed_dim % self.num_heads:
            raise JaxirInputError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise JaxirInputError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_register_tokens < 0 or self.interpolate_offset < 0:
            raise JaxirInputError("num_register_tokens and interpolate_offset must be >= 0")

    @property
    def grid(self) -> int:
        """Cells per side of the stored positional grid."""
        return self.img_size // self.patch_size

    @property
    def ffn_hidden(self) -> int:
        """FFN width: ``int(D · mlp_ratio)``, for SwiGLU then ``(int(h · 2/3) + 7) // 8 · 8`` (``SwiGLUFFNFused``)."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        return hidden if self.ffn == "mlp" else (int(hidden * 2 / 3) + 7) // 8 * 8


def _hub(embed_dim: int, depth: int, num_heads: int, ffn: str = "mlp", registers: bool = False) -> DINOv2Config:
    """The torch-hub ``dinov2_vit*14[_reg]`` settings (``dinov2/hub/backbones.py``)."""
    if registers:
        return DINOv2Config(embed_dim, depth, num_heads, ffn=ffn, num_register_tokens=4, interpolate_offset=0.0,
                            interpolate_antialias=True)
    return DINOv2Config(embed_dim, depth, num_heads, ffn=ffn)


PRESETS: dict[str, DINOv2Config] = {
    "vits14": _hub(384, 12, 6),
    "vitb14": _hub(768, 12, 12),
    "vitl14": _hub(1024, 24, 16),
    "vitg14": _hub(1536, 40, 24, ffn="swiglu"),
    "vits14_reg4": _hub(384, 12, 6, registers=True),
    "vitb14_reg4": _hub(768, 12, 12, registers=True),
    "vitl14_reg4": _hub(1024, 24, 16, registers=True),
    "vitg14_reg4": _hub(1536, 40, 24, ffn="swiglu", registers=True),
}


def preset(name: str) -> DINOv2Config:
    """The config of a released model: ``vits14``, ``vitb14``, ``vitl14``, ``vitg14``, each also ``*_reg4``."""
    if name not in PRESETS:
        raise JaxirInputError(f"unknown DINOv2 preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def weights_url(name: str) -> str:
    """Download address of the official torch-hub weights of a preset (``dinov2/hub/backbones.py``)."""
    preset(name)
    return WEIGHTS_URL.format(arch=name.split("_")[0], preset=name)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a``."""
    ax = np.abs(x)
    near = ((a + 2) * ax - (a + 3)) * ax * ax + 1
    far = (((ax - 5) * ax + 8) * ax - 4) * a
    return np.where(ax < 1, near, np.where(ax < 2, far, 0.0))


@functools.lru_cache(maxsize=256)
def torch_bicubic_antialias_weights(in_len: int, out_len: int, ratio: float) -> np.ndarray:
    """(out_len, in_len) weights of ``F.interpolate(mode="bicubic", antialias=True)`` along one axis.

    ATen's ``_compute_weights_aa`` (``UpSampleKernel.cpp``, after Pillow's ``Resample.c``): output i is centred at
    ``c = ratio·(i + 0.5)``; taps ``j ∈ [max(int(c − s + ½), 0), min(int(c + s + ½), in_len))`` with support
    ``s = 2·max(ratio, 1)`` get ``cubic((j − c + ½)/max(ratio, 1))`` with Keys a = −0.5, normalised to sum 1.
    ``ratio`` is input/output spacing (``in/out`` when a size is given, ``1/scale_factor`` otherwise).
    """
    stretch = max(ratio, 1.0)
    support = 2.0 * stretch
    mat = np.zeros((out_len, in_len))
    for i in range(out_len):
        centre = ratio * (i + 0.5)
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_len)
        w = _cubic((np.arange(lo, hi) - centre + 0.5) / stretch, -0.5)
        mat[i, lo:hi] = w / w.sum() if w.sum() != 0 else w
    return mat


def pos_embed_resample_weights(grid: int, out_len: int, offset: float, antialias: bool) -> np.ndarray:
    """(out_len, grid) weights of ``interpolate_pos_encoding`` along one axis.

    With ``offset`` the original passes ``scale_factor = (out_len + offset)/grid``: the output length is
    ``floor(grid · scale_factor)`` (= ``out_len``, asserted there too) and sampling uses ``1/scale_factor`` as
    the pixel ratio. Without, it passes ``size`` and the ratio is ``grid/out_len``.
    """
    if offset:
        scale_factor = float(out_len + offset) / grid
        if math.floor(grid * scale_factor) != out_len:
            raise JaxirInputError(f"positional grid {grid} → {out_len}: offset {offset} gives another size")
        ratio = 1.0 / scale_factor
    else:
        ratio = grid / out_len
    if antialias:
        return torch_bicubic_antialias_weights(grid, out_len, ratio)
    return torch_weights(grid, out_len, "bicubic", ratio)


def resample_pos_embed(pos_embed: jax.Array, grid_h: int, grid_w: int, config: DINOv2Config) -> jax.Array:
    """``interpolate_pos_encoding``: (1, 1 + grid², D) → (1, 1 + grid_h·grid_w, D), the class row as is and the
    patch grid resampled with :func:`pos_embed_resample_weights` (unchanged at the stored grid)."""
    m = config.grid
    if (grid_h, grid_w) == (m, m):
        return pos_embed
    patch = pos_embed[:, 1:].reshape(1, m, m, -1)
    mat_h, mat_w = (pos_embed_resample_weights(m, n, config.interpolate_offset, config.interpolate_antialias)
                    for n in (grid_h, grid_w))
    patch = apply_separable(patch, mat_h, mat_w).reshape(1, grid_h * grid_w, -1)
    return jnp.concatenate([pos_embed[:, :1], patch], axis=1)


def resize_bicubic_antialias(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """``F.interpolate(x, size=size, mode="bicubic", antialias=True)`` on NHWC (torchvision's tensor ``Resize``)."""
    h, w = x.shape[-3], x.shape[-2]
    return apply_separable(x, torch_bicubic_antialias_weights(h, size[0], h / size[0]),
                           torch_bicubic_antialias_weights(w, size[1], w / size[1]))


def preprocess(images: jax.Array, resolution: int = 224) -> jax.Array:
    """NHWC RGB in [0, 1] → the network's input: shorter side to ``resolution`` (antialiased bicubic, longer side
    ``int(resolution · long / short)``), centre crop ``resolution × resolution`` (offsets ``round((L − r)/2)``),
    ImageNet mean/std normalisation — torchvision's ``Resize(resolution, BICUBIC, antialias=True)``,
    ``CenterCrop(resolution)``, ``Normalize`` on a tensor.

    DINOv2's own evaluation transform (``dinov2/data/transforms.py``) resizes to 256 and crops 224, dropping a
    12.5 % border; here the crop keeps the whole shorter side. ``resolution`` must be a multiple of 14.
    """
    if resolution % 14 or resolution < 14:
        raise JaxirInputError(f"resolution must be a positive multiple of the patch size 14, got {resolution}")
    h, w = images.shape[-3], images.shape[-2]
    short, long = sorted((h, w))
    new_long = int(resolution * long / short)
    size = (resolution, new_long) if h <= w else (new_long, resolution)
    x = images if (h, w) == size else resize_bicubic_antialias(images, size)
    top, left = int(round((size[0] - resolution) / 2.0)), int(round((size[1] - resolution) / 2.0))
    x = x[..., top:top + resolution, left:left + resolution, :]
    return (x - jnp.asarray(IMAGENET_MEAN, x.dtype)) / jnp.asarray(IMAGENET_STD, x.dtype)


def layer_norm(name: str) -> nn.LayerNorm:
    """``torch.nn.LayerNorm(D, eps=1e-6)`` (two-pass variance)."""
    return nn.LayerNorm(epsilon=NORM_EPS, use_fast_variance=False, name=name)


class LayerScale(nn.Module):
    """``x ⊙ γ`` with a learned per-channel ``gamma`` (``dinov2/layers/layer_scale.py``)."""

    @nn.compact
    def __call__(self, x):
        return x * self.param("gamma", nn.initializers.ones, (x.shape[-1],))


class Attention(nn.Module):
    """``dinov2/layers/attention.py``: fused biased ``qkv`` (D → 3D, rows [q; k; v]), softmax(q kᵀ/√d) v, ``proj``."""

    num_heads: int

    @nn.compact
    def __call__(self, x):
        q, k, v = jnp.split(nn.Dense(3 * x.shape[-1], name="qkv")(x), 3, axis=-1)
        return nn.Dense(x.shape[-1], name="proj")(attention(q, k, v, self.num_heads))


class Mlp(nn.Module):
    """``fc2(GELU(fc1 x))`` with exact GELU."""

    hidden: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(x.shape[-1], name="fc2")(gelu_exact(nn.Dense(self.hidden, name="fc1")(x)))


class SwiGLUFFN(nn.Module):
    """``SwiGLUFFNFused``: ``w3(silu(x₁) ⊙ x₂)`` with ``[x₁; x₂] = w12 x`` (halves in that order)."""

    hidden: int

    @nn.compact
    def __call__(self, x):
        x1, x2 = jnp.split(nn.Dense(2 * self.hidden, name="w12")(x), 2, axis=-1)
        return nn.Dense(x.shape[-1], name="w3")(nn.silu(x1) * x2)


class Block(nn.Module):
    """``dinov2/layers/block.py`` at inference: ``x + ls1(attn(norm1 x))``, then ``x + ls2(ffn(norm2 x))``."""

    config: DINOv2Config

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        scale = (lambda name: LayerScale(name=name)) if cfg.layerscale else (lambda name: lambda y: y)
        x = x + scale("ls1")(Attention(cfg.num_heads, name="attn")(layer_norm("norm1")(x)))
        ffn = Mlp if cfg.ffn == "mlp" else SwiGLUFFN
        return x + scale("ls2")(ffn(cfg.ffn_hidden, name="mlp")(layer_norm("norm2")(x)))


class PatchEmbed(nn.Module):
    """A ``patch_size`` × ``patch_size`` convolution with the same stride: (B, H, W, C) → (B, H/p, W/p, D)."""

    embed_dim: int
    patch_size: int

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        return nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", name="proj")(x)


class DINOv2(nn.Module):
    """``x (B, H, W, C)``, normalised (:func:`preprocess`), H and W multiples of the patch size →
    ``(cls (B, D), patches (B, H/p, W/p, D))``, both after the final LayerNorm."""

    config: DINOv2Config

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        b, h, w, c = x.shape
        p, d = cfg.patch_size, cfg.embed_dim
        if h % p or w % p or c != cfg.in_channels:
            raise JaxirInputError(f"DINOv2 needs (B, H, W, {cfg.in_channels}) with H and W multiples of {p}, "
                                  f"got {tuple(x.shape)}")
        cls_token = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, d))
        pos_embed = self.param("pos_embed", nn.initializers.truncated_normal(0.02), (1, 1 + cfg.grid ** 2, d))
        patches = PatchEmbed(d, p, name="patch_embed")(x).reshape(b, (h // p) * (w // p), d)
        tokens = jnp.concatenate([jnp.broadcast_to(cls_token, (b, 1, d)), patches], axis=1)
        tokens = tokens + resample_pos_embed(pos_embed, h // p, w // p, cfg)
        if cfg.num_register_tokens:
            registers = self.param("register_tokens", nn.initializers.normal(1e-6), (1, cfg.num_register_tokens, d))
            tokens = jnp.concatenate([tokens[:, :1], jnp.broadcast_to(registers, (b, cfg.num_register_tokens, d)),
                                      tokens[:, 1:]], axis=1)
        for i in range(cfg.depth):
            tokens = Block(cfg, name=f"blocks_{i}")(tokens)
        tokens = layer_norm("norm")(tokens)
        return tokens[:, 0], tokens[:, 1 + cfg.num_register_tokens:].reshape(b, h // p, w // p, d)


def param_shapes(config: DINOv2Config):
    """The parameter tree of ``DINOv2(config)`` as ShapeDtypeStructs (no initialisation)."""
    x = jnp.zeros((1, config.patch_size, config.patch_size, config.in_channels), jnp.float32)
    return jax.eval_shape(DINOv2(config).init, jax.random.key(0), x)["params"]
