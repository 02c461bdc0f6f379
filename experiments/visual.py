"""The study's visual comparisons (Fig. 3, Figs. 10–12): for each image and level, GT | LQ | every restorer, with
a zoomed crop at a fixed place (the same box in every panel) below each, and each panel's PSNR / SSIM / NIQE.
The LQ is shown enlarged to the GT's size with nearest-neighbour sampling (its pixels as they are).

    jaxir experiment visual [--models …] [--levels sr4,blur2] [--photos …]
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from matplotlib import patches
from PIL import Image

from jaxir.degradations.levels import parse_levels
from jaxir.restorers import registered
from jaxir.study.cells import RESTORE_STREAM, cell_key, score, to_8bit
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers
from jaxir.study.inputs import crop_border
from jaxir.study.plots import plt, save_figure

BOX = (0.375, 0.375, 0.25)   # zoom box: top and left as fractions of the height and width, side of the shorter side


def plan(options: Options) -> Plan:
    usable, unavailable = available_restorers(options.models or list(registered()))
    restorers = registered()
    levels = options.levels or parse_levels("sr4,blur2,blur8")
    cells = tuple(Cell("restore+image", model, level, image, options.seed)
                  for level, image in options.inputs(levels) for model in usable if restorers[model].handles(level))
    return Plan(cells, unavailable, (f"zoom box: top {BOX[0]:.0%}, left {BOX[1]:.0%} of the image, side "
                                     f"{BOX[2]:.0%} of its shorter side",))


def evaluate(cell: Cell, gt: np.ndarray, lq: np.ndarray | None = None) -> dict:
    """The restoration cell with its images: ground truth, LQ (nearest-enlarged to the GT's size), output. ``lq``:
    the dataset's LQ of a captured level."""
    key = cell_key(cell.seed, cell.level, cell.image)
    lq = cell.level(gt[None], key) if lq is None else lq[None]
    out = to_8bit(registered()[cell.model].restore(lq, cell.level, jax.random.fold_in(key, RESTORE_STREAM), [0]))
    lq8 = to_8bit(lq)[0]
    rows = np.minimum((np.arange(gt.shape[0]) * lq8.shape[0]) // gt.shape[0], lq8.shape[0] - 1)
    cols = np.minimum((np.arange(gt.shape[1]) * lq8.shape[1]) // gt.shape[1], lq8.shape[1] - 1)
    return {**score(out, gt[None], crop_border(cell.level)),
            "images": {"ground_truth": gt, "lq": lq8[rows][:, cols], "restored": out[0]}}


def _read(root: Path, path: str) -> np.ndarray:
    return np.asarray(Image.open(root / path).convert("RGB"), np.float32) / 255.0


def summarize(rows: list[dict], out: Path) -> Summary:
    root = out.parent
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["image"], row["level"]), []).append(row)
    plots = []
    for (image, level), members in groups.items():
        first = members[0]
        panels = [("ground truth", _read(root, first["images"]["ground_truth"]), ""),
                  ("LQ", _read(root, first["images"]["lq"]), "")]
        panels += [(r["model"], _read(root, r["images"]["restored"]),
                    f"{r['psnr']:.2f} dB / {r['ssim']:.3f} / NIQE {r['niqe']:.2f}") for r in members]
        h, w = panels[0][1].shape[:2]
        side = max(int(min(h, w) * BOX[2]), 8)
        top, left = int(h * BOX[0]), int(w * BOX[1])
        fig, axes = plt.subplots(2, len(panels), figsize=(2.6 * len(panels), 5.6), squeeze=False)
        for col, (title, picture, caption) in enumerate(panels):
            axes[0, col].imshow(picture)
            axes[0, col].add_patch(patches.Rectangle((left, top), side, side, fill=False, color="yellow", lw=1))
            axes[0, col].set_title(title, fontsize=9)
            axes[1, col].imshow(picture[top:top + side, left:left + side], interpolation="nearest")
            axes[1, col].set_xlabel(caption, fontsize=7)
            for row_axes in (axes[0, col], axes[1, col]):
                row_axes.set_xticks([])
                row_axes.set_yticks([])
        name = "visual_" + "".join(c if c.isascii() and c.isalnum() else "_"
                                   for c in f"{image}_{level}".replace("σ", "sigma")) + ".png"
        plots.append(save_figure(fig, out / name, f"{image}, {level}"))
    table = ["| image | level | model | PSNR | SSIM | NIQE |", "|---|---|---|---|---|---|"]
    table += [f"| {r['image']} | {r['level']} | {r['model']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['niqe']:.2f} |"
              for r in rows]
    return Summary("\n".join(table), tuple(plots), "not a claim",
                   "pictures for the eye: GT, LQ and every restorer, with zoomed crops")


EXPERIMENT = Experiment(
    "visual", "visual comparison: GT, LQ and every restorer with zoomed crops",
    "CLDM restorations look sharper but invent detail that is not in the ground truth; traditional restorers stay "
    "faithful but smoother (judged by eye).", plan, evaluate, summarize)
