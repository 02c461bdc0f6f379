"""Ported networks, one file per architecture, and the model kinds ``jaxir.load`` knows.

Each kind pairs a config class with a builder and the parameter shapes (``jax.eval_shape``), so a checkpoint
directory (``config.json`` + params) rebuilds its model without random initialisation.
"""

from jaxir.checkpoints import ModelKind, register_kind
from jaxir.models import cldm, controlnet, text, unet, vae

register_kind(ModelKind("vae", vae.VAEConfig, vae.AutoencoderKL, vae.param_shapes))
register_kind(ModelKind("unet", unet.UNetConfig, unet.UNetModel, unet.param_shapes))
register_kind(ModelKind("controlnet", controlnet.ControlNetConfig, controlnet.ControlNet, controlnet.param_shapes))
register_kind(ModelKind("text_encoder", text.TextEncoderConfig, text.TextTransformer, text.param_shapes))
register_kind(ModelKind("diffbir_cldm", cldm.ControlLDMConfig, cldm.CLDM, cldm.param_shapes))
