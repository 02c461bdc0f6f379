"""CLIP's text transformer as the prompt encoder of latent diffusion (OpenCLIP ViT-H/14 and bigG/14, OpenAI ViT-L/14).

Reimplements open_clip's ``TextTransformer`` (``src/open_clip/transformer.py``; ``CLIP.encode_text`` in
``model.py``), which is also transformers' ``CLIPTextModel``: token embedding plus a learned positional embedding,
pre-LayerNorm residual blocks with causal self-attention (``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``, MLP width
4·W), ``ln_final``, and the pooled feature ``ln_final(x)`` at the end-of-text token (the largest id of each row,
found with argmax as open_clip does), optionally ``@ text_projection``.

Which hidden state conditions the UNet follows the LDM wrappers:

- ``"penultimate"``: the output of block N−1, then ``ln_final`` — DiffBIR's and SD 2.x's ``FrozenOpenCLIPEmbedder``
  (DiffBIR ``diffbir/model/clip.py``; blocks after N−1 are never run, their weights are ignored on conversion).
- ``"last"``: all N blocks, then ``ln_final`` (``layer="last"``; transformers' ``last_hidden_state``).
- an integer k: transformers' ``hidden_states[k]`` (0 is the embedding, k the output of block k), no final norm —
  SDXL's ``FrozenCLIPEmbedder(layer="hidden", layer_idx=11)`` for CLIP ViT-L, and ``FrozenOpenCLIPEmbedder2``
  (``layer="penultimate"``, ``legacy=False``) for bigG, which is k = 31 (``sgm/modules/encoders/modules.py``).

``pooled`` adds the pooled feature from the last block (SDXL's bigG: ``ln_final(last)[EOT] @ text_projection``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxir.errors import JaxirInputError
from jaxir.layers import attention, gelu_exact

ACTIVATIONS = ("gelu", "quick_gelu")
OPEN_CLIP_KEYS = ("embed_dim", "vision_cfg", "text_cfg", "layer")
OPEN_CLIP_TEXT_KEYS = ("context_length", "vocab_size", "width", "heads", "layers")


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 1024
    heads: int = 16
    layers: int = 24
    act: str = "gelu"                     # "gelu" (exact; OpenCLIP) or "quick_gelu" (OpenAI CLIP)
    output_layer: str | int = "penultimate"   # "last", "penultimate" or a hidden-state index (module docstring)
    pooled: bool = False                  # also return the feature at the end-of-text token
    projection_dim: int | None = None     # pooled @ text_projection (W, projection_dim); needs pooled

    def __post_init__(self):
        if self.act not in ACTIVATIONS:
            raise JaxirInputError(f"act must be one of {ACTIVATIONS}, got {self.act!r}")
        if self.width % self.heads:
            raise JaxirInputError(f"width {self.width} is not divisible by heads {self.heads}")
        named = self.output_layer in ("last", "penultimate")
        indexed = type(self.output_layer) is int and 0 <= self.output_layer <= self.layers
        if not (named or indexed):
            raise JaxirInputError(f"output_layer must be 'last', 'penultimate' or a hidden-state index in "
                                  f"0…{self.layers}, got {self.output_layer!r}")
        if self.projection_dim is not None and not self.pooled:
            raise JaxirInputError("projection_dim applies to the pooled output; set pooled=True")

    @property
    def hidden_index(self) -> int:
        """How many blocks produce the returned hidden state."""
        return {"last": self.layers, "penultimate": self.layers - 1}.get(self.output_layer, self.output_layer)

    @property
    def blocks_used(self) -> int:
        """How many blocks run (the rest exist in checkpoints but cannot change the outputs)."""
        return self.layers if self.pooled else self.hidden_index

    @property
    def final_norm_used(self) -> bool:
        return self.pooled or isinstance(self.output_layer, str)


def openclip_vit_h() -> TextEncoderConfig:
    """OpenCLIP ViT-H/14's text tower as SD 2.x and DiffBIR use it (penultimate block + ``ln_final``)."""
    return TextEncoderConfig(width=1024, heads=16, layers=24, act="gelu", output_layer="penultimate")


def openai_clip_l() -> TextEncoderConfig:
    """OpenAI CLIP ViT-L/14's text tower as SDXL's first embedder uses it (hidden state 11, no final norm)."""
    return TextEncoderConfig(width=768, heads=12, layers=12, act="quick_gelu", output_layer=11)


def openclip_bigg() -> TextEncoderConfig:
    """OpenCLIP ViT-bigG/14's text tower as SDXL's second embedder uses it (hidden state 31, no final norm; pooled
    and projected end-of-text feature)."""
    return TextEncoderConfig(width=1280, heads=20, layers=32, act="gelu", output_layer=31, pooled=True,
                             projection_dim=1280)


def from_open_clip_cfg(clip_cfg: Mapping) -> TextEncoderConfig:
    """The encoder of DiffBIR's YAML ``clip_cfg`` (``FrozenOpenCLIPEmbedder(embed_dim, vision_cfg, text_cfg,
    layer)``): ``text_cfg`` gives the sizes, ``layer`` the output; ``embed_dim`` and ``vision_cfg`` describe parts
    the embedder does not use. Other options (``quick_gelu``; in ``text_cfg`` layer scale, a CLS token, a
    transformers tower) would change the network and are refused rather than ignored."""
    text_cfg = dict(clip_cfg["text_cfg"])
    checks = {"clip_cfg": (clip_cfg, OPEN_CLIP_KEYS), "clip_cfg.text_cfg": (text_cfg, OPEN_CLIP_TEXT_KEYS)}
    for where, (given, known) in checks.items():
        unsupported = sorted(set(given) - set(known))
        if unsupported:
            raise JaxirInputError(f"{where}: unsupported options {unsupported}; supported: {', '.join(known)}")
    return TextEncoderConfig(**text_cfg, act="gelu", output_layer=clip_cfg.get("layer", "last"))


