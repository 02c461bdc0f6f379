"""The study's Alignment metric, eqs. (13)–(15): semantic distance in DINOv2's embedding space.

``S(a, b) = 1 − cos(φ(a), φ(b))`` (eq. 13), φ the CLS token of a DINOv2 ViT after its final norm
(``tokens="cls"``); the patch variant (``tokens="patch"``) is the mean over the patch grid of ``1 − cos`` of
corresponding patch tokens. S is 0 for equal embeddings, symmetric, and at most 2.

* low degradation, eq. (14): ``S(I_x, Î_x)`` — clean image against restored image;
* high degradation, eq. (15): ``S(D(Î_x), I_y)`` — the restored image degraded again with the same
  :class:`~jaxir.degradations.Degradation` D *and the same key and sample ids* (so the same noise) against the
  degraded input: a restoration that explains the observation scores 0 even when it departs from ``I_x``.

Preprocessing (:func:`jaxir.models.dinov2.preprocess`): shorter side to ``resolution`` (default 224, a multiple
of 14) with antialiased bicubic resizing, centre crop ``resolution × resolution``, ImageNet mean/std — the
tensor form of torchvision's ``Resize``/``CenterCrop``/``Normalize``. Unlike DINOv2's evaluation transform (resize
256, crop 224) the whole shorter side is kept, so small images compared at their degraded size lose nothing.

Weights: the official torch-hub files converted with ``python -m checkpoints_conversion dinov2``, found at
``checkpoints_home() / f"dinov2_{preset}"`` (:func:`check` says what to run when they are missing).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError
from jaxir.models.dinov2 import DINOv2, DINOv2Config, preprocess, weights_url
from jaxir.models.dinov2 import preset as dinov2_preset
from jaxir.validation import as_rgb_batch

DEFAULT_PRESET = "vitb14"
DEFAULT_RESOLUTION = 224
TOKENS = ("cls", "patch")
COSINE_EPS = 1e-8   # torch.nn.functional.cosine_similarity's clamp on the norms


@dataclasses.dataclass(frozen=True, eq=False)
class AlignmentModel:
    """A DINOv2 network and its parameters, as :func:`load_alignment_model` returns them."""

    config: DINOv2Config
    params: dict


def alignment_checkpoint(preset: str = DEFAULT_PRESET) -> Path:
    """Where the converted weights of ``preset`` are looked up: ``checkpoints_home() / f"dinov2_{preset}"``."""
    from jaxir.weights import checkpoints_home

    dinov2_preset(preset)
    return checkpoints_home() / f"dinov2_{preset}"


def _how_to_get(preset: str, path: Path) -> str:
    file = weights_url(preset).rsplit("/", 1)[1]
    return (f"download {weights_url(preset)} and run: python -m checkpoints_conversion dinov2 {file} "
            f"--preset {preset} --out {path}")


def check(preset: str = DEFAULT_PRESET) -> str | None:
    """None when the weights of ``preset`` are converted, else why the metric is unavailable and how to fix it."""
    path = alignment_checkpoint(preset)
    if (path / "config.json").is_file():
        return None
    return f"Alignment (DINOv2 {preset}): no checkpoint at {path}; {_how_to_get(preset, path)}"


def load_alignment_model(preset: str = DEFAULT_PRESET, path: str | os.PathLike | None = None) -> AlignmentModel:
    """The DINOv2 network for the metric, from ``path`` or the default location of ``preset``."""
    from jaxir.checkpoints import load, read_config

    path = Path(path) if path is not None else alignment_checkpoint(preset)
    if not (path / "config.json").is_file():
        raise JaxirInputError(f"Alignment needs DINOv2 weights, none at {path}; {_how_to_get(preset, path)}")
    kind, _ = read_config(path)
    if kind != "dinov2":
        raise JaxirInputError(f"{path}: a {kind!r} checkpoint, Alignment needs a 'dinov2' one")
    model, params = load(path)
    return AlignmentModel(model.config, params)


@functools.partial(jax.jit, static_argnames=("config", "resolution"))
def _embed(params, images, config: DINOv2Config, resolution: int):
    return DINOv2(config).apply({"params": params}, preprocess(images, resolution))


def _one_minus_cosine(a, b):
    """``1 − cos`` over the last axis, norms clamped at ``COSINE_EPS``."""
    unit = lambda z: z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), COSINE_EPS)  # noqa: E731
    return 1.0 - jnp.sum(unit(a) * unit(b), axis=-1)


def embeddings(model: AlignmentModel, images, resolution: int = DEFAULT_RESOLUTION):
    """``(cls (B, D), patches (B, r/14, r/14, D))`` of an NHWC batch in [0, 1] after :func:`preprocess`."""
    batch, _ = as_rgb_batch(images, "alignment: image")
    return _embed(model.params, batch.astype(jnp.float32), model.config, int(resolution))


def alignment(model: AlignmentModel, a, b, *, tokens: str = "cls", resolution: int = DEFAULT_RESOLUTION):
    """S(a, b) of eq. (13) per image: HWC inputs → a scalar, NHWC → (B,). The two may differ in size."""
    if tokens not in TOKENS:
        raise JaxirInputError(f"tokens must be one of {TOKENS}, got {tokens!r}")
    a_batch, batched = as_rgb_batch(a, "alignment: first image")
    b_batch, _ = as_rgb_batch(b, "alignment: second image")
    if a_batch.shape[0] != b_batch.shape[0]:
        raise JaxirInputError(f"alignment: batches differ in size, {a_batch.shape[0]} vs {b_batch.shape[0]}")
    (cls_a, patch_a), (cls_b, patch_b) = (embeddings(model, x, resolution) for x in (a_batch, b_batch))
    s = _one_minus_cosine(cls_a, cls_b) if tokens == "cls" else _one_minus_cosine(patch_a, patch_b).mean(axis=(1, 2))
    return s if batched else s[0]


def alignment_low_degradation(model: AlignmentModel, clean, restored, **kwargs):
    """Eq. (14): ``S(I_x, Î_x)`` (keyword options as :func:`alignment`)."""
    return alignment(model, clean, restored, **kwargs)


def alignment_high_degradation(model: AlignmentModel, restored, degraded, degradation: Degradation,
                               key: jax.Array | None = None, sample_ids=None, **kwargs):
    """Eq. (15): ``S(D(Î_x), I_y)``, D applied with the ``key`` and ``sample_ids`` that produced ``degraded``
    (keyword options as :func:`alignment`)."""
    redegraded = degradation(jnp.asarray(restored), key, sample_ids)
    if redegraded.shape != jnp.shape(degraded):
        raise JaxirInputError(f"alignment: D(restored) has shape {tuple(redegraded.shape)}, the degraded input "
                              f"{tuple(jnp.shape(degraded))}; the restored image must have the clean image's size")
    return alignment(model, redegraded, degraded, **kwargs)
