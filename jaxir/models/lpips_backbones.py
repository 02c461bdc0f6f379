"""The networks of LPIPS v0.1: ImageNet backbones cut at their ReLU outputs, and LPIPS's linear heads.

Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018, as released in
the ``lpips`` package 0.1.4 (``lpips/pretrained_networks.py``, ``NetLinLayer`` in ``lpips/lpips.py``) on top of
torchvision's ``alexnet``, ``vgg16`` and ``squeezenet1_1`` (``torchvision/models/{alexnet,vgg,squeezenet}.py``):

* A backbone is torchvision's ``features`` Sequential, layer for layer (:data:`ARCHITECTURES`), run up to the last
  layer LPIPS uses; the outputs after the layers in ``taps`` are the feature maps LPIPS compares: AlexNet
  ``relu1…relu5`` (64, 192, 384, 256, 256 channels), VGG16 ``relu1_2…relu5_3`` (64, 128, 256, 512, 512),
  SqueezeNet 1.1 ``relu1…relu7`` (64, 128, 256, 384, 384, 512, 512).
* PyTorch-exact: zero padding as given per convolution; max-pooling without padding and with the floor output size
  ``(n − k) // s + 1``, except SqueezeNet 1.1's three 3×3/2 pools, which have ``ceil_mode=True``: one more output
  row/column whenever ``(n − 3)`` is odd, its window cut at the bottom/right edge (:func:`pool_output_size`).
* SqueezeNet's ``Fire`` module: ``s = ReLU(squeeze 1×1)``, then ``cat(ReLU(expand1x1(s)), ReLU(expand3x3(s)))``
  along channels (``expand3x3`` padded by 1).
* LPIPS's heads ``NetLinLayer``: one 1×1 convolution per tapped layer, C_k → 1 channels, no bias (its dropout is
  inactive at inference). How the heads are used — the metric itself — is :mod:`jaxir.metrics.lpips`.

Parameter paths mirror the PyTorch keys: torchvision ``features.6.squeeze.weight`` ↔
``backbone/features_6/squeeze/kernel``, lpips ``lin2.model.1.weight`` ↔ ``lin_2/kernel``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxir.errors import JaxirInputError


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """``nn.Conv2d(…, features, kernel, stride, padding)`` with bias."""

    features: int
    kernel: int
    stride: int = 1
    padding: int = 0


@dataclasses.dataclass(frozen=True)
class ReluLayer:
    """``nn.ReLU``."""


@dataclasses.dataclass(frozen=True)
class PoolLayer:
    """``nn.MaxPool2d(window, stride, ceil_mode=…)`` without padding."""

    window: int
    stride: int
    ceil_mode: bool = False


@dataclasses.dataclass(frozen=True)
class FireLayer:
    """torchvision's ``Fire(inplanes, squeeze, expand1x1, expand3x3)``; ends in ReLUs."""

    squeeze: int
    expand1x1: int
    expand3x3: int


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A torchvision ``features`` Sequential and the layer indices after which LPIPS taps it."""

    layers: tuple
    taps: tuple[int, ...]
    weights_url: str   # torchvision's ImageNet weights (IMAGENET1K_V1) that LPIPS uses

    @property
    def tap_channels(self) -> tuple[int, ...]:
        channels, out = 3, []
        for i, layer in enumerate(self.layers[: self.taps[-1] + 1]):
            if isinstance(layer, ConvLayer):
                channels = layer.features
            elif isinstance(layer, FireLayer):
                channels = layer.expand1x1 + layer.expand3x3
            if i in self.taps:
                out.append(channels)
        return tuple(out)

    @property
    def weights_file(self) -> str:
        return self.weights_url.rsplit("/", 1)[-1]


RELU = ReluLayer()


def _vgg16_layers() -> tuple:
    """torchvision ``cfgs["D"]``: 3×3 convolutions (padding 1) with ReLUs, a 2×2/2 pool after each block."""
    layers = []
    for block in ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)):
        for width in block:
            layers += [ConvLayer(width, 3, 1, 1), RELU]
        layers.append(PoolLayer(2, 2))
    return tuple(layers)


_ALEX_LAYERS = (ConvLayer(64, 11, 4, 2), RELU, PoolLayer(3, 2), ConvLayer(192, 5, 1, 2), RELU, PoolLayer(3, 2),
                ConvLayer(384, 3, 1, 1), RELU, ConvLayer(256, 3, 1, 1), RELU, ConvLayer(256, 3, 1, 1), RELU,
                PoolLayer(3, 2))
_SQUEEZE_POOL = PoolLayer(3, 2, ceil_mode=True)
_SQUEEZE_LAYERS = (ConvLayer(64, 3, 2), RELU, _SQUEEZE_POOL, FireLayer(16, 64, 64), FireLayer(16, 64, 64),
                   _SQUEEZE_POOL, FireLayer(32, 128, 128), FireLayer(32, 128, 128), _SQUEEZE_POOL,
                   FireLayer(48, 192, 192), FireLayer(48, 192, 192), FireLayer(64, 256, 256), FireLayer(64, 256, 256))

ARCHITECTURES = {
    # lpips.pretrained_networks slices: alexnet [0,2) [2,5) [5,8) [8,10) [10,12); vgg16 [0,4) [4,9) [9,16)
    # [16,23) [23,30); squeezenet [0,2) [2,5) [5,8) [8,10) [10,11) [11,12) [12,13) — a tap ends each slice.
    "alex": Architecture(_ALEX_LAYERS, (1, 4, 7, 9, 11),
                         "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": Architecture(_vgg16_layers(), (3, 8, 15, 22, 29),
                        "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "squeeze": Architecture(_SQUEEZE_LAYERS, (1, 4, 7, 9, 10, 11, 12),
                            "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"),
}
# the channel counts of lpips.LPIPS.chns, which its linear heads were trained for
LPIPS_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512),
                  "squeeze": (64, 128, 256, 384, 384, 512, 512)}
assert all(ARCHITECTURES[n].tap_channels == c for n, c in LPIPS_CHANNELS.items())


def pool_output_size(n: int, window: int, stride: int, ceil_mode: bool) -> int:
    """PyTorch's ``MaxPool2d`` output length without padding (``pooling_output_shape``): ``⌊(n − k)/s⌋ + 1``, or
    with ``ceil_mode`` ``⌈(n − k)/s⌉ + 1`` less one if the last window would start past the input; ≤ 0 means
    PyTorch refuses the input. A ceil-mode window may hang over the edge, even when ``n < k``."""
    if not ceil_mode:
        return (n - window) // stride + 1
    out = -(-(n - window) // stride) + 1
    return out - 1 if (out - 1) * stride >= n else out


def _layer_output_size(layer, n: int) -> int:
    if isinstance(layer, ConvLayer):
        padded = n + 2 * layer.padding
        return 0 if padded < layer.kernel else (padded - layer.kernel) // layer.stride + 1
    if isinstance(layer, PoolLayer):
        return pool_output_size(n, layer.window, layer.stride, layer.ceil_mode)
    return n


def min_input_size(net: str) -> int:
    """The smallest image side for which every tapped feature map of ``net`` is non-empty."""
    layers = ARCHITECTURES[net].layers[: ARCHITECTURES[net].taps[-1] + 1]
    side = 1
    while True:
        n = side
        for layer in layers:
            n = _layer_output_size(layer, n) if n > 0 else 0
        if n > 0:
            return side
        side += 1


def max_pool(x, window: int, stride: int, ceil_mode: bool):
    """``F.max_pool2d(x, window, stride, ceil_mode=…)`` on NHWC; a ceil-mode partial window is padded with −∞."""
    pads = []
    for n in x.shape[1:3]:
        out = pool_output_size(n, window, stride, ceil_mode)
        pads.append((0, max((out - 1) * stride + window - n, 0)))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1),
                                 ((0, 0), *pads, (0, 0)))


def _conv(features: int, kernel: int, stride: int = 1, padding: int = 0, name: str | None = None) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((padding, padding),) * 2,
                   name=name)


class Fire(nn.Module):
    """torchvision ``squeezenet.Fire`` (see the module docstring)."""

    layer: FireLayer

    @nn.compact
    def __call__(self, x):
        s = nn.relu(_conv(self.layer.squeeze, 1, name="squeeze")(x))
        return jnp.concatenate([nn.relu(_conv(self.layer.expand1x1, 1, name="expand1x1")(s)),
                                nn.relu(_conv(self.layer.expand3x3, 3, padding=1, name="expand3x3")(s))], axis=-1)


class Backbone(nn.Module):
    """torchvision ``features`` of ``net`` up to LPIPS's last tap; returns the tapped maps (NHWC), shallow first."""

    net: str

    @nn.compact
    def __call__(self, x):
        arch = ARCHITECTURES[self.net]
        taps = []
        for i, layer in enumerate(arch.layers[: arch.taps[-1] + 1]):
            if isinstance(layer, ConvLayer):
                x = _conv(layer.features, layer.kernel, layer.stride, layer.padding, name=f"features_{i}")(x)
            elif isinstance(layer, ReluLayer):
                x = nn.relu(x)
            elif isinstance(layer, PoolLayer):
                x = max_pool(x, layer.window, layer.stride, layer.ceil_mode)
            else:
                x = Fire(layer, name=f"features_{i}")(x)
            if i in arch.taps:
                taps.append(x)
        return tuple(taps)


