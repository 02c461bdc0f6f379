"""Degradations that happened in a camera, not in eq. (1): a dataset of real (GT, LQ) pairs such as GoPro's motion
blur (Nah et al., CVPR 2017: blurred frames averaged from a 240 fps video, with the middle sharp frame as GT).

A :class:`Captured` level stands beside the synthetic levels in a study: restorers decide by its ``task`` whether
they handle it, its ``label`` names the dataset, and it has no kernel (non-blind restorers cannot run on it). Its
LQ images come with the dataset (:func:`jaxir.data.paired_folders`), so calling it to synthesise one is an error.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError

GOPRO = "GoPro"
CAPTURED_TASKS = ("deblur", "sr", "denoise")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Captured(Degradation):
    """The degradation of a paired dataset: ``dataset`` names it, ``kind`` is the task its LQ images pose. The
    LQ has the GT's size (``scale`` stays 1); retention γ is reported as 1 (no known downsampling or noise)."""

    dataset: str = GOPRO
    kind: str = "deblur"

    def __post_init__(self):
        super().__post_init__()
        if self.kind not in CAPTURED_TASKS:
            raise JaxirInputError(f"captured degradation kind must be one of {CAPTURED_TASKS}, got {self.kind!r}")
        if (self.blur_sigma, self.blur_anisotropic, self.scale, self.noise, self.jpeg_quality) != (0, None, 1, 0, None):
            raise JaxirInputError(f"{self.dataset}: a captured degradation has no synthetic parameters")

    @property
    def task(self) -> str:
        return self.kind

    @property
    def label(self) -> str:
        return f"{self.dataset} (captured {self.kind})"

    def kernel(self) -> np.ndarray | None:
        return None

    def __call__(self, x, key=None, sample_ids=None):
        raise JaxirInputError(f"{self.label}: its degraded images come with the dataset; nothing to synthesise")
