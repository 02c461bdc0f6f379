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

from jaxir.data.images import ImageRecord, crop_to_multiple, save_image
from jaxir.degradations.pipeline import Degradation, study_levels
from jaxir.errors import JaxirInputError
from jaxir.metrics import niqe, psnr, ssim
from jaxir.metrics.color import quantize_uint8
from jaxir.restorers.base import Restorer
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
    path = out / CONFIG_FILE
    wanted = config.to_json()
    if path.exists():
        stored = json.loads(path.read_text())
        comparable = {k: stored.get(k) for k in ("levels", "seed", "crop_multiple", "metrics")}
        if comparable != {k: wanted[k] for k in comparable}:
            raise JaxirInputError(f"{out} holds a study with other settings (levels, seed or metrics); "
                                  "use another --out, or delete it to start over")
    path.write_text(json.dumps(wanted, indent=2, ensure_ascii=False))


def evaluate_cell(gt: np.ndarray, level: Degradation, restorer: Restorer, key: jax.Array) -> tuple[dict, np.ndarray]:
    """Degrade ``gt``, restore, score; returns the metric row (without identity columns) and the output."""
    start = time.perf_counter()
    lq = level(gt[None], key)
    out = restorer.restore(lq, level)
    if out.shape[1:3] != gt.shape[:2]:
        raise JaxirInputError(f"restorer {restorer.name!r} returned {out.shape[1:3]} for a {gt.shape[:2]} image")
    out = to_8bit(out)
    seconds = time.perf_counter() - start
    border = int(round(level.scale)) if level.scale > 1 else 0
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
    """Run every missing cell, appending to ``out/results.csv``; returns all rows (old and new)."""
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, config)
    results_path = out / RESULTS_FILE
    rows = read_results(results_path)
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
            writer.write(row)
            rows.append(row)
            if save_images:
                save_image(out / "images" / _slug(level.label) / restorer.name / f"{_slug(record.name)}.png", restored)
    finally:
        writer.close()
    return rows


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text.replace("σ", "sigma"))
