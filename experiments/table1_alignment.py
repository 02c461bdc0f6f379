"""Table 1 of the study: semantic Alignment at low degradation (eqs. 13–14), ``S(I_x, Î_x)`` — DINOv2 distance
between the clean image and the restoration — with SSIM beside it and the LQ input itself as a row
(``S(I_x, I_y)``). Table 3 (:mod:`experiments.table3_alignment`) is the high-degradation form.

    jaxir experiment table1 [--models …] [--levels sr2,blur1] [--full]

Needs converted DINOv2 weights (``jaxir.metrics.alignment.check`` says how); without them the experiment is listed
as not testable, with that command.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxir.degradations.levels import parse_levels
from jaxir.metrics import alignment as A
from jaxir.restorers import registered
from jaxir.study.cells import RESTORE_STREAM, cell_key, score, to_8bit
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers
from jaxir.study.inputs import crop_border
from jaxir.study.sweep import TRADITIONAL, judge, mean_by

LQ = "LQ input"
MEASURE = f"alignment:{A.DEFAULT_PRESET}"


@functools.lru_cache(maxsize=1)
def _model():
    return A.load_alignment_model()


def alignment_plan(options: Options, levels: str, full_levels: str, note: str) -> Plan:
    reason = A.check()
    names = options.models or list(registered())
    if reason:
        return Plan((), {name: reason for name in names}, (reason,))
    usable, unavailable = available_restorers(names)
    restorers = registered()
    chosen = options.levels or parse_levels(full_levels if options.full else levels)
    cells = [Cell(MEASURE, LQ, level, image.name, options.seed, (), (("family", "input"),))
             for level in chosen for image in options.images]
    cells += [Cell(MEASURE, model, level, image.name, options.seed, (), (("family", restorers[model].family),))
              for level in chosen for model in usable if restorers[model].handles(level) for image in options.images]
    return Plan(tuple(cells), unavailable, (note,))


def evaluate(cell: Cell, gt: np.ndarray) -> dict:
    """S against the ground truth (eq. 14) and against the input after re-degradation with the cell's own key
    (eq. 15), and SSIM/PSNR/NIQE; the LQ row has S(I_x, I_y) only."""
    key = cell_key(cell.seed, cell.level, cell.image)
    lq = cell.level(gt[None], key)
    model = _model()
    if cell.model == LQ:
        return {"s_gt": float(A.alignment(model, gt[None], lq)[0])}
    restorer = registered()[cell.model]
    out = to_8bit(restorer.restore(lq, cell.level, jax.random.fold_in(key, RESTORE_STREAM), [0]))
    return {"s_gt": float(A.alignment_low_degradation(model, gt[None], out)[0]),
            "s_lq": float(A.alignment_high_degradation(model, out, lq, cell.level, key)[0]),
            **score(out, gt[None], crop_border(cell.level))}


def alignment_summary(rows: list[dict], metric: str) -> Summary:
    """Per level, S (``metric``: ``s_gt`` eq. 14, ``s_lq`` eq. 15) and SSIM per model; the claim is met at a level
    when every CLDM's S is above the best (lowest) traditional restorer's."""
    metrics = [m for m in (metric, "ssim") if all(m in r for r in rows if r["model"] != LQ)]
    table = mean_by([r for r in rows if r["model"] != LQ], ("level", "model"), metrics)
    lq = mean_by([r for r in rows if r["model"] == LQ], ("level",), ("s_gt",))
    family = {r["model"]: r["family"] for r in rows}
    lines = [f"| level | model | S ({metric}) | SSIM |", "|---|---|---|---|"]
    for (level,), v in lq.items():
        lines.append(f"| {level} | {LQ} | S(I_x, I_y) = {v['s_gt']:.4f} | – |")
    met, parts = [], []
    for (level, model), v in sorted(table.items()):
        lines.append(f"| {level} | {model} | {v[metric]:.4f} | {v['ssim']:.4f} |")
    for level in sorted({lv for lv, _ in table}):
        others = [v[metric] for (lv, m), v in table.items() if lv == level and family[m] in TRADITIONAL]
        for (lv, m), v in table.items():
            if lv == level and family[m] == "cldm" and others:
                met.append(v[metric] > min(others))
                parts.append(f"{m} {level}: S {v[metric]:.4f} against the best traditional {min(others):.4f}")
    if not met:
        return Summary("\n".join(lines), (), "cannot be tested",
                       "needs a CLDM and a traditional restorer on the same level")
    return Summary("\n".join(lines), (), *judge({"higher": sum(met) / len(met)}, "; ".join(parts)))


EXPERIMENT = Experiment(
    "table1", "semantic alignment with the ground truth at low degradation (eq. 14)",
    "At low degradation CLDMs deviate semantically from the ground truth more than traditional restorers: their "
    "Alignment distance S(I_x, Î_x) is higher.",
    lambda options: alignment_plan(options, "sr2,blur1", "sr2,blur1",
                                   "S(I_x, Î_x): DINOv2 ViT-B/14 CLS distance, 224² centre crop"),
    evaluate, lambda rows, out: alignment_summary(rows, "s_gt"))
