"""Fig. 2 of the study: fidelity and perceptual quality against the degradation level, every restorer on the same
cells (``jaxir study``'s cells: same keys, same numbers). SR levels sit at their retention γ = (1 − β)/α (eq. 12);
blur keeps γ = 1 at every σ, so the deblurring panel's axis is σ.

    jaxir experiment fig2 [--models bicubic,wiener,jaxir_cnn,jaxir_cldm] [--levels …] [--full]
"""

from __future__ import annotations

from pathlib import Path

from jaxir.data.folders import GOPRO_HOW
from jaxir.degradations.captured import Captured
from jaxir.degradations.levels import DEFAULT_LEVELS, parse_levels
from jaxir.restorers import registered
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers, restore_and_score
from jaxir.study.plots import plt, save_figure
from jaxir.study.sweep import TRADITIONAL, METRICS, judge, mean_by


def plan(options: Options) -> Plan:
    """Every restorer (default: all registered) at every level it handles (default: the study's), every image."""
    usable, unavailable = available_restorers(options.models or list(registered()))
    restorers = registered()
    levels = options.levels or parse_levels(DEFAULT_LEVELS)
    cells = tuple(Cell("restore", model, level, image, options.seed, (),
                       (("family", restorers[model].family), ("blur_sigma", float(level.blur_sigma)),
                        ("panel", panel(level))))
                  for level, image in options.inputs(levels) for model in usable if restorers[model].handles(level))
    notes = ["each restorer at its default settings; x axis: γ for SR, blur σ for deblurring; a captured dataset "
             "(--gopro) is a panel of its own"]
    if options.full and not options.pairs:
        notes.append(f"GoPro not run: {GOPRO_HOW}")
    return Plan(cells, unavailable, tuple(notes))


def panel(level) -> str:
    """The plot panel of a level: its task, or the dataset of a captured level (its own real degradation)."""
    return level.label if isinstance(level, Captured) else level.task


def axis(row: dict) -> float:
    if row["panel"] != row["task"]:
        return 0.0
    return row["gamma"] if row["task"] == "sr" else row["blur_sigma"]


def level_means(rows: list[dict]) -> dict:
    """{(panel, model): {x: metrics}} with x = γ (SR), σ (deblurring), 0 for a captured dataset's panel."""
    table = mean_by([{**r, "x": axis(r)} for r in rows], ("panel", "model", "x"))
    out: dict = {}
    for (task, model, x), metrics in table.items():
        out.setdefault((task, model), {})[x] = metrics
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def families(rows: list[dict]) -> dict[str, str]:
    return {r["model"]: r["family"] for r in rows}


def summarize(rows: list[dict], out: Path) -> Summary:
    data = level_means(rows)
    tasks = sorted({task for task, _ in data})
    fig, axes = plt.subplots(len(METRICS), len(tasks), figsize=(5.5 * len(tasks), 3.2 * len(METRICS)),
                             squeeze=False)
    for col, task in enumerate(tasks):
        for row_index, (metric, name) in enumerate(METRICS):
            ax = axes[row_index, col]
            for (t, model), points in data.items():
                if t == task:
                    ax.plot(list(points), [p[metric] for p in points.values()], marker="o", label=model)
            ax.set_xlabel({"sr": "retention γ (eq. 12)", "deblur": "blur σ (γ = 1)"}.get(task, "captured pairs"))
            if task == "deblur":
                ax.set_xscale("log")
            elif task != "sr":
                ax.set_xticks([0.0], ["all pairs"])
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            if row_index == 0:
                ax.set_title(f"task: {task}")
                ax.legend(fontsize=7)
    save_figure(fig, out / "fig2.png", "restoration quality against degradation level (mean over images)")
    lines = ["| task | level (γ or σ) | " + " | ".join(sorted({m for _, m in data})) + " |"]
    models = sorted({m for _, m in data})
    lines.append("|---|---|" + "---|" * len(models))
    for task in tasks:
        xs = sorted({x for (t, _), points in data.items() if t == task for x in points})
        for x in xs:
            cells = [data.get((task, m), {}).get(x) for m in models]
            lines.append(f"| {task} | {x:g} | " + " | ".join(
                f"{c['ssim']:.4f} / {c['psnr']:.2f} / {c['niqe']:.2f}" if c else "–" for c in cells) + " |")
    verdict, evidence = distortion_verdict(data, families(rows))
    return Summary("SSIM / PSNR / NIQE, image means\n\n" + "\n".join(lines), ("fig2.png",), verdict, evidence)


def distortion_verdict(data: dict, family: dict[str, str]) -> tuple[str, str]:
    """Per task and level: the CLDM's SSIM against the best non-CLDM's; holds when it is below at every level and
    the gap at the mildest level is at least the gap at the harshest."""
    below, wider, parts = [], [], []
    for task in sorted({t for t, _ in data}):
        cldms = [m for t, m in data if t == task and family[m] == "cldm"]
        others = [m for t, m in data if t == task and family[m] in TRADITIONAL]
        for cldm in cldms:
            gaps = {}
            for x, metrics in data[task, cldm].items():
                rivals = [data[task, o][x]["ssim"] for o in others if x in data[task, o]]
                if rivals:
                    gaps[x] = max(rivals) - metrics["ssim"]
            if not gaps:
                continue
            below.append(all(g > 0 for g in gaps.values()))
            mild = max(gaps) if task == "sr" else min(gaps)   # mildest: highest γ, smallest σ
            harsh = min(gaps) if task == "sr" else max(gaps)
            wider.append(gaps[mild] >= gaps[harsh])
            parts.append(f"{cldm} {task}: SSIM below the best traditional restorer by "
                         + ", ".join(f"{g:+.4f} at {x:g}" for x, g in gaps.items()))
    if not below:
        return "cannot be tested", "needs a CLDM and a traditional restorer on the same levels"
    return judge({"below": sum(below) / len(below), "widest when mild": sum(wider) / len(wider)}, "; ".join(parts))


EXPERIMENT = Experiment(
    "fig2", "fidelity and perceptual quality against the degradation level",
    "CLDMs show more distortion than traditional restorers (lower SSIM), and the gap is largest at low "
    "degradation.", plan, restore_and_score, summarize)