@dataclasses.dataclass(frozen=True)
class LPIPSConfig:
    """Which LPIPS v0.1 network: ``net`` is ``"alex"``, ``"vgg"`` or ``"squeeze"`` (the ``lpips.LPIPS(net=…)``)."""

    net: str = "alex"

    def __post_init__(self):
        if self.net not in ARCHITECTURES:
            raise JaxirInputError(f"unknown LPIPS network {self.net!r}; choose one of {', '.join(ARCHITECTURES)}")

    @classmethod
    def alex(cls) -> LPIPSConfig:
        """AlexNet, the ``lpips`` default (5 layers)."""
        return cls("alex")

    @classmethod
    def vgg(cls) -> LPIPSConfig:
        """VGG16 (5 layers), the usual choice as a training loss."""
        return cls("vgg")

    @classmethod
    def squeeze(cls) -> LPIPSConfig:
        """SqueezeNet 1.1 (7 layers)."""
        return cls("squeeze")

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES[self.net]


class LPIPSNetwork(nn.Module):
    """The learned parts of LPIPS: ``__call__`` gives the backbone's tapped maps of a network input; ``heads``
    applies ``lin_k`` to the k-th of per-layer maps (N, H_k, W_k, C_k) → (N, H_k, W_k, 1)."""

    config: LPIPSConfig

    def setup(self):
        self.backbone = Backbone(self.config.net)
        self.lin = [nn.Conv(1, (1, 1), use_bias=False) for _ in self.config.architecture.taps]

    def __call__(self, x):
        return self.backbone(x)

    def heads(self, maps):
        if len(maps) != len(self.lin):
            raise JaxirInputError(f"LPIPS {self.config.net}: {len(maps)} maps for {len(self.lin)} heads")
        return [lin(m) for lin, m in zip(self.lin, maps)]


def _init_everything(network: LPIPSNetwork, x):
    return network.heads(network(x))


def param_shapes(config: LPIPSConfig):
    """The parameter tree of :class:`LPIPSNetwork` as ShapeDtypeStructs (``jax.eval_shape``, nothing allocated)."""
    side = min_input_size(config.net)
    x = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    return jax.eval_shape(lambda a: LPIPSNetwork(config).init(jax.random.key(0), a, method=_init_everything), x)[
        "params"]
