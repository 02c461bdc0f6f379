"""Running the study's sweep — every (image, degradation level, restorer) cell once, resumable — on the cell runner
that every experiment shares (:func:`jaxir.study.experiment.compute_cells`); how one image becomes a metric row is
:mod:`jaxir.study.cells`.

The record of finished cells is the store ``out/cells.sqlite`` (one transaction per cell, :mod:`jaxir.study.store`).
``results.csv`` is the table exported from it, rewritten atomically after every cell, so it always holds the
finished cells; a damaged ``results.csv`` is written again from the store — no cell is recomputed for it — and a
file there that is not a results table (someone's own) is refused before anything runs. With ``save_images`` a
cell is done when its row and its image exist (the image is written first).

Clean images are cropped (bottom/right) to a multiple of the largest scale, explicitly, and their size recorded.
Time: a cell's ``seconds`` is degradation + restoration wall time less the compilations and checkpoint loads it
triggered (:class:`jaxir.cost.Meter`); those are summed per restorer and reported apart.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxir import atomic
from jaxir.cost import Totals
from jaxir.data.images import ImageRecord, crop_to_multiple
from jaxir.degradations.pipeline import Degradation, study_levels
from jaxir.errors import JaxirInputError
from jaxir.restorers.base import Restorer
from jaxir.study.cells import cell_key, evaluate_cell
from jaxir.study.experiment import Cell, compute_cells
from jaxir.study.inputs import screen_images
from jaxir.study.results import scan_results, write_results

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
    """Run every missing cell into ``out`` (module docstring). Images too small for a level are refused before
    anything is computed (:mod:`jaxir.study.inputs`)."""
    screen_images(images, [], config.levels, config.crop_multiple)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, config)
    results_path = out / RESULTS_FILE
    _, damaged = scan_results(results_path)   # refuses someone's own file before anything runs
    if damaged:
        print(f"jaxir: {results_path}: {damaged} damaged line(s); the table is written again from the cell store "
              f"({out / 'cells.sqlite'})", file=sys.stderr)
    by_name = {r.name: r for r in restorers}
    sizes = {r.name: crop_to_multiple(r.image, config.crop_multiple).shape[:2] for r in images}

    def evaluate(cell: Cell, gt) -> dict:
        metrics, restored, _ = evaluate_cell(gt, cell.level, by_name[cell.model],
                                             cell_key(cell.seed, cell.level, cell.image))
        return {**metrics, "images": {"restored": restored}} if save_images else metrics

    def path(cell: Cell, key: str, name: str) -> Path:
        return image_path(Path(), cell.level.label, cell.model, cell.image)

    cells = [Cell("restore+image" if save_images else "restore", restorer.name, level, images[index].name,
                  config.seed, restorer.overrides(),
                  (("scale", float(level.scale)), ("blur_sigma", float(level.blur_sigma)),
                   ("noise", float(level.noise)), ("family", restorer.family),
                   ("height", sizes[images[index].name][0]), ("width", sizes[images[index].name][1])))
             for index, level, restorer in plan_cells(config, restorers)]
    export = lambda rows: write_results(results_path, [study_row(r) for r in rows])  # noqa: E731
    done = compute_cells(cells, evaluate, images, out, progress=progress, desc="study",
                         crop_multiple=config.crop_multiple, image_path=path, after_cell=export)
    rows = [study_row(r) for r in done.rows]
    write_results(results_path, rows)
    return StudyRun(rows, done.costs, done.totals, done.wall)


def study_row(row: dict) -> dict:
    """A runner row as a row of the study's table (:data:`jaxir.study.results.COLUMNS`)."""
    return {"image": row["image"], "level": row["level"], "task": row["task"], "scale": row["scale"],
            "blur_sigma": row["blur_sigma"], "noise": row["noise"], "retention": row["gamma"],
            "restorer": row["model"], "family": row["family"], "height": row["height"], "width": row["width"],
            "psnr": row["psnr"], "ssim": row["ssim"], "niqe": row["niqe"], "seconds": row["seconds"]}


def image_path(out: Path, level: str, restorer: str, image: str) -> Path:
    """Where ``save_images`` puts the restored image of a cell."""
    return out / "images" / _slug(level) / restorer / f"{_slug(image)}.png"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text.replace("σ", "sigma"))