HF_CLIP_TEXT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "max_position_embeddings", "hidden_act")


def from_hf_clip_text_config(config: Mapping, output_layer: str | int) -> TextEncoderConfig:
    """The encoder of a transformers ``CLIPTextConfig`` (a ``config.json`` of ``CLIPTextModel``, or of ``CLIPModel``
    whose ``text_config`` holds it), read as :class:`TextEncoderConfig`. The MLP must be 4·W wide and the activation
    GELU or QuickGELU (the only ones :class:`TextTransformer` has); anything else is refused, not ignored."""
    config = config.get("text_config", config)
    missing = [k for k in HF_CLIP_TEXT_KEYS if k not in config]
    if missing:
        raise JaxirInputError(f"not a CLIP text config: {', '.join(missing)} missing")
    width, act = int(config["hidden_size"]), config["hidden_act"]
    if int(config["intermediate_size"]) != 4 * width:
        raise JaxirInputError(f"CLIP text config: intermediate_size {config['intermediate_size']} is not 4 × "
                              f"hidden_size {width}; only 4× MLPs are supported")
    if act not in ACTIVATIONS:
        raise JaxirInputError(f"CLIP text config: hidden_act {act!r} is not one of {ACTIVATIONS}")
    return TextEncoderConfig(vocab_size=int(config["vocab_size"]), context_length=int(config["max_position_embeddings"]),
                             width=width, heads=int(config["num_attention_heads"]),
                             layers=int(config["num_hidden_layers"]), act=act, output_layer=output_layer)


def quick_gelu(x):
    """OpenAI CLIP's ``QuickGELU``: ``x · sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


def layer_norm(name: str) -> nn.LayerNorm:
    """``torch.nn.LayerNorm(W)`` (eps 1e-5, two-pass variance)."""
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)


class CausalSelfAttention(nn.Module):
    """``torch.nn.MultiheadAttention`` with open_clip's causal mask; ``in_proj`` is the fused (W → 3W) q/k/v
    projection, rows [q; k; v] as in torch's ``in_proj_weight``."""

    width: int
    heads: int

    @nn.compact
    def __call__(self, x):
        q, k, v = jnp.split(nn.Dense(3 * self.width, name="in_proj")(x), 3, axis=-1)
        return nn.Dense(self.width, name="out_proj")(attention(q, k, v, self.heads, causal=True))


class Mlp(nn.Module):
    """open_clip's ``mlp``: ``c_fc`` (W → 4W), activation, ``c_proj`` (4W → W)."""

    width: int
    act: str

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4 * self.width, name="c_fc")(x)
        h = gelu_exact(h) if self.act == "gelu" else quick_gelu(h)
        return nn.Dense(self.width, name="c_proj")(h)


class ResidualAttentionBlock(nn.Module):
    """open_clip's pre-LN block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    width: int
    heads: int
    act: str

    @nn.compact
    def __call__(self, x):
        x = x + CausalSelfAttention(self.width, self.heads, name="attn")(layer_norm("ln_1")(x))
        return x + Mlp(self.width, self.act, name="mlp")(layer_norm("ln_2")(x))


class Transformer(nn.Module):
    """The first ``depth`` blocks; returns every hidden state (index 0 is the input, k the output of block k)."""

    width: int
    heads: int
    depth: int
    act: str

    @nn.compact
    def __call__(self, x) -> list:
        states = [x]
        for i in range(self.depth):
            states.append(ResidualAttentionBlock(self.width, self.heads, self.act, name=f"resblocks_{i}")(states[-1]))
        return states


class TextTransformer(nn.Module):
    """``tokens (B, L ≤ context_length) int -> (hidden (B, L, W), pooled (B, projection_dim or W) or None)``."""

    config: TextEncoderConfig

    @nn.compact
    def __call__(self, tokens):
        cfg = self.config
        positional = self.param("positional_embedding", nn.initializers.normal(0.01), (cfg.context_length, cfg.width))
        x = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=nn.initializers.normal(0.02),
                     name="token_embedding")(tokens)
        x = x + positional[:tokens.shape[1]]
        states = Transformer(cfg.width, cfg.heads, cfg.blocks_used, cfg.act, name="transformer")(x)
        ln_final = layer_norm("ln_final")   # its parameters exist only if it is called
        hidden = states[cfg.hidden_index]
        if isinstance(cfg.output_layer, str):
            hidden = ln_final(hidden)
        if not cfg.pooled:
            return hidden, None
        pooled = ln_final(states[-1])[jnp.arange(tokens.shape[0]), jnp.argmax(tokens, axis=-1)]
        if cfg.projection_dim is not None:
            projection = self.param("text_projection", nn.initializers.normal(cfg.width ** -0.5),
                                    (cfg.width, cfg.projection_dim))
            pooled = pooled @ projection
        return hidden, pooled


def param_shapes(config: TextEncoderConfig):
    """The parameter tree of :class:`TextTransformer` as ShapeDtypeStructs (``jax.eval_shape``)."""
    tokens = jax.ShapeDtypeStruct((1, config.context_length), jnp.int32)
    return jax.eval_shape(lambda t: TextTransformer(config).init(jax.random.key(0), t), tokens)["params"]
