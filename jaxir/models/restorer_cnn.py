"""The small residual CNN restorer that jaxir trains itself (``jaxir.train``), for SR and deblurring (eq. 3).

``M_φ(I_y) = B(I_y) + PixelShuffle_s(f_φ(I_y))``: ``B`` is MATLAB bicubic upsampling by the scale s (the identity
for s = 1), ``f_φ`` a 3×3 convolution, ``blocks`` residual blocks (conv, ReLU, conv, + input; EDSR without batch
norm, Lim et al. 2017), a 3×3 convolution to ``3·s²`` channels, and ``PixelShuffle`` (Shi et al. 2016). The last
convolution starts at zero, so an untrained model is exactly the bicubic baseline.

``flat_preserving`` makes that last convolution a zero-DC filter: bias-free, and each 3×3 kernel slice (one input,
one output channel) projected to zero sum, ``W ← W − mean_{taps}(W)``. On a region that is constant over the receptive
field (``2·(2·blocks + 2) + 1`` pixels wide) the features are constant, so ``f_φ`` returns exactly zero there and the
model reproduces ``B(I_y)``, which is the right answer: bicubic upsampling and a normalised blur both map a constant
image to itself. Without it, the biases leave a small constant offset on flat regions (about one grey level on the
black surround of a fundus photo after deblurring). ``jaxir train`` sets it; the field defaults to off so that
configurations written without it load as they were trained.
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
    flat_preserving: bool = False


class ZeroDCConv(nn.Module):
    """A bias-free 3×3 'SAME' convolution whose kernel has zero sum over its taps for every (input, output)
    channel pair (a high-pass filter bank); the stored kernel starts at zero."""
    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.zeros, (3, 3, x.shape[-1], self.features))
        kernel = kernel - jnp.mean(kernel, axis=(0, 1), keepdims=True)
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


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
        if c.flat_preserving:
            tail = ZeroDCConv(3 * c.scale ** 2, name="tail")
        else:
            tail = nn.Conv(3 * c.scale ** 2, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros, name="tail")
        out = tail(nn.relu(h))
        return base + (out if c.scale == 1 else pixel_shuffle(out, c.scale))


def param_shapes(config: ResidualCNNConfig):
    x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
    return jax.eval_shape(lambda a: ResidualCNN(config).init(jax.random.key(0), a), x)["params"]
