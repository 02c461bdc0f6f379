"""Fig. 1 of the study: the perception–distortion plane (Blau & Michaeli 2018): PSNR (distortion) against NIQE
(perceptual quality) per restorer and level, one panel per task — the cells of ``fig2`` (shared in the store).

    jaxir experiment fig1 [--models …] [--levels …] [--full]
"""

from __future__ import annotations

from pathlib import Path

from experiments.fig2_degradation_levels import families, level_means, plan
from jaxir.study.experiment import Experiment, Summary, restore_and_score
from jaxir.study.plots import plt, save_figure
from jaxir.study.sweep import TRADITIONAL, judge


def summarize(rows: list[dict], out: Path) -> Summary:
    data = level_means(rows)
    tasks = sorted({task for task, _ in data})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for (t, model), points in data.items():
            if t != task:
                continue
            line = ax.plot([p["psnr"] for p in points.values()], [p["niqe"] for p in points.values()], marker="o",
                           ls=":", label=model)
            for x, p in points.items():
                symbol = {"sr": "γ", "deblur": "σ"}.get(task)   # none on a captured dataset's panel
                ax.annotate(f"{symbol}={x:g}" if symbol else model, (p["psnr"], p["niqe"]), fontsize=7,
                            color=line[0].get_color(), xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("PSNR (dB) — distortion, better →")
        ax.set_ylabel("NIQE — perceptual quality, better ↓")
        ax.invert_yaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"task: {task}")
    save_figure(fig, out / "fig1.png", "perception–distortion plane (mean over images)")
    family = families(rows)
    better, parts, lines = [], [], ["| task | model | x | PSNR | NIQE |", "|---|---|---|---|---|"]
    for (task, model), points in data.items():
        lines += [f"| {task} | {model} | {x:g} | {p['psnr']:.2f} | {p['niqe']:.2f} |" for x, p in points.items()]
    for task in tasks:
        for cldm in [m for t, m in data if t == task and family[m] == "cldm"]:
            harsh = min(data[task, cldm]) if task == "sr" else max(data[task, cldm])
            rivals = [data[task, m][harsh]["niqe"] for t, m in data
                      if t == task and family[m] in TRADITIONAL and harsh in data[task, m]]
            if rivals:
                better.append(data[task, cldm][harsh]["niqe"] < min(rivals))
                parts.append(f"{cldm} {task} at {harsh:g}: NIQE {data[task, cldm][harsh]['niqe']:.2f} against the "
                             f"best traditional {min(rivals):.2f}")
    if not better:
        return Summary("\n".join(lines), ("fig1.png",), "cannot be tested",
                       "needs a CLDM and a traditional restorer on the same levels")
    return Summary("\n".join(lines), ("fig1.png",), *judge({"perceptually better": sum(better) / len(better)},
                                                          "; ".join(parts)))


EXPERIMENT = Experiment(
    "fig1", "the perception–distortion plane",
    "CLDMs trade distortion for perceptual quality: at the harshest degradation they reach better (lower) NIQE "
    "than traditional restorers.", plan, restore_and_score, summarize)
