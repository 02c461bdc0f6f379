"""Fig. 9 of the study: the quality of the x0 prediction at every inference step of one run. The restorer's
pipeline returns, besides its output, the decoded x0 prediction of each step, colour-fixed and resized as its output
is (``x0_trajectory`` of :class:`jaxir.pipelines.diffbir.DiffBIR` and :class:`jaxir.pipelines.supir.SUPIRPipeline`);
each is scored like a restoration (8-bit, Y-PSNR/SSIM, NIQE). The run is the restoration cell's own: same key, same
result.

    jaxir experiment fig9 [--models jaxir_cldm] [--levels sr2,sr4,blur2] [--full]
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np

from jaxir.degradations.levels import parse_levels
from jaxir.restorers import registered
from jaxir.restorers.cldm_family import diffbir_pipeline, supir_pipeline
from jaxir.study.cells import RESTORE_STREAM, cell_key, score, to_8bit
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers
from jaxir.study.inputs import crop_border
from jaxir.study.plots import plt, save_figure
from jaxir.study.sweep import METRICS, judge

MODELS, FULL_MODELS = ("jaxir_cldm",), ("diffbir_v2", "diffbir_v2.1", "supir_v0Q", "jaxir_cldm")
SSIM_MARGIN = 0.02


def plan(options: Options) -> Plan:
    usable, unavailable = available_restorers(
        options.models or (FULL_MODELS if options.full else MODELS),
        lambda r: None if r.build in (diffbir_pipeline, supir_pipeline)
        else "its pipeline returns no x0 trajectory (DiffBIR's and SUPIR's do)")
    restorers = registered()
    levels = options.levels or parse_levels("sr2,sr4,blur2,blur8,blur20" if options.full else "sr2,sr4,blur2")
    cells = tuple(Cell("x0_trajectory", model, level, image, options.seed)
                  for model in usable for level, image in options.inputs(levels) if restorers[model].handles(level))
    return Plan(cells, unavailable, ("every step's x0 prediction decoded and scored; the run is the restorer's "
                                     "default sampling, keyed as its restoration cell",))


@functools.lru_cache(maxsize=1)
def _pipeline(model: str):
    """The restorer's pipeline, built once per model (its prompt encodings and schedule tables with it)."""
    restorer = registered()[model]
    return restorer.build(restorer.settings)


def evaluate(cell: Cell, gt: np.ndarray, lq: np.ndarray | None = None) -> dict:
    """Per step: PSNR, SSIM, NIQE of the decoded x0 prediction; and the final output's (``final_*``)."""
    key = cell_key(cell.seed, cell.level, cell.image)
    lq = cell.level(gt[None], key) if lq is None else lq[None]
    final, x0s = _pipeline(cell.model).x0_trajectory(lq, cell.level, jax.random.fold_in(key, RESTORE_STREAM), [0])
    border = crop_border(cell.level)
    steps = [score(to_8bit(x0), gt[None], border) for x0 in x0s]
    return {**{m: [s[m] for s in steps] for m in ("psnr", "ssim", "niqe")},
            **{f"final_{m}": v for m, v in score(to_8bit(final), gt[None], border).items()}}


def summarize(rows: list[dict], out: Path) -> Summary:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["level"]), []).append(row)
    means = {k: {m: np.mean([r[m] for r in g], axis=0) for m in ("psnr", "ssim", "niqe", "final_psnr",
                                                                    "final_ssim", "final_niqe")}
             for k, g in groups.items()}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(15, 4))
    for ax, (metric, name) in zip(axes, METRICS):
        for (model, level), m in means.items():
            line = ax.plot(range(1, len(m[metric]) + 1), m[metric], marker="o", label=f"{model} {level}")
            ax.axhline(m[f"final_{metric}"], color=line[0].get_color(), ls=":", lw=1)
        ax.set_xlabel("sampling step (x0 prediction); dotted: final output")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    save_figure(fig, out / "fig9.png", "quality of the x0 prediction at every step (mean over images)")
    lines = ["| model | level | step | x0 SSIM / PSNR / NIQE |", "|---|---|---|---|"]
    close, parts = {}, []
    for (model, level), m in means.items():
        n = len(m["ssim"])
        lines += [f"| {model} | {level} | {i + 1} | {m['ssim'][i]:.4f} / {m['psnr'][i]:.2f} / {m['niqe'][i]:.2f} |"
                  for i in range(n)]
        lines.append(f"| {model} | {level} | final | {m['final_ssim']:.4f} / {m['final_psnr']:.2f} / "
                     f"{m['final_niqe']:.2f} |")
        early = max(int(np.ceil(n / 4)), 1) - 1
        close[model, level] = abs(m["ssim"][early] - m["final_ssim"]) < SSIM_MARGIN
        parts.append(f"{model} {level}: x0 SSIM at step {early + 1} of {n} {m['ssim'][early]:.4f}, final "
                     f"{m['final_ssim']:.4f}")
    verdict, evidence = judge({"early": sum(close.values()) / len(close)},
                              f"{'; '.join(parts)} (close = within {SSIM_MARGIN})")
    return Summary("\n".join(lines), ("fig9.png",), verdict, evidence)


EXPERIMENT = Experiment(
    "fig9", "quality of the x0 prediction at every inference step",
    "Sampling steps add little: the x0 prediction is within reach of the final output's fidelity after the first "
    "quarter of the steps.", plan, evaluate, summarize)
