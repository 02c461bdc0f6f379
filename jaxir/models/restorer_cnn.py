"""The small residual CNN restorer that jaxir trains itself (``jaxir.train``), for SR and deblurring (eq. 3).

``M_φ(I_y) = B(I_y) + PixelShuffle_s(f_φ(I_y))``: ``B`` is MATLAB bicubic upsampling by the scale s (the identity
for s = 1), ``f_φ`` a 3×3 convolution, ``blocks`` residual blocks (conv, ReLU, conv, + input; EDSR without batch
norm, Lim et al. 2017), a 3×3 convolution to ``3·s²`` channels, and ``PixelShuffle`` (Shi et al. 2016). The last
convolution starts at zero, so an untrained model is exactly the bicubic baseline.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxir.degradations.resize import imresize
from jaxir.layers import conv
from jaxir.models.swinir import pixel_shuffle


@dataclasses.dataclass(frozen=True)
class ResidualCNNConfig:
    scale: int = 1
    features: int = 32
    blocks: int = 4


class ResidualCNN(nn.Module):
    config: ResidualCNNConfig

    @nn.compact
    def __call__(self, lq):
        c = self.config
        base = lq if c.scale == 1 else imresize(lq, scale=c.scale)
        h = conv(c.features, name="head")(lq)
        for i in range(c.blocks):
            r = conv(c.features, name=f"block_{i}_conv_0")(h)
            h = h + conv(c.features, name=f"block_{i}_conv_1")(nn.relu(r))
        out = nn.Conv(3 * c.scale ** 2, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros, name="tail")(
            nn.relu(h))
        return base + (out if c.scale == 1 else pixel_shuffle(out, c.scale))


def param_shapes(config: ResidualCNNConfig):
    x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
    return jax.eval_shape(lambda a: ResidualCNN(config).init(jax.random.key(0), a), x)["params"]
