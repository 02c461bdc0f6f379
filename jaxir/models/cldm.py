"""DiffBIR's ControlLDM: Stable Diffusion's UNet, VAE and OpenCLIP text encoder with an IRControlNet, exposing
the study's operations (XPixelGroup/DiffBIR ``diffbir/model/cldm.py``, ``ControlLDM``):

* :meth:`CLDM.encode_text` — ``c_t = τ(T)``, eq. (6): OpenCLIP penultimate layer + ``ln_final``;
* :meth:`CLDM.encode_condition` — ``c_f = E(I_reg)``, eq. (7): ``scale · mode(E(2·I_reg − 1))``;
* :meth:`CLDM.denoise` — ``ε_θ(z_t, t, c_t, c_f)``, eq. (9): the ControlNet's 13 residuals, each times its
  control scale, added to the UNet's skips and middle block;
* :meth:`CLDM.decode` — ``x̃ = D(z / scale)``, eq. (11), images in [−1, 1] (``decode_image`` maps to [0, 1]).

Each operation is a jitted pure function of ``(params, inputs)``; control scales are traced arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxir.errors import JaxirInputError
from jaxir.models.controlnet import ControlNet, ControlNetConfig
from jaxir.models.text import TextEncoderConfig, TextTransformer, from_open_clip_cfg
from jaxir.models.tokenizer import CLIPTokenizer
from jaxir.models.unet import UNetConfig, UNetModel
from jaxir.models.vae import AutoencoderKL, VAEConfig


@dataclasses.dataclass(frozen=True)
class DiffusionProcess:
    """The forward process a checkpoint was trained with (DiffBIR ``configs/inference/diffusion*.yaml``,
    ``diffbir.model.Diffusion``): SD's "linear" β schedule ``linspace(√β₀, √β₁, T)²``, optionally rescaled to zero
    terminal SNR (Lin et al., 2024), and what the network predicts, ``eps`` (ε) or ``v`` (Salimans & Ho, 2022).
    DiffBIR v1/v2 run on SD 2.1-base (ε); v2.1 on its zero-SNR v-prediction SD 2.1."""

    linear_start: float = 0.00085
    linear_end: float = 0.0120
    timesteps: int = 1000
    zero_snr: bool = False
    parameterization: str = "eps"

    def __post_init__(self):
        if self.parameterization not in ("eps", "v"):
            raise JaxirInputError(f"parameterization must be 'eps' or 'v', got {self.parameterization!r}")
        if not 0 < self.linear_start < self.linear_end < 1 or self.timesteps < 2:
            raise JaxirInputError(f"bad diffusion schedule: linear_start {self.linear_start}, linear_end "
                                  f"{self.linear_end}, timesteps {self.timesteps}")

    @classmethod
    def from_diffbir_yaml(cls, params: Mapping) -> DiffusionProcess:
        """From the ``params`` of DiffBIR's ``diffusion.yaml`` / ``diffusion_v2.1.yaml``."""
        unknown = sorted(set(params) - {"linear_start", "linear_end", "timesteps", "zero_snr", "parameterization"})
        if unknown:
            raise JaxirInputError(f"not a DiffBIR diffusion config: unknown fields {unknown}")
        return cls(**{k: type(getattr(cls, k))(v) for k, v in params.items()})


@dataclasses.dataclass(frozen=True)
class ControlLDMConfig:
    unet: UNetConfig
    controlnet: ControlNetConfig
    vae: VAEConfig
    text: TextEncoderConfig
    process: DiffusionProcess = DiffusionProcess()

    @classmethod
    def diffbir_v2(cls) -> ControlLDMConfig:
        """DiffBIR v2 / v2.1 (``configs/inference/cldm.yaml``): SD 2.1-base, IRControlNet, OpenCLIP ViT-H."""
        return cls(UNetConfig.sd21_base(), ControlNetConfig.diffbir(), VAEConfig.sd(), TextEncoderConfig())

    @classmethod
    def from_diffbir_yaml(cls, params: Mapping) -> ControlLDMConfig:
        """From the ``params`` of DiffBIR's ``cldm.yaml`` (``unet_cfg``, ``controlnet_cfg``, ``vae_cfg``,
        ``clip_cfg``, ``latent_scale_factor``)."""
        missing = [k for k in ("unet_cfg", "controlnet_cfg", "vae_cfg", "clip_cfg", "latent_scale_factor")
                   if k not in params]
        if missing:
            raise JaxirInputError(f"not a DiffBIR ControlLDM config: missing {missing}")
        vae_cfg = params["vae_cfg"]
        return cls(UNetConfig.from_ldm(params["unet_cfg"]),
                   ControlNetConfig.from_ldm(params["controlnet_cfg"], hint_mode="concat"),
                   VAEConfig.from_ldm(vae_cfg["ddconfig"], vae_cfg["embed_dim"], params["latent_scale_factor"]),
                   from_open_clip_cfg(params["clip_cfg"]))

    @property
    def num_controls(self) -> int:
        return self.controlnet.num_outputs


