"""RRDBNet, the ESRGAN generator used by Real-ESRGAN (x4plus, x2plus) and BSRGAN (BSRNet), NHWC.

Follows BasicSR ``basicsr/archs/rrdbnet_arch.py`` (Wang et al., ESRGAN, ECCVW 2018, Fig. 4; Real-ESRGAN,
ICCVW 2021, §3.3 for the pixel-unshuffle front of ×2/×1); BSRGAN's ``models/network_rrdbnet.py`` with ``sf=4`` is
the same network under other parameter names (see ``checkpoints_conversion/rrdbnet_keys.py``):

* ``ResidualDenseBlock``: five 3×3 convolutions, each seeing the concatenation of the block input and every
  earlier output (growth ``num_grow_ch``), LeakyReLU(0.2) after the first four; ``x + 0.2 · conv5(…)``.
* ``RRDB``: three dense blocks in sequence, ``x + 0.2 · rdb3(rdb2(rdb1(x)))``.
* ``RRDBNet``: ``f = conv_first(x)``, ``f = f + conv_body(RRDB…(f))``, twice nearest ×2 then conv + LeakyReLU,
  then ``conv_last(lrelu(conv_hr(·)))``. The trunk always upsamples ×4; a ×2 (×1) model first pixel-unshuffles the
  input by 2 (4), giving ``4·C`` (``16·C``) channels to ``conv_first``.

Odd sizes for the unshuffle: the input is reflect-padded at the bottom/right to a multiple of the unshuffle factor
and the output cropped back to ``scale ×`` the input size, as Real-ESRGAN's ``RealESRGANer.pre_process`` /
``post_process`` (``mod_scale``) do around the network. No clamp: the restorer clamps.

Parameter paths mirror BasicSR's keys with list indices joined by ``_``:
``body.3.rdb2.conv5.weight`` ↔ ``body_3/rdb2/conv5/kernel``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxir.errors import JaxirInputError
from jaxir.layers import conv, upsample_nearest2x

RESIDUAL_SCALE = 0.2   # "Empirically, we use 0.2 to scale the residual" (both residual levels)
LEAKY_SLOPE = 0.2
TRUNK_UPSCALE = 4      # two nearest ×2 stages
SCALES = (1, 2, 4)


@dataclasses.dataclass(frozen=True)
class RRDBNetConfig:
    """BasicSR ``RRDBNet(num_in_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch)``."""

    in_channels: int = 3
    out_channels: int = 3
    scale: int = 4
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32

    def __post_init__(self):
        if self.scale not in SCALES:
            raise JaxirInputError(f"RRDBNet scale must be one of {SCALES}, got {self.scale}")

    @property
    def unshuffle(self) -> int:
        """Pixel-unshuffle factor of the input: 4 / scale (1 = none)."""
        return TRUNK_UPSCALE // self.scale

    @classmethod
    def realesrgan_x4plus(cls) -> RRDBNetConfig:
        """Real-ESRGAN ``RealESRGAN_x4plus.pth``: 64 features, 23 RRDBs, growth 32, ×4."""
        return cls()

    @classmethod
    def realesrgan_x2plus(cls) -> RRDBNetConfig:
        """Real-ESRGAN ``RealESRGAN_x2plus.pth``: as x4plus with a pixel-unshuffle-by-2 input (×2)."""
        return cls(scale=2)

    @classmethod
    def bsrnet(cls) -> RRDBNetConfig:
        """BSRGAN ``BSRNet.pth`` (DiffBIR v2's stage-1 SR model): ``RRDBNet(nf=64, nb=23, gc=32, sf=4)``."""
        return cls()


def _lrelu(x):
    return nn.leaky_relu(x, LEAKY_SLOPE)


def pixel_unshuffle(x, factor: int):
    """``torch.nn.functional.pixel_unshuffle`` on NHWC: channel ``c·f² + i·f + j`` holds pixel (i, j) of each
    ``f × f`` cell of input channel ``c``."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // factor, factor, w // factor, factor, c)
    return x.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // factor, w // factor, c * factor * factor)


class ResidualDenseBlock(nn.Module):
    num_feat: int
    num_grow_ch: int

    @nn.compact
    def __call__(self, x):
        features = [x]
        for i in range(1, 5):
            features.append(_lrelu(conv(self.num_grow_ch, name=f"conv{i}")(jnp.concatenate(features, axis=-1))))
        out = conv(self.num_feat, name="conv5")(jnp.concatenate(features, axis=-1))
        return x + RESIDUAL_SCALE * out


class RRDB(nn.Module):
    num_feat: int
    num_grow_ch: int

    @nn.compact
    def __call__(self, x):
        out = x
        for i in range(1, 4):
            out = ResidualDenseBlock(self.num_feat, self.num_grow_ch, name=f"rdb{i}")(out)
        return x + RESIDUAL_SCALE * out


class RRDBNet(nn.Module):
    """NHWC image (values in [0, 1]) → NHWC image ``scale`` times larger, unclamped."""

    config: RRDBNetConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        if x.shape[-1] != cfg.in_channels:
            raise JaxirInputError(f"RRDBNet expects {cfg.in_channels} input channels, got {x.shape[-1]}")
        height, width = x.shape[1], x.shape[2]
        if cfg.unshuffle > 1:
            f = cfg.unshuffle
            x = jnp.pad(x, ((0, 0), (0, -height % f), (0, -width % f), (0, 0)), mode="reflect")
            x = pixel_unshuffle(x, f)
        feat = conv(cfg.num_feat, name="conv_first")(x)
        body = feat
        for i in range(cfg.num_block):
            body = RRDB(cfg.num_feat, cfg.num_grow_ch, name=f"body_{i}")(body)
        feat = feat + conv(cfg.num_feat, name="conv_body")(body)
        for name in ("conv_up1", "conv_up2"):
            feat = _lrelu(conv(cfg.num_feat, name=name)(upsample_nearest2x(feat)))
        out = conv(cfg.out_channels, name="conv_last")(_lrelu(conv(cfg.num_feat, name="conv_hr")(feat)))
        return out[:, :height * cfg.scale, :width * cfg.scale]


def param_shapes(config: RRDBNetConfig):
    """The parameter tree of :class:`RRDBNet` as ShapeDtypeStructs (``jax.eval_shape``, nothing allocated)."""
    side = config.unshuffle
    x = jax.ShapeDtypeStruct((1, side, side, config.in_channels), jnp.float32)
    return jax.eval_shape(lambda a: RRDBNet(config).init(jax.random.key(0), a), x)["params"]
