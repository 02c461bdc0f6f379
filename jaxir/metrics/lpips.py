"""LPIPS v0.1, the Learned Perceptual Image Patch Similarity (lower is more similar).

Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018, eq. (1), as
``lpips.LPIPS(net=…, version="0.1")(x, y, normalize=True)`` of the ``lpips`` package 0.1.4 computes it:

1. images in [0, 1] → [−1, 1] (``2x − 1``, what ``normalize=True`` does), then ``ScalingLayer``:
   ``(v − shift) / scale`` per channel, shift = (−0.030, −0.088, −0.188), scale = (0.458, 0.448, 0.450);
2. the backbone's tapped ReLU maps ``f_k`` (:mod:`jaxir.models.lpips_backbones`), each unit-normalised along
   channels, ``f / (‖f‖₂ + 1e-10)`` (``lpips.normalize_tensor``);
3. per layer ``lin_k((f̂_k(x) − f̂_k(y))²)``, a 1×1 convolution with non-negative weights to one channel, averaged
   over the spatial positions; the distance is the sum over layers, one value per image.

The networks are a jaxir checkpoint of kind ``lpips`` (torchvision's ImageNet backbone + the ``lpips`` linear
weights), made by ``python -m checkpoints_conversion lpips`` and looked up as ``lpips_<net>`` under
:func:`jaxir.weights.checkpoints_home`. Computed in float32 with full-precision convolutions
(``jax.default_matmul_precision("highest")``), so values do not depend on an accelerator's TF32/bf16 default.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxir.checkpoints import load, read_config
from jaxir.errors import JaxirInputError
from jaxir.models.lpips_backbones import ARCHITECTURES, LPIPSConfig, LPIPSNetwork, min_input_size
from jaxir.weights import checkpoints_home
from jaxir.validation import as_rgb_batch, require_min_size

SHIFT = (-0.030, -0.088, -0.188)   # lpips.ScalingLayer
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10                   # lpips.normalize_tensor


def checkpoint_dir(net: str) -> Path:
    """Where :func:`load_lpips` looks for the ``net`` checkpoint: ``checkpoints_home() / f"lpips_{net}"``."""
    return checkpoints_home() / f"lpips_{net}"


def how_to_create(net: str) -> str:
    """The command that creates the checkpoint :func:`load_lpips` looks for."""
    arch = ARCHITECTURES[LPIPSConfig(net).net]
    return (f"download {arch.weights_url}, then run: python -m checkpoints_conversion lpips --net {net} "
            f"--backbone {arch.weights_file} --out {checkpoint_dir(net)}")


def check(net: str = "alex") -> str | None:
    """``None`` if the LPIPS ``net`` checkpoint exists, else why not and the command that creates it."""
    path = checkpoint_dir(LPIPSConfig(net).net)
    if (path / "config.json").is_file():
        return None
    return f"no LPIPS ({net}) checkpoint at {path}; {how_to_create(net)}"


@functools.cache
def _load(path: Path, net: str) -> tuple[LPIPSNetwork, dict]:
    kind, config = read_config(path)
    if kind != "lpips" or config.net != net:
        found = f"LPIPS ({config.net})" if kind == "lpips" else f"a {kind!r} checkpoint"
        raise JaxirInputError(f"{path} holds {found}, not LPIPS ({net}); {how_to_create(net)}")
    return load(path)


def load_lpips(net: str = "alex") -> tuple[LPIPSNetwork, dict]:
    """``(network, params)`` of the LPIPS ``net`` checkpoint (loaded once per path); raises
    :class:`~jaxir.errors.JaxirInputError` naming the command that creates it when it is missing."""
    reason = check(net)
    if reason is not None:
        raise JaxirInputError(reason)
    return _load(checkpoint_dir(net), net)


def _scaling_layer(x):
    """[0, 1] → [−1, 1] → ``(v − shift) / scale`` (steps 1 of the module docstring)."""
    v = 2.0 * x - 1.0
    return (v - jnp.asarray(SHIFT, jnp.float32)) / jnp.asarray(SCALE, jnp.float32)


def _unit_normalise(f):
    return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + NORM_EPS)


def _distance(network: LPIPSNetwork, x, y):
    """Steps 1–3 for NHWC batches x, y in [0, 1]: (N,) distances. Both batches go through the backbone at once
    (XLA may then round the two halves differently: identical images give ~1e-16, not the exact 0 of ``lpips``)."""
    n = x.shape[0]
    maps = network(_scaling_layer(jnp.concatenate([x, y])))
    diffs = [(_unit_normalise(f[:n]) - _unit_normalise(f[n:])) ** 2 for f in maps]
    return sum(jnp.mean(d, axis=(1, 2, 3)) for d in network.heads(diffs))


@functools.partial(jax.jit, static_argnames="config")
def _lpips(config: LPIPSConfig, params, x, y):
    return LPIPSNetwork(config).apply({"params": params}, x, y, method=_distance)


def lpips(x, y, net: str = "alex", *, weights: tuple[LPIPSNetwork, dict] | None = None):
    """LPIPS v0.1 distance between RGB images in [0, 1]: HWC (→ scalar) or NHWC batches (→ one per image pair).

    ``net`` picks the checkpoint loaded by :func:`load_lpips`; ``weights`` = ``(network, params)`` (e.g. from
    ``jaxir.load``) uses those instead. Images must be at least 31 (alex), 16 (vgg) or 17 (squeeze) pixels a side.
    """
    network, params = load_lpips(net) if weights is None else weights
    config = network.config
    xb, batched = as_rgb_batch(x, "lpips: first image")
    yb, _ = as_rgb_batch(y, "lpips: second image")
    if xb.shape != yb.shape:
        raise JaxirInputError(f"lpips: images differ in shape, {tuple(x.shape)} vs {tuple(y.shape)}")
    side = min_input_size(config.net)
    require_min_size(xb, side, side, f"LPIPS ({config.net})")
    with jax.default_matmul_precision("highest"):
        out = _lpips(config, params, xb.astype(jnp.float32), yb.astype(jnp.float32))
    return out if batched else out[0]