class ControlLDMNet(nn.Module):
    """The parameter container: ``unet``, ``controlnet``, ``vae``, ``text`` (names of the params tree)."""

    config: ControlLDMConfig

    def setup(self):
        self.unet = UNetModel(self.config.unet)
        self.controlnet = ControlNet(self.config.controlnet)
        self.vae = AutoencoderKL(self.config.vae)
        self.text = TextTransformer(self.config.text)

    def encode_text(self, tokens):
        return self.text(tokens)[0]

    def encode_condition(self, image):
        return self.vae.encode_latent(image)

    def denoise(self, x_t, t, c_txt, c_img, control_scales):
        control = self.controlnet(x_t, c_img, t, c_txt, control_scales=control_scales)
        return self.unet(x_t, t, c_txt, control=control)

    def decode(self, z):
        return self.vae.decode(z)

    def __call__(self, tokens, image, x_t, t):
        """Touches every parameter (for ``init``/``eval_shape``)."""
        c_txt = self.encode_text(tokens)
        c_img = self.encode_condition(image)
        scales = jnp.ones((self.config.num_controls,), jnp.float32)
        return self.denoise(x_t, t, c_txt, c_img, scales), self.decode(c_img)


def _example_inputs(config: ControlLDMConfig):
    f = config.vae.downsample_factor * 2 ** (len(config.unet.channel_mult) - 1)
    latent = f // config.vae.downsample_factor
    return (jax.ShapeDtypeStruct((1, config.text.context_length), jnp.int32),
            jax.ShapeDtypeStruct((1, f, f, 3), jnp.float32),
            jax.ShapeDtypeStruct((1, latent, latent, config.unet.in_channels), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32))


def param_shapes(config: ControlLDMConfig):
    net = ControlLDMNet(config)
    return jax.eval_shape(lambda *a: net.init(jax.random.key(0), *a), *_example_inputs(config))["params"]


class CLDM:
    """A ControlLDM with its operations as jitted functions of ``(params, …)``; built by ``jaxir.load``."""

    def __init__(self, config: ControlLDMConfig):
        self.config = config
        self.net = ControlLDMNet(config)
        self.tokenizer = CLIPTokenizer(context_length=config.text.context_length)
        method = lambda name: jax.jit(functools.partial(self.net.apply, method=name))  # noqa: E731
        self._encode_text = method("encode_text")
        self._encode_condition = method("encode_condition")
        self._denoise = method("denoise")
        self._decode = method("decode")

    @property
    def latent_scale(self) -> float:
        return self.config.vae.scale_factor

    def tokenize(self, prompts: str | Sequence[str]):
        return jnp.asarray(self.tokenizer(prompts))

    def encode_text(self, params, prompts):
        """eq. (6): (B, 77, C) text condition of prompts (strings) or token arrays."""
        tokens = self.tokenize(prompts) if isinstance(prompts, str) or (
            isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], str)) else jnp.asarray(prompts)
        return self._encode_text({"params": params}, tokens)

    def encode_condition(self, params, image):
        """eq. (7): ``scale · mode(E(2x − 1))`` of NHWC images in [0, 1] (sides multiples of 8)."""
        return self._encode_condition({"params": params}, image)

    def denoise(self, params, x_t, t, c_txt, c_img, control_scales=None):
        """eq. (9): the network output (ε or v, by the checkpoint) at noisy latent ``x_t`` and timesteps ``t``.
        ``control_scales``: a scalar or one value per ControlNet output (13 for SD), default 1."""
        n = self.config.num_controls
        scales = jnp.ones((n,), jnp.float32) if control_scales is None else jnp.broadcast_to(
            jnp.asarray(control_scales, jnp.float32), (n,))
        t = jnp.broadcast_to(jnp.asarray(t), (x_t.shape[0],))
        return self._denoise({"params": params}, x_t, t, c_txt, c_img, scales)

    def decode(self, params, z):
        """eq. (11): ``D(z / scale)``, images in [−1, 1], unclamped."""
        return self._decode({"params": params}, z)

    def decode_image(self, params, z):
        """eq. (11) mapped to [0, 1] and clipped, as DiffBIR returns samples."""
        return jnp.clip((self.decode(params, z) + 1.0) / 2.0, 0.0, 1.0)
