"""Image folders and paired GT/LQ folders (the GoPro layout: ``<split>/<scene>/{sharp,blur}/*.png``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from jaxir.data.images import IMAGE_SUFFIXES, ImageRecord, load_image
from jaxir.errors import ImageLoadError, JaxirInputError


GOPRO_HOW = ("download GOPRO_Large.zip (https://seungjunnah.github.io/Datasets/gopro) and pass --gopro "
             "GOPRO_Large/test (its <scene>/sharp and <scene>/blur frames are the pairs)")


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` in a stable (sorted) order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise JaxirInputError(f"{folder}: not a folder")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise JaxirInputError(f"{folder}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _name(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def image_folder(folder: str | os.PathLike, alpha: str = "error", max_pixels: int | None = None
                 ) -> Iterator[ImageRecord]:
    """Every image under ``folder`` as an :class:`ImageRecord` named by its relative path without suffix."""
    root = Path(folder)
    for path in list_images(root):
        yield ImageRecord(_name(path, root), load_image(path, alpha=alpha, max_pixels=max_pixels), str(path))


def read_folder(folder: str | os.PathLike, alpha: str = "error", max_pixels: int | None = None
                ) -> tuple[list[ImageRecord], list[tuple[Path, ImageLoadError]]]:
    """Every image under ``folder`` like :func:`image_folder`, reading on past the files that fail, so one
    bad file does not hide the others: (the images that loaded, (file, its error) for each one that did not)."""
    root = Path(folder)
    records, failures = [], []
    for path in list_images(root):
        try:
            records.append(ImageRecord(_name(path, root), load_image(path, alpha=alpha, max_pixels=max_pixels),
                                       str(path)))
        except ImageLoadError as err:
            failures.append((path, err))
    return records, failures


def paired_folders(folder: str | os.PathLike, gt_dir: str = "sharp", lq_dir: str = "blur",
                   alpha: str = "error", max_pixels: int | None = None) -> Iterator[tuple[ImageRecord, ImageRecord]]:
    """(GT, LQ) pairs matched by relative path.

    Two layouts are recognised: ``folder/{gt_dir,lq_dir}/...`` (one pair of folders) and GoPro's
    ``folder/<scene>/{gt_dir,lq_dir}/...`` (a pair of folders per scene). Every GT must have its LQ and vice
    versa, and each pair must have equal sizes; otherwise a clear error names the files.
    """
    root = Path(folder)
    if (root / gt_dir).is_dir():
        roots = [root]
    else:
        roots = sorted(p for p in root.iterdir() if (p / gt_dir).is_dir()) if root.is_dir() else []
    if not roots:
        raise JaxirInputError(f"{root}: expected '{gt_dir}/' and '{lq_dir}/' folders, directly or per scene")
    for scene in roots:
        gts = {_name(p, scene / gt_dir): p for p in list_images(scene / gt_dir)}
        lqs = {_name(p, scene / lq_dir): p for p in list_images(scene / lq_dir)}
        if gts.keys() != lqs.keys():
            missing = sorted(gts.keys() ^ lqs.keys())[:5]
            raise JaxirInputError(f"{scene}: '{gt_dir}' and '{lq_dir}' do not pair up; unmatched: {missing}")
        for key in sorted(gts):
            name = key if scene == root else f"{scene.name}/{key}"
            gt = load_image(gts[key], alpha=alpha, max_pixels=max_pixels)
            lq = load_image(lqs[key], alpha=alpha, max_pixels=max_pixels)
            if gt.shape != lq.shape:
                raise JaxirInputError(f"{name}: GT {gt.shape[:2]} and LQ {lq.shape[:2]} sizes differ")
            yield ImageRecord(name, gt, str(gts[key])), ImageRecord(name, lq, str(lqs[key]))
