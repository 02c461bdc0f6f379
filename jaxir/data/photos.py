"""The default evaluation set: real photographs that ship inside scikit-image (no download).

These photos are for evaluation only; training code must never see them (see ``jaxir.train``).
``camera`` is grayscale and is replicated to RGB like any grayscale file.
"""

from __future__ import annotations

import numpy as np

from jaxir.data.images import ImageRecord
from jaxir.errors import JaxirInputError

# name -> scikit-image loader; all are bundled with scikit-image (no pooch download).
BUNDLED_PHOTOS = {
    "astronaut": "astronaut",
    "camera": "camera",
    "chelsea": "chelsea",
    "coffee": "coffee",
    "hubble": "hubble_deep_field",
    "ihc": "immunohistochemistry",
    "motorcycle": "stereo_motorcycle",
    "retina": "retina",
    "rocket": "rocket",
}


def _load(loader: str) -> np.ndarray:
    import skimage.data

    arr = getattr(skimage.data, loader)()
    if isinstance(arr, tuple):  # stereo_motorcycle returns (left, right, disparity)
        arr = arr[0]
    arr = np.asarray(arr, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return arr


def bundled_photos(names: list[str] | tuple[str, ...] | None = None) -> list[ImageRecord]:
    """The bundled photos (all, or those named), float32 HWC RGB in [0, 1]."""
    names = list(BUNDLED_PHOTOS) if names is None else list(names)
    unknown = [n for n in names if n not in BUNDLED_PHOTOS]
    if unknown:
        raise JaxirInputError(f"unknown bundled photos {unknown}; choose from {sorted(BUNDLED_PHOTOS)}")
    return [ImageRecord(n, _load(BUNDLED_PHOTOS[n]), f"skimage.data.{BUNDLED_PHOTOS[n]}") for n in names]
