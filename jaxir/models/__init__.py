"""Ported networks, one file per architecture, and the model kinds ``jaxir.load`` knows.

Each kind pairs a config class with a builder and the parameter shapes (``jax.eval_shape``), so a checkpoint
directory (``config.json`` + params) rebuilds its model without random initialisation.
"""

from jaxir.checkpoints import ModelKind, register_kind
from jaxir.models import cldm, controlnet, text, unet, vae
from jaxir.models import stripformer
from jaxir.models import dinov2
from jaxir.models import lpips_backbones
from jaxir.models import rrdbnet, scunet
from jaxir.models import swinir
from jaxir.models import supir
from jaxir.models import restorer_cnn
from jaxir.models import onestep

register_kind(ModelKind("vae", vae.VAEConfig, vae.AutoencoderKL, vae.param_shapes))
register_kind(ModelKind("unet", unet.UNetConfig, unet.UNetModel, unet.param_shapes))
register_kind(ModelKind("controlnet", controlnet.ControlNetConfig, controlnet.ControlNet, controlnet.param_shapes))
register_kind(ModelKind("text_encoder", text.TextEncoderConfig, text.TextTransformer, text.param_shapes))
register_kind(ModelKind("diffbir_cldm", cldm.ControlLDMConfig, cldm.CLDM, cldm.param_shapes))
register_kind(ModelKind("stripformer", stripformer.StripformerConfig, stripformer.StripformerModel,
                         stripformer.param_shapes))
register_kind(ModelKind("dinov2", dinov2.DINOv2Config, dinov2.DINOv2, dinov2.param_shapes))
register_kind(ModelKind("lpips", lpips_backbones.LPIPSConfig, lpips_backbones.LPIPSNetwork, lpips_backbones.param_shapes))
register_kind(ModelKind("rrdbnet", rrdbnet.RRDBNetConfig, rrdbnet.RRDBNet, rrdbnet.param_shapes))
register_kind(ModelKind("scunet", scunet.SCUNetConfig, scunet.SCUNet, scunet.param_shapes))
register_kind(ModelKind("swinir", swinir.SwinIRConfig, swinir.SwinIR, swinir.param_shapes))
register_kind(ModelKind("supir", supir.SUPIRConfig, supir.SUPIR, supir.param_shapes))
register_kind(ModelKind("residual_cnn", restorer_cnn.ResidualCNNConfig, restorer_cnn.ResidualCNN,
                         restorer_cnn.param_shapes))
register_kind(ModelKind("onestep", onestep.OneStepConfig, onestep.OneStepModel, onestep.param_shapes))
