"""Running the sweep: every (image, degradation level, restorer) cell once, resumable.

How one image becomes a metric row: the clean image is cropped (bottom/right) to a multiple of the largest scale,
explicitly, and its size recorded; the cell key ``fold_in(fold_in(key(seed), crc32(level)), crc32(image))``
degrades it (eq. 1: the noise of sample 0 of that key); the restorer, with the settings the study records, is
called with the LQ image, the degradation and its own stream of the cell key, ``fold_in(cell key,
crc32("restore"))``, as sample 0 (so a CLDM's start noise differs per image, level and seed, and never shares a
stream with the degradation's noise); its output is quantised to 8 bits as if saved and scored — PSNR/SSIM on the
Y channel with ``crop_border`` = the scale (the SR literature's convention; 0 for deblurring), NIQE on the RGB
output. A cell's result therefore depends on neither the order nor the subset of cells that run.

Time: a cell's ``seconds`` is degradation + restoration wall time less the compilations and checkpoint loads it
triggered (:class:`jaxir.cost.Meter`); those are summed per restorer and reported apart.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from jaxir import atomic
from jaxir.cost import Meter, Totals
from jaxir.data.images import ImageRecord, crop_to_multiple, save_image
from jaxir.degradations.pipeline import Degradation, study_levels
from jaxir.errors import JaxirInputError
from jaxir.metrics import niqe, psnr, ssim
from jaxir.metrics.color import quantize_uint8
from jaxir.restorers.base import Restorer
from jaxir.study.inputs import crop_border, screen_images
from jaxir.study.results import ResultsWriter, read_results
from jaxir.study.results import cell_key as row_key

RESULTS_FILE = "results.csv"
CONFIG_FILE = "study.json"


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What a study sweeps; stored as ``study.json`` so a resumed run can refuse different settings."""

    images: tuple[str, ...]
    levels: tuple[Degradation, ...] = study_levels()
    restorers: tuple[str, ...] = ("bicubic", "wiener")
    seed: int = 0
    settings: tuple[tuple[str, str], ...] = ()   # (restorer, its settings as JSON), see :func:`restorer_settings`

    @property
    def crop_multiple(self) -> int:
        return math.lcm(*(int(round(d.scale)) for d in self.levels))

    def to_json(self) -> dict:
        return {"images": list(self.images), "levels": [d.to_dict() for d in self.levels],
                "restorers": list(self.restorers), "seed": self.seed, "crop_multiple": self.crop_multiple,
                "metrics": "psnr/ssim: Y channel, crop_border=scale, 8-bit output; niqe: RGB output",
                "settings": {name: json.loads(text) for name, text in self.settings}}


def restorer_settings(restorers: Sequence[Restorer]) -> tuple[tuple[str, str], ...]:
    """The effective settings of ``restorers``, as :attr:`StudyConfig.settings` records them."""
    return tuple((r.name, json.dumps(r.settings_json(), sort_keys=True, ensure_ascii=False)) for r in restorers)


RESTORE_STREAM = zlib.crc32(b"restore")


def cell_key(seed: int, level: Degradation, image: str) -> jax.Array:
    """The key of one cell: ``fold_in(fold_in(key(seed), crc32(level label)), crc32(image name))``."""
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
        if not isinstance(stored, dict) or not isinstance(stored.get("settings", {}), dict):
            raise JaxirInputError(f"{path} is not a study record; delete it, or use another --out")
        comparable = {k: stored.get(k) for k in ("levels", "seed", "crop_multiple", "metrics")}
        changed = [name for name, settings in wanted["settings"].items()
                   if name in stored.get("settings", {}) and stored["settings"][name] != settings]
        if comparable != {k: wanted[k] for k in comparable} or changed:
            what = f"settings of {', '.join(changed)}" if changed else "levels, seed or metrics"
            raise JaxirInputError(f"{out} holds a study with other settings ({what}); "
                                  "use another --out, or delete it to start over")
        wanted["settings"] = {**stored.get("settings", {}), **wanted["settings"]}
    atomic.write_json(path, wanted)


def evaluate_cell(gt: np.ndarray, level: Degradation, restorer: Restorer,
                  key: jax.Array) -> tuple[dict, np.ndarray, Totals]:
    """Degrade ``gt`` with the cell ``key``, restore with the key's restorer stream, score; returns the metric row
    (without identity columns, ``seconds`` net of compilation and loading), the 8-bit output, and the compilations
    and loads the cell triggered."""
    with Meter() as meter:
        lq = level(gt[None], key)
        out = restorer.restore(lq, level, jax.random.fold_in(key, RESTORE_STREAM), [0])
        if out.shape[1:3] != gt.shape[:2]:
            raise JaxirInputError(f"restorer {restorer.name!r} returned {out.shape[1:3]} for a {gt.shape[:2]} image")
        out = to_8bit(out)
    return {**score(out, gt[None], crop_border(level)), "seconds": meter.net_seconds}, out[0], meter.cost


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


@dataclasses.dataclass
class StudyRun:
    """What :func:`run_study` did: every row (old and new), and per restorer the compilations and checkpoint
    loads its new cells triggered (excluded from their ``seconds``), plus the whole run's totals and wall time."""

    rows: list[dict]
    costs: dict[str, Totals]
    totals: Totals
    wall_seconds: float


def run_study(config: StudyConfig, images: Sequence[ImageRecord], restorers: Sequence[Restorer], out: Path,
              save_images: bool = False, progress: bool = True) -> StudyRun:
    """Run every missing cell, adding to ``out/results.csv``. Images too small for a level are refused before
    anything is computed (:mod:`jaxir.study.inputs`). A cell is done when its row and, with ``save_images``, its
    image exist: the image is written first, both atomically."""
    screen_images(images, [], config.levels, config.crop_multiple)
    with Meter() as meter:
        rows, costs = _run_cells(config, images, restorers, out, save_images, progress)
    return StudyRun(rows, costs, meter.cost, meter.wall)


def _run_cells(config, images, restorers, out: Path, save_images: bool, progress: bool):
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, config)
    results_path = out / RESULTS_FILE
    rows = [r for r in read_results(results_path)
            if not save_images or image_path(out, r["level"], r["restorer"], r["image"]).is_file()]
    done = {row_key(r) for r in rows}
    cells = [c for c in plan_cells(config, restorers)
             if (images[c[0]].name, c[1].label, c[2].name) not in done]
    gts = {}
    costs: dict[str, Totals] = {}
    writer = ResultsWriter(results_path)
    try:
        for index, level, restorer in tqdm(cells, desc="study", unit="cell", disable=not progress):
            record = images[index]
            if index not in gts:
                gts[index] = crop_to_multiple(record.image, config.crop_multiple)
            gt = gts[index]
            metrics, restored, cost = evaluate_cell(gt, level, restorer, cell_key(config.seed, level, record.name))
            costs[restorer.name] = costs.get(restorer.name, Totals()).plus(cost)
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
    return rows, costs


def image_path(out: Path, level: str, restorer: str, image: str) -> Path:
    """Where ``save_images`` puts the restored image of a cell."""
    return out / "images" / _slug(level) / restorer / f"{_slug(image)}.png"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text.replace("σ", "sigma"))
