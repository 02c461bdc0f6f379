"""The runner that every experiment shares: cells keyed by their full configuration, finished cells in the
:class:`~jaxir.study.store.CellStore`, outputs rendered as ``results.csv`` + PNG plots + ``report.md``.

An :class:`Experiment` is a plan (options → the cells to compute, and the models that cannot run with the reason
and the command that makes them available), an evaluation (one cell → its result), and a summary (the finished
rows → a markdown table, plots and a verdict on the study's claim). :func:`run_experiment` computes the cells that
the store does not hold yet — a rerun after an interruption computes only the missing ones; a second process never
duplicates one — then exports and reports from the store alone.

An evaluation may return images (``result["images"]``, e.g. restorations for a visual comparison): they are
written as PNGs under ``root/images/KEY/`` before the cell's row, and the row holds their paths.

A cell is ``(model, settings, degradation level, image, seed, point)``; ``point`` holds whatever else locates it in
the analysis (e.g. the step count of a sweep's x axis when it is not a restorer setting). Its key is the SHA-256 of
that configuration with the experiment's name and the image's pixel digest, so a changed image, setting or seed is
a new cell. Restoration cells use the study's keys (:func:`jaxir.study.cells.cell_key`): the same seed, level and
image give the same degradation noise and the same diffusion noise in every experiment and in ``jaxir study``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxir import atomic, parallel
from jaxir.cost import Meter, Totals
from jaxir.data.images import ImageRecord, crop_to_multiple, save_image
from jaxir.degradations.captured import Captured
from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError
from jaxir.restorers import registered
from jaxir.study.cells import RESTORE_STREAM, cell_key, evaluate_cell, score, to_8bit
from jaxir.study.inputs import crop_border
from jaxir.study.store import STORE_FILE, CellStore, export_csv

CROP_MULTIPLE = 4   # the study's: lcm of its scales (×2, ×4), so every level degrades the same ground truth
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
RESULTS_FILE = "results.csv"
IMAGES_DIR = "images"


def image_digest(image: np.ndarray) -> str:
    """The first 16 hex digits of the SHA-256 of an image's float32 pixels and shape."""
    array = np.ascontiguousarray(image, np.float32)
    return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()[:16]


def effective_settings(model: str, overrides: tuple[tuple[str, Any], ...]) -> str:
    """The whole settings of restorer ``model`` with ``overrides`` applied, as sorted JSON; the overrides
    themselves for a model that is not a registered restorer. Cached: every cell of a sweep asks."""
    return _effective_settings(model, tuple(overrides), tuple(registered()))


@functools.lru_cache(maxsize=4096)
def _effective_settings(model: str, overrides: tuple, registry: tuple) -> str:
    restorers = registered()
    settings = restorers[model].configure(**dict(overrides)).settings_json() if model in restorers else dict(overrides)
    return json.dumps(settings, sort_keys=True, default=str)


def static_signature(model: str, overrides: tuple[tuple[str, Any], ...]) -> str:
    """What of restorer ``model``'s settings with ``overrides`` is compiled in (:meth:`Restorer.static_settings`):
    restoration cells with equal signatures (and level and image size) can run as one batch."""
    return _static_signature(model, tuple(overrides), tuple(registered()))


