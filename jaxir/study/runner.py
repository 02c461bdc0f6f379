"""Running the sweep: every (image, degradation level, restorer) cell once, resumable.

Randomness: one base key per study; a cell's noise key is ``fold_in(fold_in(key, crc32(level)), crc32(image))``,
so a cell's result depends on neither the order nor the subset of cells that run.
Conventions: the clean image is cropped (bottom/right) to a multiple of the largest scale, explicitly, and its
size recorded; the restored image is quantised to 8 bits as if saved; PSNR/SSIM use the Y channel with
``crop_border`` = the scale (the SR literature's convention; 0 for deblurring); NIQE uses the RGB output.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from jaxir import atomic
from jaxir.data.images import ImageRecord, crop_to_multiple, save_image
from jaxir.degradations.pipeline import Degradation, study_levels
from jaxir.errors import JaxirInputError
from jaxir.metrics import niqe, psnr, ssim
from jaxir.metrics.color import quantize_uint8
from jaxir.restorers.base import Restorer
from jaxir.study.inputs import crop_border, screen_images
from jaxir.study.results import ResultsWriter, cell_key, read_results

RESULTS_FILE = "results.csv"
CONFIG_FILE = "study.json"


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What a study sweeps; stored as ``study.json`` so a resumed run can refuse different settings."""

    images: tuple[str, ...]
    levels: tuple[Degradation, ...] = study_levels()
    restorers: tuple[str, ...] = ("bicubic", "wiener")
    seed: int = 0

    @property
    def crop_multiple(self) -> int:
        return math.lcm(*(int(round(d.scale)) for d in self.levels))

    def to_json(self) -> dict:
        return {"images": list(self.images), "levels": [d.to_dict() for d in self.levels],
                "restorers": list(self.restorers), "seed": self.seed, "crop_multiple": self.crop_multiple,
                "metrics": "psnr/ssim: Y channel, crop_border=scale, 8-bit output; niqe: RGB output"}


def _cell_key(seed: int, level: Degradation, image: str) -> jax.Array:
    key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(level.label.encode()))
    return jax.random.fold_in(key, zlib.crc32(image.encode()))


def _check_config(out: Path, config: StudyConfig) -> None:
    """Refuse a folder holding a study of other settings; record these settings (atomically). A damaged
    ``study.json`` cannot say which settings the finished cells used, so it is refused with what to delete."""
    path = out / CONFIG_FILE
    wanted = config.to_json()
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:   # cut, emptied, not UTF-8
            raise JaxirInputError(f"{path} is damaged ({type(err).__name__}), so the settings of the cells in {out} "
                                  f"are unknown: delete {path} to keep those cells if they were computed with these "
                                  f"settings, or use another --out (or delete {out}) to start over") from None
        if not isinstance(stored, dict):
            raise JaxirInputError(f"{path} is not a study record; delete it, or use another --out")
        comparable = {k: stored.get(k) for k in ("levels", "seed", "crop_multiple", "metrics")}
        if comparable != {k: wanted[k] for k in comparable}:
            raise JaxirInputError(f"{out} holds a study with other settings (levels, seed or metrics); "
                                  "use another --out, or delete it to start over")
    atomic.write_json(path, wanted)


def evaluate_cell(gt: np.ndarray, level: Degradation, restorer: Restorer, key: jax.Array) -> tuple[dict, np.ndarray]:
    """Degrade ``gt``, restore, score; returns the metric row (without identity columns) and the output."""
    start = time.perf_counter()
    lq = level(gt[None], key)
    out = restorer.restore(lq, level)
    if out.shape[1:3] != gt.shape[:2]:
        raise JaxirInputError(f"restorer {restorer.name!r} returned {out.shape[1:3]} for a {gt.shape[:2]} image")
    out = to_8bit(out)
    seconds = time.perf_counter() - start
    border = crop_border(level)
    return {**score(out, gt[None], border), "seconds": seconds}, out[0]


def to_8bit(image) -> np.ndarray:
    """An output as the study stores it: rounded to 8 bits, back in [0, 1] float32."""
    return np.asarray(quantize_uint8(image), np.float32) / 255.0


def score(out: np.ndarray, gt: np.ndarray, border: int = 0) -> dict:
    """The study's metrics of an 8-bit output batch against its ground truth: Y-channel PSNR and SSIM with
    ``border`` pixels cropped (BasicSR's convention), NIQE on RGB (first image of the batch)."""
    return {"psnr": float(psnr(out, gt, crop_border=border, y_channel=True)[0]),
            "ssim": float(ssim(out, gt, crop_border=border, y_channel=True)[0]), "niqe": float(niqe(out)[0])}


def plan_cells(config: StudyConfig, restorers: Sequence[Restorer]):
    """The (image index, level, restorer) cells of the sweep, restorers only where they handle the task."""
    return [(i, level, r) for level in config.levels for r in restorers if r.handles(level)
            for i in range(len(config.images))]


def run_study(config: StudyConfig, images: Sequence[ImageRecord], restorers: Sequence[Restorer], out: Path,
              save_images: bool = False, progress: bool = True) -> list[dict]:
    """Run every missing cell, adding to ``out/results.csv``; returns all rows (old and new). Images too small
    for a level are refused before anything is computed (:mod:`jaxir.study.inputs`). A cell is done when its
    row and, with ``save_images``, its image exist: the image is written first, both atomically."""
    screen_images(images, [], config.levels, config.crop_multiple)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, config)
    results_path = out / RESULTS_FILE
    rows = [r for r in read_results(results_path)
            if not save_images or image_path(out, r["level"], r["restorer"], r["image"]).is_file()]
    done = {cell_key(r) for r in rows}
    cells = [c for c in plan_cells(config, restorers)
             if (images[c[0]].name, c[1].label, c[2].name) not in done]
    gts = {}
    writer = ResultsWriter(results_path)
    try:
        for index, level, restorer in tqdm(cells, desc="study", unit="cell", disable=not progress):
            record = images[index]
            if index not in gts:
                gts[index] = crop_to_multiple(record.image, config.crop_multiple)
            gt = gts[index]
            metrics, restored = evaluate_cell(gt, level, restorer, _cell_key(config.seed, level, record.name))
            row = {"image": record.name, "level": level.label, "task": level.task, "scale": float(level.scale),
                   "blur_sigma": float(level.blur_sigma), "noise": float(level.noise),
                   "retention": level.retention, "restorer": restorer.name, "family": restorer.family,
                   "height": gt.shape[0], "width": gt.shape[1], **metrics}
            if save_images:
                save_image(image_path(out, level.label, restorer.name, record.name), restored)
            writer.write(row)
            rows.append(row)
    finally:
        writer.close()
    return rows


def image_path(out: Path, level: str, restorer: str, image: str) -> Path:
    """Where ``save_images`` puts the restored image of a cell."""
    return out / "images" / _slug(level) / restorer / f"{_slug(image)}.png"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text.replace("σ", "sigma"))
