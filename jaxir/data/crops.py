"""Training crops from a set of clean images: a user folder or a tensorflow-datasets dataset.

:func:`training_images` reads the images (8-bit RGB kept in memory as uint8) from ``folder:PATH`` (or a plain
path; :func:`jaxir.data.image_folder`) or ``tfds:NAME[:SPLIT]`` (``tfds.load``; the ``hr`` feature where the
dataset has one, as DIV2K does, else ``image``). :class:`RandomCrops` draws a batch of square crops for a training
step as a pure function of ``(seed, step)``: each crop takes an image uniformly at random, a uniform top-left
corner, and one of the 8 flips/rotations of BasicSR's ``augment(hflip=True, rotation=True)`` (horizontal flip,
vertical flip, transpose, each with probability ½).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from jaxir.data.folders import read_folder
from jaxir.data.images import to_uint8
from jaxir.data.tfds import import_tfds
from jaxir.errors import JaxirInputError


@dataclass(frozen=True)
class TrainingImages:
    """uint8 RGB images, their names, and where they came from (``spec``)."""

    spec: str
    names: tuple[str, ...]
    images: tuple[np.ndarray, ...]

    def digest(self) -> str:
        """sha256 over every image's shape and pixels, in order: identifies the training set in provenance."""
        h = hashlib.sha256()
        for image in self.images:
            h.update(np.asarray(image.shape, np.int64).tobytes())
            h.update(image.tobytes())
        return h.hexdigest()

    def describe(self) -> str:
        pixels = sum(image.shape[0] * image.shape[1] for image in self.images)
        return f"{self.spec}: {len(self.images)} images, {pixels / 1e6:.1f} Mpx, sha256 {self.digest()[:16]}"


def _tfds_images(name: str, split: str, data_dir, download: bool):
    tfds = import_tfds(f"tfds:{name}")
    try:
        dataset, info = tfds.load(name, split=split, data_dir=None if data_dir is None else os.fspath(data_dir),
                                  download=download, with_info=True)
    except Exception as err:  # noqa: BLE001 -- tfds raises many kinds; the user needs the one line
        raise JaxirInputError(f"tfds:{name}:{split} could not be loaded: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None
    feature = next((f for f in ("hr", "image") if f in info.features), None)
    if feature is None:
        raise JaxirInputError(f"tfds:{name} has no 'hr' or 'image' feature (it has {', '.join(info.features)})")
    for i, example in enumerate(tfds.as_numpy(dataset)):
        image = example[feature]
        if image.ndim != 3 or image.shape[-1] != 3:
            raise JaxirInputError(f"tfds:{name}:{split} example {i}: '{feature}' has shape {image.shape}, "
                                  "not an RGB image")
        yield f"{name}:{split}:{i}", image.astype(np.uint8)


def training_images(spec: str, *, min_size: int, data_dir=None, download: bool = True,
                    alpha: str = "error", max_pixels: int | None = None) -> TrainingImages:
    """The clean images of ``spec`` (module docstring), each at least ``min_size`` pixels on both sides. Every
    image is checked before training starts, and all the unusable ones are named in one error."""
    if spec.startswith("tfds:"):
        name, _, split = spec[len("tfds:"):].partition(":")
        pairs = list(_tfds_images(name, split or "train", data_dir, download))
    else:
        folder = spec[len("folder:"):] if spec.startswith("folder:") else spec
        if not os.path.isdir(folder):
            raise JaxirInputError(f"training data {spec!r} is neither a folder nor tfds:NAME[:SPLIT]")
        records, failures = read_folder(folder, alpha=alpha, max_pixels=max_pixels)
        if failures:
            raise JaxirInputError(f"training data {spec!r}: {len(failures)} unreadable images: "
                                  f"{'; '.join(str(err) for _, err in failures)}")
        pairs = [(record.name, to_uint8(record.image)) for record in records]
    if not pairs:
        raise JaxirInputError(f"training data {spec!r} holds no images")
    small = [f"training image {name} is {image.shape[0]}×{image.shape[1]}" for name, image in pairs
             if min(image.shape[:2]) < min_size]
    if small:
        raise JaxirInputError(f"{'; '.join(small)}, smaller than the {min_size}-pixel crop")
    names, images = zip(*pairs)
    return TrainingImages(spec, tuple(names), tuple(images))


class RandomCrops:
    """``crops(step)`` → (batch, size, size, 3) float32 in [0, 1] from ``images`` (module docstring); the same
    ``(seed, step)`` always gives the same crops."""

    def __init__(self, images: TrainingImages, batch: int, size: int, seed: int):
        self.images, self.batch, self.size, self.seed = images.images, batch, size, seed

    def __call__(self, step: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, int(step)))
        out = np.empty((self.batch, self.size, self.size, 3), np.uint8)
        for b in range(self.batch):
            image = self.images[rng.integers(len(self.images))]
            top = rng.integers(image.shape[0] - self.size + 1)
            left = rng.integers(image.shape[1] - self.size + 1)
            crop = image[top:top + self.size, left:left + self.size]
            hflip, vflip, transpose = rng.random(3) < 0.5
            crop = crop[:, ::-1] if hflip else crop
            crop = crop[::-1] if vflip else crop
            out[b] = crop.transpose(1, 0, 2) if transpose else crop
        return out.astype(np.float32) / 255.0
