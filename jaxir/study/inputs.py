"""What the study requires of its images, checked for all of them before the first cell runs.

A sweep over many images must never stop after hours of work for a reason knowable at the start (an unreadable
file, an image too small for a metric at some level), nor hide the second bad file behind the first. So every
image is loaded and measured up front, and the problems of all of them are reported together: the study then
either stops with that list, or (``skip=True``, ``jaxir study --skip-bad-images``) leaves those images out and
the report names them.

Size: the clean image is cropped (bottom/right) to a multiple of every level's scale; the cropped size must hold
one NIQE block (96×96, NIQE scores the restored image at that size) and, at every level, SSIM's 11×11 window
after :func:`crop_border` pixels are cut from each side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from jaxir.data.images import ImageRecord
from jaxir.degradations.pipeline import Degradation
from jaxir.errors import ImageLoadError, JaxirInputError
from jaxir.metrics.fidelity import SSIM_WINDOW
from jaxir.metrics.niqe import BLOCK as NIQE_BLOCK


@dataclasses.dataclass(frozen=True)
class BadImage:
    """An image the study cannot use: its file (or name, for an image given as an array) and why."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


def crop_border(level: Degradation) -> int:
    """Pixels cut from each side before PSNR/SSIM at ``level``: the scale for super-resolution (the SR
    literature's convention, BasicSR's ``crop_border``), 0 otherwise."""
    return int(round(level.scale)) if level.scale > 1 else 0


def min_side(levels: Sequence[Degradation]) -> int:
    """The smallest height and width a cropped clean image may have for every metric at every level."""
    return max(NIQE_BLOCK, *(SSIM_WINDOW + 2 * crop_border(level) for level in levels))


def size_problem(height: int, width: int, levels: Sequence[Degradation], crop_multiple: int) -> str | None:
    """Why an image of ``height``×``width`` cannot take part in a study of ``levels``, or None if it can."""
    need = min_side(levels)
    h, w = height - height % crop_multiple, width - width % crop_multiple
    if h >= need and w >= need:
        return None
    cropped = f" (cropped to a multiple of {crop_multiple}: {h}x{w})" if (h, w) != (height, width) else ""
    return (f"{height}x{width} pixels{cropped} is smaller than {need}x{need}, the least that NIQE's "
            f"{NIQE_BLOCK}x{NIQE_BLOCK} block and SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window after the crop border "
            "need at every level")


def screen_images(records: Sequence[ImageRecord], failures: Sequence[tuple[Path, ImageLoadError]],
                  levels: Sequence[Degradation], crop_multiple: int, skip: bool = False
                  ) -> tuple[list[ImageRecord], list[BadImage]]:
    """(the usable images, the bad ones: the files that failed to load, ``failures`` as
    :func:`jaxir.data.read_folder` returns them, and the images too small for ``levels``). With bad images and
    ``skip`` False, a :class:`JaxirInputError` lists them all at once."""
    bad = [BadImage(str(path), str(err).removeprefix(f"{path}: ")) for path, err in failures]
    usable = []
    for record in records:
        problem = size_problem(*record.image.shape[:2], levels, crop_multiple)
        if problem:
            bad.append(BadImage(record.source, problem))
        else:
            usable.append(record)
    if bad and not skip:
        raise JaxirInputError(f"{len(bad)} of {len(records) + len(failures)} images cannot be used, nothing was "
                              f"computed: {'; '.join(map(str, bad))}. Fix or remove them, or pass --skip-bad-images "
                              "(skip=True) to leave them out and list them in the report")
    if not usable:
        raise JaxirInputError(f"no usable images: {'; '.join(map(str, bad))}")
    return usable, bad
