"""Table 3 of the study: Alignment at high degradation (eq. 15), ``S(D(Î_x), I_y)`` — the restoration degraded
again with the same degradation and noise, against the input — with SSIM beside it and the LQ row
``S(I_x, I_y)``. The cells are table 1's measurement (:mod:`experiments.table1_alignment`) at harsh levels.

    jaxir experiment table3 [--models …] [--levels sr4,blur20] [--full]
"""

from __future__ import annotations

from experiments.table1_alignment import alignment_plan, alignment_summary, evaluate
from jaxir.study.experiment import Experiment

EXPERIMENT = Experiment(
    "table3", "consistency with the observation at high degradation (eq. 15)",
    "At high degradation CLDM restorations explain their input less well than traditional restorers: degraded "
    "again, they are further from the LQ input (higher S(D(Î_x), I_y)).",
    lambda options: alignment_plan(options, "sr4,blur20", "sr4,blur20",
                                   "S(D(Î_x), I_y): the restoration re-degraded with the cell's key; DINOv2 ViT-B/14 "
                                   "CLS distance, 224² centre crop"),
    evaluate, lambda rows, out: alignment_summary(rows, "s_lq"))