@functools.lru_cache(maxsize=4096)
def _static_signature(model: str, overrides: tuple, registry: tuple) -> str:
    return repr(registered()[model].configure(**dict(overrides)).static_settings())


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work (module docstring). ``measure``: what is computed (``restore`` for a scored restoration;
    experiments with other measurements name theirs); ``settings``: the restorer settings it overrides, sorted
    pairs; ``point``: further coordinates for the tables (they do not change the result, so not the key)."""

    measure: str
    model: str
    level: Degradation | None
    image: str
    seed: int
    settings: tuple[tuple[str, Any], ...] = ()
    point: tuple[tuple[str, Any], ...] = ()

    def identity(self, digest: str) -> dict:
        """Everything the result depends on (the key's input): the model's effective settings, not the overrides,
        so cells that two experiments reach by different overrides are one cell."""
        return {"measure": self.measure, "model": self.model, "image": self.image, "image_digest": digest,
                "level": self.level.to_dict() if self.level else None, "seed": self.seed,
                "settings": effective_settings(self.model, self.settings)}

    def config(self, digest: str) -> dict:
        """The columns a result row carries: the identity's short form, the overrides and the point."""
        level = self.level
        return {"measure": self.measure, "model": self.model, "image": self.image, "image_digest": digest,
                "level": level.label if level else "", "task": level.task if level else "",
                "gamma": level.retention if level else None, "seed": self.seed, "overrides": dict(self.settings),
                **dict(self.point)}

    def key(self, digest: str) -> str:
        text = json.dumps(self.identity(digest), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Options:
    """What the command line chooses: models (restorer names; None = the experiment's default), images, levels
    (None = the experiment's default), the seed, ``full`` (the study's own setting instead of the offline
    default), and ``batch``: how many restoration cells that differ only in their key (seed, image of the same
    size) or in traced settings run as one batch through one compiled program (:func:`restore_and_score_batch`);
    ``pairs``: (GT, LQ) pairs of captured datasets (GoPro), restored at their own level beside the synthetic ones
    by the experiments that compare restorers per level (:meth:`inputs`)."""

    images: tuple[ImageRecord, ...]
    models: tuple[str, ...] | None = None
    levels: tuple[Degradation, ...] | None = None
    seed: int = 0
    full: bool = False
    batch: int = 1
    pairs: tuple[CapturedPair, ...] = ()

    def inputs(self, levels: Sequence[Degradation]) -> list[tuple[Degradation, str]]:
        """(level, image name) of the restorations an experiment over ``levels`` runs: every synthetic level on
        every image, then each captured pair at its own level (a captured level is given by its dataset)."""
        return ([(level, image.name) for level in levels for image in self.images]
                + [(pair.level, pair.gt.name) for pair in self.pairs])

    def records(self) -> tuple[ImageRecord, ...]:
        """Every clean image the cells may name: the images, then the ground truths of the pairs."""
        return self.images + tuple(pair.gt for pair in self.pairs)

    def captured(self) -> dict[tuple[str, Degradation], np.ndarray]:
        """{(GT name, captured level): LQ image} of the pairs."""
        return {(pair.gt.name, pair.level): pair.lq.image for pair in self.pairs}


@dataclasses.dataclass(frozen=True)
class CapturedPair:
    """A (GT, LQ) pair of a dataset whose degradation happened in the camera (:class:`Captured`, e.g. GoPro)."""

    level: Captured
    gt: ImageRecord
    lq: ImageRecord


@dataclasses.dataclass(frozen=True)
class Plan:
    cells: tuple[Cell, ...]
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)   # model → reason / how to get it
    notes: tuple[str, ...] = ()                                              # what the report should state


@dataclasses.dataclass(frozen=True)
class Summary:
    """What an experiment's rows show: a markdown table, plot files (relative to its folder), the verdict
    ("holds", "does not hold", "partly holds", "cannot be tested") and the numbers behind it in one sentence."""

    table: str
    plots: tuple[str, ...]
    verdict: str
    evidence: str


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    claim: str
    plan: Callable[[Options], Plan]
    evaluate: Callable[[Cell, np.ndarray], dict]
    summarize: Callable[[list[dict], Path], Summary]


@dataclasses.dataclass(frozen=True)
class ExperimentRun:
    experiment: Experiment
    rows: list[dict]
    computed: int
    compilations: int
    compile_seconds: float
    wall_seconds: float
    summary: Summary
    report: Path


def ground_truth(record: ImageRecord, level: Degradation | None, multiple: int = CROP_MULTIPLE) -> np.ndarray:
    """The clean image a cell scores against: cropped (bottom/right) to a multiple of ``multiple`` (the study's
    scales) and of the level's scale."""
    return crop_to_multiple(record.image, math.lcm(multiple, int(round(level.scale))) if level else multiple)


def restore_and_score(cell: Cell, gt: np.ndarray, lq: np.ndarray | None = None) -> dict:
    """A restoration cell as the study computes it (:func:`jaxir.study.cells.evaluate_cell`): the registered
    restorer ``cell.model`` with ``cell.settings``, the study's cell key, 8-bit output, Y-PSNR/SSIM and NIQE;
    ``seconds`` net of compilation and loading. ``lq``: the dataset's LQ image of a captured level."""
    restorer = registered()[cell.model].configure(**dict(cell.settings))
    metrics, _, _ = evaluate_cell(gt, cell.level, restorer, cell_key(cell.seed, cell.level, cell.image), lq)
    return metrics


def restore_and_score_batch(cells: Sequence[Cell], gts: Sequence[np.ndarray], batch: int,
                            mesh: jax.sharding.Mesh | None = None,
                            lqs: Sequence[np.ndarray] | None = None) -> list[dict]:
    """Restoration cells of one restorer, static settings (:func:`static_signature`), level and image size as one
    batch: each sample gets its own cell key (:func:`jaxir.keys.per_sample_keys` takes one key per sample) and its
    own cell's settings (:meth:`Restorer.restore_per_sample`: traced values such as a start timestep or a scale
    differ per sample in one compiled program), so sample b draws exactly what its cell draws alone and the result
    equals :func:`restore_and_score`'s up to float rounding (the same noise; the arithmetic of a batched program may
    round differently). The batch is padded to ``batch`` samples (the last cell repeated, so one program serves
    every chunk) and to a multiple of the ``mesh`` size, over whose ``data`` axis it is sharded. ``lqs``: the
    dataset's LQ images of a captured level. ``seconds``: the batch's net time divided by its cells."""
    first = cells[0]
    restorers = registered()
    restorer = restorers[first.model].configure(**dict(first.settings))
    size = parallel.padded_size(batch, mesh) if mesh is not None else batch
    padded = list(range(len(cells))) + [len(cells) - 1] * (size - len(cells))
    keys = jnp.stack([cell_key(cells[i].seed, first.level, cells[i].image) for i in padded])
    ids = np.zeros(size, np.int32)
    clean = np.stack([gts[i] for i in padded])
    with Meter() as meter:
        lq = first.level(clean, keys, ids) if lqs is None else np.stack([lqs[i] for i in padded])
        if mesh is not None:
            lq = parallel.shard_batch(lq, mesh)
        restore_keys = jax.vmap(lambda k: jax.random.fold_in(k, RESTORE_STREAM))(keys)
        settings = [restorers[first.model].configure(**dict(cells[i].settings)).settings for i in padded]
        out = to_8bit(parallel.gather(restorer.restore_per_sample(lq, first.level, restore_keys, ids, settings)))
    if out.shape[1:3] != clean.shape[1:3]:
        raise JaxirInputError(f"restorer {restorer.name!r} returned {out.shape[1:3]} for {clean.shape[1:3]} images")
    seconds = meter.net_seconds / len(cells)
    return [{**score(out[i:i + 1], gts[i][None], crop_border(first.level)), "seconds": seconds}
            for i in range(len(cells))]


def available_restorers(names: Sequence[str], needs: Callable[[Any], str | None] = lambda restorer: None
                        ) -> tuple[list[str], dict[str, str]]:
    """(the usable ones among ``names``, {name: why not and how to get it} for the rest): unknown names, restorers
    whose weights are missing, and those ``needs`` (restorer → None or the reason this experiment cannot use it)
    refuses."""
    restorers = registered()
    usable, unavailable = [], {}
    for name in names:
        reason = (f"unknown restorer; registered: {', '.join(restorers)}" if name not in restorers
                  else restorers[name].unavailable_reason() or needs(restorers[name]))
        if reason:
            unavailable[name] = reason
        else:
            usable.append(name)
    return usable, unavailable


def work_groups(todo: Sequence[tuple[str, Cell]], gts: dict, batch: int) -> list[list[tuple[str, Cell]]]:
    """The cells to compute, in plan order, as groups: with ``batch`` > 1, restoration cells of the same restorer,
    static settings (:func:`static_signature`), level and image size in chunks of up to ``batch``; every other
    cell alone."""
    if batch <= 1:
        return [[item] for item in todo]
    groups: dict[tuple, list] = {}
    for key, cell in todo:
        if cell.measure == "restore":
            static = static_signature(cell.model, cell.settings)
            group = ("restore", cell.model, static, cell.level, gts[cell.image, cell.level].shape)
        else:
            group = ("alone", key)
        groups.setdefault(group, []).append((key, cell))
    return [members[i:i + batch] for members in groups.values() for i in range(0, len(members), batch)]


def default_image_path(cell: Cell, key: str, name: str) -> Path:
    """Where a cell's image ``name`` goes, relative to the store's folder: ``images/KEY/NAME.png``."""
    return Path(IMAGES_DIR) / key / f"{name}.png"


def save_images(root: Path, result: dict, paths: Callable[[str], Path]) -> dict:
    """A result's ``images`` ({name: HWC array in [0, 1]}) written as 8-bit PNGs at ``root / paths(name)``
    (atomically, before the cell's row), replaced by those paths (relative to ``root``, POSIX)."""
    images = result.pop("images", None)
    if not images:
        return result
    written = {}
    for name, image in images.items():
        save_image(root / paths(name), np.asarray(image))
        written[name] = paths(name).as_posix()
    return {**result, "images": written}


@dataclasses.dataclass
class CellsRun:
    """What :func:`compute_cells` did: the rows of every planned cell that is finished (stored earlier or now), in
    plan order; how many it computed; per model the compilations and checkpoint loads its new cells triggered;
    the run's totals and wall time."""

    rows: list[dict]
    computed: int
    costs: dict[str, Totals]
    totals: Totals
    wall: float


def _has_images(root: Path, row: dict) -> bool:
    return all((root / path).is_file() for path in row.get("images", {}).values())


def compute_cells(cells: Sequence[Cell], evaluate: Callable[..., dict],
                  images: Sequence[ImageRecord], root: Path, *, batch: int = 1, progress: bool = True,
                  desc: str = "cells", crop_multiple: int = CROP_MULTIPLE,
                  image_path: Callable[[Cell, str, str], Path] = default_image_path,
                  after_cell: Callable[[list[dict]], None] | None = None,
                  captured: dict[tuple[str, Degradation], np.ndarray] | None = None) -> CellsRun:
    """The runner every experiment and ``jaxir study`` share: compute the cells of ``cells`` that the store at
    ``root/cells.sqlite`` does not hold (a stored cell whose image files are gone counts as not done, and is
    replaced), in plan order, ``batch`` restoration cells at a time (:func:`work_groups`); ``after_cell`` gets the
    rows finished so far (plan order) after each stored group, e.g. to export a table that is always current.
    ``evaluate(cell, gt)`` computes a cell; a cell at a captured level gets ``evaluate(cell, gt, lq)`` with the LQ
    of ``captured[(image, level)]`` (cropped as its GT), and its key covers both images."""
    records = {r.name: r for r in images}
    captured = captured or {}
    gts, lqs, digests, keys = {}, {}, {}, []
    for cell in cells:
        where = cell.image, cell.level
        if where not in gts:
            gts[where] = gt = ground_truth(records[cell.image], cell.level, crop_multiple)
            if where in captured:
                lqs[where] = lq = captured[where][:gt.shape[0], :gt.shape[1]]
                digests[where] = image_digest(np.concatenate([gt, lq]))
            else:
                digests[where] = image_digest(gt)
        keys.append(cell.key(digests[where]))
    mesh = parallel.data_mesh() if batch > 1 and jax.device_count() > 1 else None
    costs: dict[str, Totals] = {}
    config = [cell.config(digests[cell.image, cell.level]) for cell in cells]
    with CellStore(root / STORE_FILE) as store, Meter() as meter:
        stored = {row["key"]: row for row in store.rows(keys)}
        done = {k for k, row in stored.items() if _has_images(root, row)}
        columns_of = dict(zip(keys, config))
        finished = {key: {**stored[key], **columns} for key, columns in columns_of.items() if key in done}
        todo = list({key: cell for cell, key in zip(cells, keys) if key not in done}.items())
        bar = tqdm(total=len(todo), desc=desc, unit="cell", disable=not progress)
        for group in work_groups(todo, gts, batch):
            group_cells = [cell for _, cell in group]
            with Meter() as cost:
                where = [(c.image, c.level) for c in group_cells]
                if len(group) == 1:
                    results = [evaluate(group_cells[0], gts[where[0]], *([lqs[where[0]]] if where[0] in lqs else []))]
                else:
                    results = restore_and_score_batch(group_cells, [gts[w] for w in where], batch, mesh,
                                                      [lqs[w] for w in where] if where[0] in lqs else None)
                for (key, cell), result in zip(group, results):
                    result = save_images(root, result, lambda name, c=cell, k=key: image_path(c, k, name))
                    columns = columns_of[key]
                    store.put(key, cell.measure, columns, result, replace=key in stored)
                    finished[key] = {"key": key, **columns, **result}
            model = group_cells[0].model
            costs[model] = costs.get(model, Totals()).plus(cost.cost)
            bar.update(len(group))
            if after_cell:
                after_cell([finished[k] for k in dict.fromkeys(keys) if k in finished])
        bar.close()
    # a cell shared with another experiment carries that one's overrides and point: this plan's are used
    rows = [{**finished[key], **columns} for key, columns in zip(keys, config) if key in finished]
    return CellsRun(rows, len(todo), costs, meter.cost, meter.wall)


def run_experiment(experiment: Experiment, options: Options, root: Path, progress: bool = True) -> ExperimentRun:
    """Compute the missing cells of ``experiment`` into the store under ``root`` (:func:`compute_cells`) and write
    its folder ``root/NAME`` (results.csv, plots, summary.json, report.md)."""
    plan = experiment.plan(options)
    out = root / experiment.name
    out.mkdir(parents=True, exist_ok=True)
    done = compute_cells(plan.cells, experiment.evaluate, options.records(), root, batch=options.batch,
                         progress=progress, desc=experiment.name, captured=options.captured())
    rows = done.rows
    export_csv(rows, out / RESULTS_FILE)
    reasons = "; ".join(dict.fromkeys(plan.unavailable.values())) or "no cell to compute"
    summary = experiment.summarize(rows, out) if rows else Summary("", (), "cannot be tested",
                                                                      f"nothing could run: {reasons}")
    run = ExperimentRun(experiment, rows, done.computed, done.totals.compilations, done.totals.compile_seconds,
                        done.wall, summary, out / REPORT_FILE)
    atomic.write_json(out / SUMMARY_FILE, {
        "name": experiment.name, "title": experiment.title, "claim": experiment.claim, "verdict": summary.verdict,
        "evidence": summary.evidence, "plots": list(summary.plots), "cells": len(rows), "computed": done.computed,
        "compilations": run.compilations, "compile_seconds": round(run.compile_seconds, 2),
        "wall_seconds": round(run.wall_seconds, 2), "unavailable": plan.unavailable, "notes": list(plan.notes)})
    atomic.write_text(out / REPORT_FILE, experiment_report(run, plan))
    return run


def experiment_report(run: ExperimentRun, plan: Plan) -> str:
    e, s = run.experiment, run.summary
    lines = [f"# {e.name}: {e.title}", "", f"**The study's claim.** {e.claim}", "",
             f"**Verdict: {s.verdict}.** {s.evidence}", "",
             f"Cells: {len(run.rows)} ({run.computed} computed in this run: {run.compilations} compilations, "
             f"{run.compile_seconds:.1f} s compiling, {run.wall_seconds:.1f} s wall in all).", ""]
    lines += [f"- {note}" for note in plan.notes] + ([""] if plan.notes else [])
    if plan.unavailable:
        lines += ["Unavailable (not run):", ""] + [f"- `{m}`: {why}" for m, why in plan.unavailable.items()] + [""]
    lines += [s.table, ""] + [f"![{p}]({p})" for p in s.plots]
    return "\n".join(lines) + "\n"


def write_overview(root: Path, order: Sequence[str]) -> Path:
    """``root/report.md``: every experiment with a summary under ``root``, in ``order``: its claim, verdict,
    evidence, plots and cost."""
    lines = ["# The study's analyses, rerun", "",
             "Each section: the study's claim, what our run shows, and whether the claim holds with the models "
             "that were available. Details and tables in each experiment's own `report.md`.", ""]
    summaries = [json.loads((root / n / SUMMARY_FILE).read_text(encoding="utf-8")) for n in order
                 if (root / n / SUMMARY_FILE).is_file()]
    unavailable = {m: why for s in summaries for m, why in s.get("unavailable", {}).items()}
    if unavailable:
        lines += ["Models that could not run (each experiment lists those it wanted):", ""]
        lines += [f"- `{m}`: {why}" for m, why in unavailable.items()] + [""]
    for s in summaries:
        name = s["name"]
        lines += [f"## {name}: {s['title']}", "", f"**Claim.** {s['claim']}", "",
                  f"**Verdict: {s['verdict']}.** {s['evidence']}", "",
                  f"{s['cells']} cells; last run computed {s['computed']} ({s['compilations']} compilations, "
                  f"{s['wall_seconds']:.0f} s wall). [report]({name}/{REPORT_FILE})", ""]
        lines += [f"- {note}" for note in s.get("notes", [])]
        if s.get("unavailable"):
            lines.append(f"- unavailable: {', '.join(f'`{m}`' for m in s['unavailable'])}")
        lines += [""] + [f"![{p}]({name}/{p})" for p in s["plots"]] + [""]
    path = root / REPORT_FILE
    atomic.write_text(path, "\n".join(lines))
    return path
