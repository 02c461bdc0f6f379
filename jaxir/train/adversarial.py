"""LDM's adversarial term for the autoencoder (Rombach et al. 2022, sec. 3 and app. G; CompVis/latent-diffusion
``ldm/modules/losses/contperceptual.py`` ``LPIPSWithDiscriminator`` on taming-transformers' ``NLayerDiscriminator``,
Esser et al. 2021, eq. 7). It is what makes an LDM decoder sharp rather than the mean of the plausible images.

* :class:`PatchDiscriminator`, pix2pix's PatchGAN (Isola et al. 2017): a 4×4 stride-2 convolution + LeakyReLU(0.2),
  then ``layers − 1`` stride-2 4×4 convolutions with BatchNorm + LeakyReLU (widths ``features · min(2^n, 8)``), one
  stride-1 4×4 convolution with BatchNorm + LeakyReLU, and a stride-1 4×4 convolution to one logit per patch;
  padding 1 everywhere. Initialisation (taming ``weights_init``): convolution kernels N(0, 0.02²), BatchNorm scales
  N(1, 0.02²) and offsets 0; convolution biases PyTorch's default U(±1/√fan_in). BatchNorm normalises with the
  statistics of the batch it is called on (PyTorch's training mode): the discriminator only ever runs in training,
  so running averages would never be read and are not kept. Real and reconstructed batches are separate calls, as
  in LDM.
* :func:`hinge_d_loss`, the discriminator's objective: ½(mean relu(1 − D(x)) + mean relu(1 + D(x̂))).
* The generator term −mean D(x̂), weighted by :func:`adaptive_weight`
  ``λ = ‖∇_W L_rec‖ / (‖∇_W L_G‖ + 10⁻⁴)`` clamped to [0, 10⁴] and not differentiated, times ``disc_weight``, where W
  is the decoder's last kernel (``decoder.conv_out``); both adversarial terms are switched off before
  ``disc_start`` (taming ``adopt_weight``).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

BATCH_NORM_EPS = 1e-5   # torch.nn.BatchNorm2d
LEAKY_SLOPE = 0.2
GRAD_EPS = 1e-4         # LPIPSWithDiscriminator.calculate_adaptive_weight
MAX_WEIGHT = 1e4


def _torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class BatchStatsNorm(nn.Module):
    """BatchNorm over (N, H, W) with the batch's own mean and biased variance (PyTorch's training mode)."""

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", lambda key, shape: 1.0 + 0.02 * jax.random.normal(key, shape), (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(var + BATCH_NORM_EPS) * scale + bias


class PatchDiscriminator(nn.Module):
    """The PatchGAN of the module docstring on NHWC images in [−1, 1]; logits (N, h, w, 1), one per patch."""

    features: int = 64
    layers: int = 3

    @nn.compact
    def __call__(self, x):
        def conv(h, width, stride, bias, name):
            fan_in = h.shape[-1] * 16
            return nn.Conv(width, (4, 4), strides=stride, padding=((1, 1), (1, 1)), use_bias=bias,
                           kernel_init=nn.initializers.normal(0.02), bias_init=_torch_bias_init(fan_in),
                           name=name)(h)

        h = nn.leaky_relu(conv(x, self.features, 2, True, "conv_0"), LEAKY_SLOPE)
        for n in range(1, self.layers + 1):
            width = self.features * min(2 ** n, 8)
            h = conv(h, width, 2 if n < self.layers else 1, False, f"conv_{n}")
            h = nn.leaky_relu(BatchStatsNorm(name=f"norm_{n}")(h), LEAKY_SLOPE)
        return conv(h, 1, 1, True, f"conv_{self.layers + 1}")


def hinge_d_loss(logits_real, logits_fake):
    """The discriminator's hinge loss, ½(mean relu(1 − D(x)) + mean relu(1 + D(x̂))) (taming ``hinge_d_loss``)."""
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def adaptive_weight(rec_grad, gan_grad, disc_weight: float):
    """``disc_weight · clamp(‖∇_W L_rec‖ / (‖∇_W L_G‖ + 10⁻⁴), 0, 10⁴)``, not differentiated (module docstring)."""
    ratio = jnp.linalg.norm(rec_grad.ravel()) / (jnp.linalg.norm(gan_grad.ravel()) + GRAD_EPS)
    return jax.lax.stop_gradient(jnp.clip(ratio, 0.0, MAX_WEIGHT)) * disc_weight
