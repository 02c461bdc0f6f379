"""ControlNets for the LDM UNet: a copy of the UNet's encoder half whose block outputs, through zero-initialised 1×1
convolutions, become residuals of the UNet's skip features and middle block (see ``UNetModel``'s ``control``).

Two ways of feeding the condition, ``ControlNetConfig.hint_mode``:

* ``"concat"`` — DiffBIR's IRControlNet (XPixelGroup/DiffBIR ``diffbir/model/controlnet.py``, ``ControlNet``): the
  condition latent (the VAE encoding of the degraded image) is concatenated to the noisy latent, so
  ``input_blocks.0`` takes ``in_channels + hint_channels`` channels; no hint network.
* ``"hint_block"`` — the original ControlNet (lllyasviel/ControlNet ``cldm/cldm.py``, ``ControlNet``; diffusers
  ``ControlNetModel``): a full-resolution condition image goes through ``input_hint_block`` (3×3 convs with SiLU,
  three of them stride 2, so 8× down, then a zero conv to ``model_channels``), added to the output of
  ``input_blocks.0``.

Outputs: ``zero_convs.{i}.0`` of every input block's output, then ``middle_block_out.0`` of the middle block
(13 for SD), each multiplied by its control scale (``ControlLDM.control_scales``; diffusers'
``conditioning_scale``) — a traced array, so scales can change without recompiling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxir.errors import JaxirInputError
from jaxir.layers import conv
from jaxir.models.unet import UNetConfig, check_inputs, embed, encode, encoder_layout, example_inputs, middle

HINT_MODES = ("concat", "hint_block")


@dataclasses.dataclass(frozen=True)
class ControlNetConfig:
    """``unet``: the encoder's settings (``in_channels`` is the noisy latent's; ``out_channels`` is unused).
    ``hint_block_channels``: the widths of ``input_hint_block`` in ``"hint_block"`` mode (lllyasviel's fixed
    16, 32, 96, 256; diffusers' ``conditioning_embedding_out_channels``)."""

    unet: UNetConfig
    hint_channels: int = 4
    hint_mode: str = "concat"
    hint_block_channels: tuple[int, ...] = (16, 32, 96, 256)

    def __post_init__(self):
        if self.hint_mode not in HINT_MODES:
            raise JaxirInputError(f"ControlNet hint_mode {self.hint_mode!r} is not one of {HINT_MODES}")

    @classmethod
    def diffbir(cls) -> ControlNetConfig:
        """DiffBIR v2/v2.1 IRControlNet on SD 2.1 (``configs/inference/cldm.yaml`` ``controlnet_cfg``)."""
        return cls(UNetConfig.sd21_base(), hint_channels=4, hint_mode="concat")

    @classmethod
    def sd15_hint(cls) -> ControlNetConfig:
        """lllyasviel's ControlNet 1.0/1.1 for SD 1.5 (``models/cldm_v15.yaml``): an RGB condition image."""
        return cls(UNetConfig.sd15(), hint_channels=3, hint_mode="hint_block")

    @classmethod
    def from_ldm(cls, params: Mapping, hint_mode: str) -> ControlNetConfig:
        """From the YAML ``params`` of a ControlNet (DiffBIR ``controlnet_cfg``, ``control_stage_config.params``).
        The YAML does not say which ControlNet class it configures, hence ``hint_mode``."""
        params = dict(params)
        if "hint_channels" not in params:
            raise JaxirInputError("ControlNet options lack hint_channels")
        hint_channels = params.pop("hint_channels")
        params.setdefault("out_channels", params["in_channels"])
        return cls(UNetConfig.from_ldm(params), hint_channels=hint_channels, hint_mode=hint_mode)

    @property
    def num_outputs(self) -> int:
        return len(encoder_layout(self.unet)[0]) + 1

    @property
    def hint_factor(self) -> int:
        """How much larger than the latent the hint is: 1 (``"concat"``) or 2^(stride-2 convs)."""
        return 1 if self.hint_mode == "concat" else 2 ** (len(self.hint_block_channels) - 1)


def hint_block(config: ControlNetConfig, hint):
    """lllyasviel's ``input_hint_block`` (diffusers ``ControlNetConditioningEmbedding``): convs at the even
    indices, SiLU between them; per width step a same-width conv then a stride-2 conv to the next width; last, a
    (zero-initialised) conv to ``model_channels``."""
    chans = config.hint_block_channels
    steps = [(chans[0], 1)]
    for c_in, c_out in zip(chans[:-1], chans[1:]):
        steps += [(c_in, 1), (c_out, 2)]
    steps.append((config.unet.model_channels, 1))
    h = hint
    for n, (features, stride) in enumerate(steps):
        h = conv(features, stride=stride, name=f"input_hint_block_{2 * n}")(nn.silu(h) if n else h)
    return h


class ControlNet(nn.Module):
    """Returns ``num_outputs`` control features in UNet-input-block order, then the middle one, scaled by
    ``control_scales`` (shape ``(num_outputs,)``, default all 1). ``x`` (B, H, W, in_channels) is the noisy
    latent; ``hint`` (B, H·f, W·f, hint_channels) with f = ``config.hint_factor``."""

    config: ControlNetConfig

    @nn.compact
    def __call__(self, x, hint, timesteps, context, y=None, control_scales=None):
        config, unet = self.config, self.config.unet
        want = (x.shape[0], x.shape[1] * config.hint_factor, x.shape[2] * config.hint_factor, config.hint_channels)
        if hint.shape != want:
            raise JaxirInputError(f"ControlNet hint must be {want} for input {x.shape}; got {hint.shape}")
        check_inputs(unet, x, context)
        if control_scales is not None and jnp.shape(control_scales) != (config.num_outputs,):
            raise JaxirInputError(f"control_scales must have shape ({config.num_outputs},); got "
                                  f"{jnp.shape(control_scales)}")
        emb = embed(unet, timesteps, y, x.shape[0])
        if config.hint_mode == "concat":
            features = encode(unet, jnp.concatenate([x, hint], axis=-1), emb, context)
        else:
            features = encode(unet, x, emb, context, added_after_first=hint_block(config, hint))
        h = middle(unet, features[-1], emb, context)
        outs = [nn.Dense(f.shape[-1], name=f"zero_convs_{i}_0")(f) for i, f in enumerate(features)]
        outs.append(nn.Dense(h.shape[-1], name="middle_block_out_0")(h))
        if control_scales is None:
            return tuple(outs)
        scales = jnp.asarray(control_scales, jnp.float32)
        return tuple(o * scales[i] for i, o in enumerate(outs))


def param_shapes(config: ControlNetConfig):
    """The ControlNet's parameter tree as ShapeDtypeStructs (``jax.eval_shape``, nothing allocated)."""
    inputs = example_inputs(config.unet)
    b, h, w, _ = inputs["x"].shape
    f = config.hint_factor
    inputs["hint"] = jax.ShapeDtypeStruct((b, h * f, w * f, config.hint_channels), jnp.float32)
    model = ControlNet(config)
    return jax.eval_shape(lambda kw: model.init(jax.random.key(0), **kw), inputs)["params"]
