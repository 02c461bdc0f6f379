"""One-step diffusion restorers on Stable Diffusion: the base UNet and VAE plus LoRA deltas kept unmerged, so the
LoRA scale is a traced number (a sweep over it never recompiles).

One model kind (``onestep``) serves three releases, which differ only in data (:class:`OneStepConfig`):

* HYPIR (XPixelGroup/HYPIR ``HYPIR/enhancer/sd2.py``): one UNet LoRA; UNet at ``model_t`` = 200, x0 from the
  DDPM posterior at ``coeff_t`` = 200;
* OSEDiff (cswry/OSEDiff ``osediff.py``, ``OSEDiff_test``): a UNet LoRA (encoder/decoder/others adapters, summed:
  always active together), a fine-tuned ``conv_in`` (stored in ``unet``), a VAE-encoder LoRA; t = 999;
* PiSA-SR (csslc/PiSA-SR ``pisasr.py``, ``PiSASR_eval``): a pixel LoRA merged into the base and a semantic LoRA on
  top (``unet_adapters`` "pix" and "sem"); t = 1 and ``x0 = z − pred`` (the UNet predicts the residual).

Parameters: ``{"unet", "vae"[, "text"], "lora": {"unet": {adapter: Δ}, "vae": {adapter: Δ}}}``; each Δ is a
sub-tree of its model's parameters (the paths are in the config), already multiplied by the adapter's own
``lora_alpha / r``. :func:`adapted` adds ``Σ s_a·Δ_a`` to the base inside the jitted program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxir.errors import JaxirInputError
from jaxir.models import text as text_model
from jaxir.models import unet as unet_model
from jaxir.models import vae as vae_model
from jaxir.models.cldm import DiffusionProcess
from jaxir.models.tokenizer import CLIPTokenizer

X0_RULES = ("ddpm", "residual")
Adapters = tuple[tuple[str, tuple[str, ...]], ...]   # (adapter name, "/"-joined parameter paths it changes)


@dataclasses.dataclass(frozen=True)
class OneStepConfig:
    """``method`` names the release (its preset settings); ``model_t`` is the UNet's timestep; ``x0_rule`` how the
    one step gives the clean latent: ``"ddpm"`` ``(z − √(1−ᾱ_c)·ε)/√ᾱ_c`` at ``coeff_t`` (diffusers
    ``DDPMScheduler.step(...).pred_original_sample``), ``"residual"`` ``z − pred`` (PiSA-SR). ``text`` is None
    when the base model came without a text encoder (then prompts are given as embeddings)."""

    unet: unet_model.UNetConfig
    vae: vae_model.VAEConfig
    process: DiffusionProcess
    method: str
    model_t: int
    x0_rule: str
    coeff_t: int
    text: text_model.TextEncoderConfig | None = None
    unet_adapters: Adapters = ()
    vae_adapters: Adapters = ()

    def __post_init__(self):
        if self.x0_rule not in X0_RULES:
            raise JaxirInputError(f"x0_rule must be one of {X0_RULES}, got {self.x0_rule!r}")
        if self.x0_rule == "ddpm" and self.process.parameterization != "eps":
            raise JaxirInputError(f"{self.method}: x0 from the DDPM posterior needs an ε-prediction base model, this "
                                  f"one predicts {self.process.parameterization}")
        for t in (self.model_t, self.coeff_t):
            if not 0 <= t < self.process.timesteps:
                raise JaxirInputError(f"timestep {t} outside the schedule's 0…{self.process.timesteps - 1}")

    def adapter_names(self, part: str) -> tuple[str, ...]:
        return tuple(name for name, _ in getattr(self, f"{part}_adapters"))


def _subtree(shapes: Mapping, paths: tuple[str, ...]) -> dict:
    flat = traverse_util.flatten_dict(shapes, sep="/")
    missing = [p for p in paths if p not in flat]
    if missing:
        raise JaxirInputError(f"LoRA paths not in the model: {', '.join(missing[:4])}")
    return traverse_util.unflatten_dict({p: flat[p] for p in paths}, sep="/")


def param_shapes(config: OneStepConfig):
    shapes = {"unet": unet_model.param_shapes(config.unet), "vae": vae_model.param_shapes(config.vae)}
    if config.text is not None:
        shapes["text"] = text_model.param_shapes(config.text)
    lora = {part: {name: _subtree(shapes[part], paths) for name, paths in getattr(config, f"{part}_adapters")}
            for part in ("unet", "vae")}
    lora = {part: adapters for part, adapters in lora.items() if adapters}
    if lora:
        shapes["lora"] = lora
    return shapes


def adapted(base, deltas: Mapping, scales: Mapping[str, jax.Array]):
    """``base + Σ_a scales[a]·deltas[a]`` on the leaves each delta covers (the others as they are)."""
    flat = traverse_util.flatten_dict(base, sep="/")
    for name, delta in deltas.items():
        for path, value in traverse_util.flatten_dict(delta, sep="/").items():
            flat[path] = flat[path] + scales[name] * value
    return traverse_util.unflatten_dict(flat, sep="/")


# jitted per architecture (not per model): checkpoints on one base share their compiled networks
@functools.partial(jax.jit, static_argnums=0)
def _posterior(config: vae_model.VAEConfig, params, x):
    return vae_model.AutoencoderKL(config).apply({"params": params}, x, method=vae_model.AutoencoderKL.encode)


@functools.partial(jax.jit, static_argnums=0)
def _predict(config: unet_model.UNetConfig, params, z, t, context):
    return unet_model.UNetModel(config).apply({"params": params}, z, t, context)


@functools.partial(jax.jit, static_argnums=0)
def _decode(config: vae_model.VAEConfig, params, z):
    return vae_model.AutoencoderKL(config).apply({"params": params}, z, method=vae_model.AutoencoderKL.decode)


class OneStepModel:
    """The networks of a converted one-step restorer as jitted pure functions of ``(params, …)`` (inside the
    pipeline's one jit they are inlined); built by ``jaxir.load``."""

    def __init__(self, config: OneStepConfig):
        self.config = config
        self.unet = unet_model.UNetModel(config.unet)
        self.vae = vae_model.AutoencoderKL(config.vae)
        self.text = None if config.text is None else text_model.TextTransformer(config.text)
        self.tokenizer = CLIPTokenizer(context_length=77)

    def networks(self, params, scales: Mapping[str, jax.Array], lora_scale=1.0):
        """``(unet params, vae params)`` with the adapters of ``scales`` added, each times ``lora_scale`` too."""
        lora = params.get("lora", {})
        out = []
        for part in ("unet", "vae"):
            names = self.config.adapter_names(part)
            out.append(adapted(params[part], {n: lora[part][n] for n in names},
                               {n: lora_scale * scales.get(n, 1.0) for n in names}))
        return tuple(out)

    def posterior(self, vae_params, x):
        """``(mean, logvar)`` of the VAE posterior of images in [−1, 1]."""
        return _posterior(self.config.vae, vae_params, x)

    def predict(self, unet_params, z, t, context):
        return _predict(self.config.unet, unet_params, z, t, context)

    def decode(self, vae_params, z):
        """``D(z / scale)`` of a scaled latent, in [−1, 1], unclamped."""
        return _decode(self.config.vae, vae_params, z)

    def encode_text(self, params, prompt: str) -> jax.Array:
        """(1, 77, C) prompt embedding (the base model's CLIP text tower)."""
        if self.text is None:
            raise JaxirInputError("this checkpoint has no text encoder (its base model came without one): pass "
                                  "prompt embeddings instead of a prompt")
        tokens = jnp.asarray(self.tokenizer([prompt]))
        return self.text.apply({"params": params["text"]}, tokens)[0]
